//! Start and finish: a failing, slow or hung process aborts the start with a clear message and
//! leaves nothing running; with restarts off, a failing worker stops the cluster with a non-zero
//! exit naming it.

mod support;

use std::time::Duration;

#[test]
fn a_failing_service_init_aborts_the_start_with_its_message() {
    let run = support::run(
        &["demo", "--workers", "2"],
        &[(
            "FIXTURE_FAIL_INIT",
            "cannot reach the registry at 127.0.0.1:1",
        )],
        Duration::from_secs(20),
    );
    assert!(
        !run.status.success(),
        "the cluster started anyway:\n{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("service `registry` (Registry) failed to initialise: cannot reach the registry at 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    // Workers are never started against a Library that is not ready.
    assert!(!run.stderr.contains("started the worker"), "{}", run.stderr);
    assert!(run.lines("RESULT").is_empty());
}

#[test]
fn a_worker_that_fails_stops_the_cluster_with_a_non_zero_exit() {
    let run = support::run(
        &["fail", "--workers", "2", "--no-restart"],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("worker 1: failing on purpose"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("worker 1 (pid"), "{}", run.stderr);
    assert!(run.stderr.contains("exited with code 1"), "{}", run.stderr);
}

#[test]
fn a_worker_killed_by_a_signal_stops_the_cluster_and_says_which_signal() {
    let run = support::run(
        &["crash", "--workers", "2", "--no-restart"],
        &[],
        Duration::from_secs(20),
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("worker 1 (pid"), "{}", run.stderr);
    // It killed itself: the kernel counted no OOM kill since it started (unless another
    // process of this host was OOM-killed meanwhile, which the log would then say).
    assert!(
        run.stderr.contains(
            "was killed by SIGKILL (not by the master, nor by the kernel's out-of-memory killer"
        ) || run
            .stderr
            .contains("was killed by SIGKILL (most likely by the kernel's"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_library_that_misses_its_ready_timeout_aborts_the_start() {
    let run = support::run(
        &["demo", "--library-ready-timeout-ms", "300"],
        &[("FIXTURE_SLOW_INIT_MS", "10000")],
        Duration::from_secs(20),
    );
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("the library did not become ready within 300ms"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("started the worker"), "{}", run.stderr);
    assert!(
        run.elapsed < Duration::from_secs(8),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn a_worker_that_never_becomes_ready_aborts_the_start() {
    let run = support::run(
        &[
            "never-ready",
            "--explicit-ready",
            "--worker-ready-timeout-ms",
            "400",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("did not become ready within 400ms"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("cluster ready"), "{}", run.stderr);
}

#[test]
fn a_worker_that_exits_before_ready_aborts_the_start() {
    let run = support::run(
        &["never-ready", "--explicit-ready", "--exit"],
        &[],
        Duration::from_secs(20),
    );
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("exited with code 1 before it was ready"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("giving up before ready"),
        "{}",
        run.stderr
    );
}
