//! The shared listener: bound once by the master, served by every worker, never closed by a
//! worker's crash and restart.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use support::http::{get, Load};

#[test]
fn every_worker_serves_the_shared_port() {
    let cluster = support::Cluster::start(&["http", "--workers", "2", "--listen"], &[]);
    let addr = cluster.listen_addr();
    let mut pids = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.len() < 2 && Instant::now() < deadline {
        let (status, body) = get(&addr, "/").expect("GET /");
        assert_eq!(status, 200, "{body}");
        pids.insert(
            body.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(pids.len(), 2, "only {pids:?} answered");
    assert_eq!(
        get(&addr, "/name").expect("GET /name"),
        (200, "get name".to_owned())
    );
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(20)).assert_success();
}

#[test]
fn a_worker_sigkilled_under_load_loses_at_most_its_in_flight_requests() {
    let clients = 4;
    let cluster = support::Cluster::start(&["http", "--workers", "2", "--listen"], &[]);
    let addr = cluster.listen_addr();
    let log = cluster.stderr();
    let victim = support::pid_after(&log, "started the worker 1").expect("worker 1 pid");
    let load = Load::start(&addr, clients);
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill worker 1");
    cluster.await_log("worker 1 ready", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();

    let failed = report.failed();
    let later = report
        .outcomes
        .iter()
        .filter(|o| o.at > killed + Duration::from_millis(100));
    let (later_ok, later_failed) =
        later.fold(
            (0, 0),
            |(ok, bad), o| if o.ok { (ok + 1, bad) } else { (ok, bad + 1) },
        );
    println!(
        "worker SIGKILL under load: {} requests, {} failed (at most {clients} were in flight), {later_ok} served after the kill, {later_failed} of them failed",
        report.outcomes.len(),
        failed.len()
    );
    assert!(
        failed.len() <= clients,
        "more failures than requests in flight: {failed:?}"
    );
    assert_eq!(
        later_failed, 0,
        "requests failed after the kill: {failed:?}"
    );
    assert!(later_ok > 0);
    // The test killed it: the kernel counted no OOM kill since it started (unless another
    // process of this host was OOM-killed meanwhile, which the log would then say).
    assert!(
        run.stderr.contains(
            "the worker 1 was killed by SIGKILL (not by the master, nor by the kernel's \
             out-of-memory killer"
        ) || run
            .stderr
            .contains("the worker 1 was killed by SIGKILL (most likely by the kernel's"),
        "{}",
        run.stderr
    );
}
