//! The demo path: a Library, two workers, typed calls, clean exit.

mod support;

use std::time::Duration;

#[test]
fn two_workers_call_the_library_and_the_cluster_exits_zero() {
    let run = support::run(&["demo", "--workers", "2"], &[], Duration::from_secs(20));
    run.assert_success();
    let lines = run.lines("RESULT demo");
    assert_eq!(lines.len(), 2, "one line per worker:\n{}", run.stdout);
    let mut ids: Vec<&str> = lines
        .iter()
        .filter_map(|l| support::field(l, "worker"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["0", "1"]);
    for line in &lines {
        assert_eq!(support::field(line, "name"), Some("\"get"), "{line}");
        assert!(line.contains("name=\"get name\""), "{line}");
        assert_eq!(support::field(line, "sum"), Some("42"), "{line}");
    }
    // The master logs the start order: library ready before any worker starts.
    let lib_ready = run
        .stderr
        .find("library ready")
        .expect("library ready logged");
    let worker_started = run
        .stderr
        .find("started the worker")
        .expect("worker start logged");
    assert!(
        lib_ready < worker_started,
        "workers started before the library was ready:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("cluster ready"), "{}", run.stderr);
    // The private runtime dir is gone once the master exited.
    let dir = run
        .stderr
        .split("runtime_dir=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("runtime dir logged");
    let dir = dir.trim_end_matches(|c: char| !c.is_alphanumeric());
    assert!(dir.contains("dispatch-"), "{dir}");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was left behind");
    println!("demo cluster ran in {:?}", run.elapsed);
}
