//! Crashed workers are restarted with backoff; a crash loop stops the cluster.

mod support;

use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn a_crashed_worker_is_restarted_and_the_cluster_keeps_running() {
    let marker = support::TempPath::new("dispatch-crash-once");
    let marker_str = marker.as_str();
    let cluster = support::Cluster::start(
        &["flaky", "--workers", "2", "--crash-after-ms", "200"],
        &[("FIXTURE_CRASH_ONCE", &marker_str)],
    );
    cluster.await_stdout("RESULT flaky_restarted", 1, Duration::from_secs(20));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    // The exit is logged with its code, and the restart is immediate the first time.
    assert!(
        run.stderr.contains("the worker 1 exited with code 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("restarting the worker 1 in 0ns"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("started the worker 1").count(),
        2,
        "{}",
        run.stderr
    );
    // Both workers drained on SIGTERM: the restarted one too.
    assert_eq!(run.lines("RESULT drained").len(), 2, "{}", run.stdout);
}

#[test]
fn a_crash_loop_stops_the_cluster_at_the_limit_and_says_why() {
    let run = support::run(
        &[
            "flaky",
            "--workers",
            "2",
            "--crash-after-ms",
            "10",
            "--crash-limit",
            "3",
            "--crash-window-ms",
            "30000",
            "--backoff-ms",
            "20",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("crash loop: 4 crashes within 30s"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the last: the worker 1 (pid"),
        "{}",
        run.stderr
    );
    // Exactly the limit's restarts happened, with growing backoff: 0, 20 ms, 30 ms.
    assert_eq!(
        run.stderr.matches("restarting the worker 1 in").count(),
        3,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("restarting the worker 1 in 20ms"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("restarting the worker 1 in 30ms"),
        "{}",
        run.stderr
    );
}
