//! Many calls at once on one connection, and one service instance shared by every worker.

mod support;

use std::collections::HashSet;
use std::time::Duration;

#[test]
fn a_thousand_concurrent_calls_per_worker_are_all_answered_correctly() {
    let run = support::run(
        &["concurrent", "--workers", "2", "--count", "1000"],
        &[],
        Duration::from_secs(30),
    );
    run.assert_success();
    let lines = run.lines("RESULT concurrent");
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for line in lines {
        assert_eq!(support::field(line, "ok"), Some("1000"), "{line}");
        assert_eq!(support::field(line, "bad"), Some("0"), "{line}");
    }
}

#[test]
fn every_worker_sees_one_shared_instance() {
    let (workers, count) = (3_u64, 200_u64);
    let run = support::run(
        &["state", "--workers", "3", "--count", "200"],
        &[],
        Duration::from_secs(30),
    );
    run.assert_success();
    let mut all = Vec::new();
    for line in run.lines("RESULT state") {
        let values = support::field(line, "values").expect("values");
        all.extend(values.split(',').map(|v| v.parse::<u64>().expect("number")));
    }
    // One counter: the values handed out across all workers are exactly 1..=workers*count,
    // each once. N separate instances would hand out duplicates.
    let total = workers * count;
    assert_eq!(all.len() as u64, total);
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        total,
        "duplicates: more than one instance?"
    );
    assert_eq!(distinct.iter().max(), Some(&total));
}
