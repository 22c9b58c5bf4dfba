//! Recycling of workers (issue 14): a worker past its RSS limit, its request limit (with
//! jitter) or its age is replaced start-new-first, one at a time, losing no request; the reason
//! is logged and shown in `status`. Against the real processes of `tests/fixtures/deploy.rs`.

mod support;

use dispatch::admin::{discover, Request, Response};
use dispatch::ClusterStatus;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::http::Load;

fn fixture() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_dispatch-deploy-fixture").into()
}

fn status(pid: u32) -> ClusterStatus {
    let cluster = discover()
        .and_then(|d| d.select(Some(&pid.to_string())))
        .expect("find the cluster");
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(cluster.request(Request::Status { methods: false }))
        .expect("status");
    match answer {
        Response::Status(status) => status,
        other => panic!("not a status: {other:?}"),
    }
}

/// Seconds since midnight (UTC) of a log line's timestamp (`2026-12-01T16:13:10.594678Z …`).
fn logged_at(line: &str) -> f64 {
    let time = line
        .split_whitespace()
        .next()
        .and_then(|t| t.split_once('T'))
        .map(|(_, t)| t.trim_end_matches('Z'))
        .unwrap_or_else(|| panic!("no timestamp: {line}"));
    let parts: Vec<f64> = time.split(':').map(|p| p.parse().expect("time")).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

/// The lines of `log` holding `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_worker_leaking_1_mib_per_request_is_replaced_at_its_rss_limit_losing_no_request() {
    let cluster = support::Cluster::start_bin(
        fixture(),
        &["--workers", "2", "--leak-mib", "1", "--max-rss-mib", "64"],
        &[],
    );
    let addr = cluster.listen_addr();
    let master = cluster.pid();
    let started = Instant::now();
    // Paced: about 100 MiB/s of leaks over the cluster, so a worker overshoots its limit by
    // what it leaks between two checks and while its replacement starts.
    let load = Load::paced(&addr, 2, Duration::from_millis(20));
    cluster.await_log("recycle complete", 2, Duration::from_secs(60));
    let first_two = started.elapsed();
    let s = status(master);
    std::thread::sleep(Duration::from_millis(200));
    let report = load.stop();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();

    let failed = report.failed();
    let reasons: Vec<&str> = lines_with(&run.stderr, "recycling worker");
    eprintln!(
        "measured: leak 1 MiB/request, RSS limit 64 MiB: {} requests, {} failed, {} recycles \
         (first two complete after {first_two:?}): {reasons:#?}",
        report.outcomes.len(),
        failed.len(),
        reasons.len()
    );
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    assert!(reasons.len() >= 2, "{}", run.stderr);
    assert!(
        reasons.iter().all(|r| r.contains("MiB > 64 MiB")),
        "{reasons:?}"
    );
    // Start-new-first, and the old worker drained and exited 0.
    assert!(
        lines_with(&run.stderr, "took over, stopping pid").len() >= 2,
        "{}",
        run.stderr
    );
    assert!(
        lines_with(&run.stderr, "stopped (exited with code 0)")
            .iter()
            .filter(|l| l.contains("the old worker"))
            .count()
            >= 2,
        "{}",
        run.stderr
    );
    // Not crashes: no restart, and the reason is in the status.
    assert!(
        !run.stderr.contains("restarting the worker"),
        "{}",
        run.stderr
    );
    let shown: Vec<&String> = s
        .processes
        .iter()
        .filter_map(|p| p.last_recycle.as_ref())
        .collect();
    assert!(
        !shown.is_empty() && shown.iter().all(|r| r.contains("> 64 MiB")),
        "{s:#?}"
    );
}

