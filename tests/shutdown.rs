//! Graceful shutdown on SIGTERM, SIGINT and SIGQUIT; stragglers killed after the grace period;
//! a second signal stops at once; the master's death takes every child with it.

mod support;

use nix::sys::signal::Signal;
use std::time::Duration;

fn graceful(signal: Signal) {
    let cluster = support::Cluster::start(&["serve", "--workers", "2", "--drain-ms", "200"], &[]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(20));
    cluster.signal(signal);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    // Every worker drained, calling the Library while it did; the Library closed last.
    let drained = run.lines("RESULT drained");
    assert_eq!(drained.len(), 2, "{}", run.stdout);
    let closed = run
        .stdout
        .find("RESULT library_closed")
        .expect("close hook ran");
    for line in drained {
        assert!(
            run.stdout.find(line).is_some_and(|at| at < closed),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("RESULT library_closed value=2"),
        "{}",
        run.stdout
    );
    assert!(!run.stderr.contains("killing it"), "{}", run.stderr);
}

#[test]
fn sigterm_drains_workers_then_stops_the_library() {
    graceful(Signal::SIGTERM);
}

#[test]
fn sigint_drains_workers_then_stops_the_library() {
    graceful(Signal::SIGINT);
}

#[test]
fn sigquit_drains_workers_then_stops_the_library() {
    graceful(Signal::SIGQUIT);
}

#[test]
fn stragglers_are_killed_after_the_grace_period() {
    let cluster = support::Cluster::start(
        &["serve", "--workers", "2", "--stubborn", "--grace-ms", "500"],
        &[],
    );
    cluster.await_log("cluster ready", 1, Duration::from_secs(20));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    assert_eq!(
        run.stderr
            .matches("did not stop in time: killing it")
            .count(),
        2,
        "{}",
        run.stderr
    );
    // The Library still stopped gracefully, after the workers.
    assert!(
        run.stdout.contains("RESULT library_closed"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_second_sigint_stops_at_once() {
    let cluster = support::Cluster::start(
        &[
            "serve",
            "--workers",
            "2",
            "--stubborn",
            "--grace-ms",
            "30000",
        ],
        &[],
    );
    cluster.await_log("cluster ready", 1, Duration::from_secs(20));
    cluster.signal(Signal::SIGINT);
    cluster.await_log("asked to stop", 2, Duration::from_secs(10));
    let second = std::time::Instant::now();
    cluster.signal(Signal::SIGINT);
    let run = cluster.wait(Duration::from_secs(10));
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "took {:?}",
        second.elapsed()
    );
    assert!(
        run.stderr
            .contains("received SIGINT while stopping: killing at once"),
        "{}",
        run.stderr
    );
}

#[test]
fn every_child_exits_within_a_second_of_the_master_being_sigkilled() {
    let cluster = support::Cluster::start(&["serve", "--workers", "2"], &[]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(20));
    let took = cluster
        .kill_master(Duration::from_secs(1))
        .expect("children outlived the master by more than 1 s");
    println!("all children gone {took:?} after the master's SIGKILL");
}
