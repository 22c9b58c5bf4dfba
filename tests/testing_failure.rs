//! `dispatch::testing` (issue 16): a worker whose code fails makes `testing::run` return the
//! error, so the test that ran the cluster fails; and nothing is left behind.

use dispatch::{Cluster, RestartPolicy, Worker};
use std::time::{Duration, Instant};

#[test]
fn a_failing_worker_fails_the_test_with_its_error() {
    let started = Instant::now();
    let result = dispatch::testing::run(
        Cluster::new()
            .workers(2)
            .restart_policy(RestartPolicy::never())
            .grace_period(Duration::from_secs(2)),
        |worker: Worker| async move {
            if worker.id() == 1 {
                return Err(std::io::Error::other("worker 1 found a wrong answer"));
            }
            Ok(())
        },
    );
    println!(
        "measured: the failing cluster returned in {:?}: {result:?}",
        started.elapsed()
    );
    let err = result.expect_err("a failing worker must fail the cluster");
    assert!(err.to_string().contains("worker 1"), "{err}");
    // Nothing left: no child of this process, no runtime dir of its master.
    let me = std::process::id();
    let prefix = format!("dispatch-{me}-");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "runtime dirs left: {left:?}");
    let children: Vec<_> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .is_some_and(|ppid| ppid == me.to_string())
        })
        .collect();
    assert!(children.is_empty(), "children left: {children:?}");
}