#[test]
fn with_4_workers_and_max_requests_each_retires_and_no_two_within_the_same_second() {
    let cluster = support::Cluster::start_bin(
        fixture(),
        &["--workers", "4", "--max-requests", "200", "--jitter", "100"],
        &[],
    );
    let addr = cluster.listen_addr();
    let master = cluster.pid();
    let load = Load::start(&addr, 4);
    let loaded = Instant::now();
    // Until each of the 4 slots was recycled at least once.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let log = cluster.stderr();
        let slots: BTreeSet<&str> = lines_with(&log, "took over, stopping pid")
            .iter()
            .filter_map(|l| l.split("worker ").nth(1))
            .filter_map(|l| l.split(':').next())
            .collect();
        if slots.len() == 4 {
            break;
        }
        if Instant::now() > deadline {
            let report = load.stop();
            let mut by_pid = std::collections::BTreeMap::<String, usize>::new();
            for o in &report.outcomes {
                let pid = o.detail.split_whitespace().nth(2).unwrap_or("-").to_owned();
                *by_pid.entry(pid).or_default() += 1;
            }
            panic!("not every worker was recycled: {slots:?}; requests by pid {by_pid:?}\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = status(master);
    let report = load.stop();
    let load_ran = loaded.elapsed();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();

    let failed = report.failed();
    let retired: Vec<f64> = lines_with(&run.stderr, "took over, stopping pid")
        .iter()
        .map(|l| logged_at(l))
        .collect();
    let gaps: Vec<f64> = retired.windows(2).map(|w| w[1] - w[0]).collect();
    let reasons: Vec<&str> = lines_with(&run.stderr, "recycling worker")
        .iter()
        .filter_map(|l| l.split("recycling ").nth(1))
        .collect();
    eprintln!(
        "measured: 4 workers, max_requests 200 + jitter 100: {} requests in {load_ran:?}, {} \
         failed; {} retirements, gaps {gaps:.3?} s; reasons {reasons:#?}",
        report.outcomes.len(),
        failed.len(),
        retired.len()
    );
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    let smallest = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        smallest >= 1.0,
        "two workers retired within {smallest:.3} s: {gaps:?}\n{}",
        run.stderr
    );
    // Each limit is 200 + a jitter in 0..=100 drawn for each process.
    let jitters: BTreeSet<u64> = reasons
        .iter()
        .filter_map(|r| r.split("(limit 200+").nth(1))
        .filter_map(|r| r.split(' ').next())
        .map(|j| j.parse().expect("jitter"))
        .collect();
    assert!(jitters.iter().all(|j| *j <= 100), "{jitters:?}");
    assert!(
        jitters.len() > 1,
        "one jitter for every worker: {jitters:?}"
    );
    assert!(
        s.processes
            .iter()
            .filter_map(|p| p.last_recycle.as_deref())
            .any(|r| r.contains("requests (limit 200+")),
        "{s:#?}"
    );
}

#[test]
fn a_worker_past_its_max_age_is_recycled_and_status_says_why() {
    let cluster =
        support::Cluster::start_bin(fixture(), &["--workers", "2", "--max-age-ms", "1500"], &[]);
    cluster.listen_addr();
    let master = cluster.pid();
    cluster.await_log("recycle complete", 2, Duration::from_secs(30));
    let s = status(master);
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();
    let recycled: Vec<(u32, u32, String)> = s
        .processes
        .iter()
        .filter_map(|p| Some((p.worker_id?, p.recycles, p.last_recycle.clone()?)))
        .collect();
    eprintln!("measured: max_age 1.5 s: {recycled:?}");
    assert!(
        recycled
            .iter()
            .any(|(_, n, why)| *n >= 1 && why.contains(">= 1.5s")),
        "{s:#?}"
    );
}

#[test]
fn a_replacement_that_cannot_start_keeps_the_old_worker_and_is_retried_after_a_pause() {
    let broken = support::TempPath::new("dispatch-deploy-broken");
    let cluster = support::Cluster::start_bin(
        fixture(),
        &["--workers", "1", "--max-age-ms", "500"],
        &[("FIXTURE_FAIL_SETUP_IF", &broken.as_str())],
    );
    let addr = cluster.listen_addr();
    // From now on, new workers fail their setup.
    std::fs::write(&broken.0, b"broken").expect("marker");
    cluster.await_log("recycle aborted", 1, Duration::from_secs(20));
    let load = Load::start(&addr, 2);
    std::thread::sleep(Duration::from_secs(3));
    let report = load.stop();
    let s = status(cluster.pid());
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();
    let worker = s
        .processes
        .iter()
        .find(|p| p.role == "worker")
        .expect("a worker");
    assert_eq!(worker.recycles, 0, "{worker:?}");
    assert!(
        worker
            .last_recycle
            .as_deref()
            .is_some_and(|why| why.contains("(aborted: the new worker")),
        "{worker:?}"
    );
    let aborted = lines_with(&run.stderr, "recycle aborted").len();
    eprintln!(
        "measured: a replacement that cannot start: {aborted} tries in ~3 s, {} requests, {} \
         failed",
        report.outcomes.len(),
        report.failed().len()
    );
    assert!(report.failed().is_empty(), "{:?}", report.failed());
    assert!(report.ok() > 0);
    // Not every 250 ms: the next try waits.
    assert!(aborted <= 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the old one keeps serving; next try in 10s"),
        "{}",
        run.stderr
    );
}
