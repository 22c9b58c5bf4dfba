//! Rolling reload under continuous HTTP load: one worker at a time is replaced by a new process
//! that is ready before the old one stops, so no request is lost.

mod support;

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::http::Load;

#[test]
fn a_rolling_reload_under_load_loses_no_request() {
    let cluster = support::Cluster::start(
        &["http", "--workers", "2", "--listen", "--explicit-ready"],
        &[],
    );
    let addr = cluster.listen_addr();
    let load = Load::start(&addr, 4);
    std::thread::sleep(Duration::from_millis(300));
    let before = load.count();
    cluster.signal(Signal::SIGHUP);
    cluster.await_log("rolling reload complete", 1, Duration::from_secs(30));
    let reloaded = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();

    let failed = report.failed();
    println!(
        "reload under load: {} requests ({} before the reload began), {} failed",
        report.outcomes.len(),
        before,
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during the reload: {failed:?}"
    );
    assert!(
        report.ok() > before,
        "no request was served during and after the reload"
    );
    // Every worker was replaced: new pids answer after the reload, and the old ones drained.
    let started: Vec<i32> = run
        .stderr
        .lines()
        .filter(|l| l.contains("started the worker"))
        .filter_map(|l| support::pid_after(l, "started the worker"))
        .collect();
    assert_eq!(started.len(), 4, "{}", run.stderr);
    let new_pids: Vec<String> = started[2..].iter().map(i32::to_string).collect();
    let answering = report.pids_after(reloaded);
    assert!(
        answering.iter().all(|p| new_pids.contains(p)),
        "old workers answered after the reload: {answering:?} vs new {new_pids:?}"
    );
    assert_eq!(
        run.stderr.matches("took over, stopping pid").count(),
        2,
        "{}",
        run.stderr
    );
    assert_eq!(run.lines("RESULT http_drained").len(), 4, "{}", run.stdout);
}

#[test]
fn a_replacement_that_never_becomes_ready_aborts_the_reload_and_the_old_worker_keeps_serving() {
    let hang = support::TempPath::new("dispatch-hang");
    let hang_str = hang.as_str();
    let cluster = support::Cluster::start(
        &[
            "http",
            "--workers",
            "2",
            "--listen",
            "--explicit-ready",
            "--worker-ready-timeout-ms",
            "500",
        ],
        &[("FIXTURE_HANG_IF", &hang_str)],
    );
    let addr = cluster.listen_addr();
    // From now on, new workers hang before they are ready.
    std::fs::write(&hang.0, b"hang").expect("marker");
    let load = Load::start(&addr, 2);
    cluster.signal(Signal::SIGHUP);
    cluster.await_log("reload aborted", 1, Duration::from_secs(20));
    let aborted = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let report = load.stop();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    assert!(report.failed().is_empty(), "{:?}", report.failed());
    assert!(
        run.stderr.contains("did not become ready within 500ms"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the old one keeps serving"),
        "{}",
        run.stderr
    );
    // Only the first replacement was tried; the original workers served to the end.
    assert_eq!(
        run.stderr.matches("started the worker").count(),
        3,
        "{}",
        run.stderr
    );
    let originals: Vec<String> = run
        .stderr
        .lines()
        .filter(|l| l.contains("started the worker"))
        .take(2)
        .filter_map(|l| support::pid_after(l, "started the worker"))
        .map(|p| p.to_string())
        .collect();
    let answering = report.pids_after(aborted);
    assert!(!answering.is_empty());
    assert!(
        answering.iter().all(|p| originals.contains(p)),
        "{answering:?} vs {originals:?}"
    );
}

#[test]
fn the_cluster_handle_reloads_from_the_masters_own_code() {
    let cluster = support::Cluster::start(
        &[
            "serve",
            "--workers",
            "2",
            "--explicit-ready",
            "--reload-after-ms",
            "500",
        ],
        &[],
    );
    cluster.await_log("rolling reload complete", 1, Duration::from_secs(20));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    assert!(run.stderr.contains("reload requested"), "{}", run.stderr);
    // Two original workers and two replacements drained: the old ones when replaced.
    assert_eq!(run.lines("RESULT drained").len(), 4, "{}", run.stdout);
}

/// `examples/http` (axum through `dispatch::http::serve`) under continuous load, reloaded
/// again and again: not one request may be lost. Bounded at about a minute: as many reloads as
/// fit, up to 40, and the count is printed.
#[test]
fn rolling_reloads_of_the_axum_example_under_load_lose_no_request() {
    const RELOADS: usize = 40;
    let port = support::free_port().to_string();
    let cluster = support::Cluster::start_bin(
        support::example("http"),
        &["--port", &port, "--workers", "2"],
        &[],
    );
    cluster.await_log("cluster ready", 1, Duration::from_secs(30));
    let addr = format!("127.0.0.1:{port}");
    let load = Load::start(&addr, 4);
    let started = Instant::now();
    let mut reloads = 0;
    while reloads < RELOADS && started.elapsed() < Duration::from_secs(60) {
        cluster.signal(Signal::SIGHUP);
        reloads += 1;
        cluster.await_log("rolling reload complete", reloads, Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(200));
    let report = load.stop();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    let failed = report.failed();
    println!(
        "measured: {reloads} rolling reloads of examples/http in {:?} under load: {} requests, {} lost",
        started.elapsed(),
        report.outcomes.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests lost during the reloads: {:?}",
        &failed[..failed.len().min(10)]
    );
    assert!(
        reloads >= 10,
        "only {reloads} reloads fit in the time bound"
    );
    assert!(report.ok() > reloads * 10, "too few requests served");
}
