//! Scale at run time (issue 14): `dispatchctl scale N|+K|-K` (the admin request) and
//! `ClusterHandle::scale`, against the real processes of `tests/fixtures/deploy.rs`.

mod support;

use dispatch::admin::{discover, Request, Response, Scale};
use dispatch::ClusterStatus;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::http::Load;

fn fixture() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_dispatch-deploy-fixture").into()
}

/// Sends `request` to the master `pid` over its admin socket.
fn admin(pid: u32, request: Request) -> Response {
    let cluster = discover()
        .and_then(|d| d.select(Some(&pid.to_string())))
        .expect("find the cluster");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(cluster.request(request))
        .expect("admin request")
}

fn status(pid: u32) -> ClusterStatus {
    match admin(pid, Request::Status { methods: false }) {
        Response::Status(status) => status,
        other => panic!("not a status: {other:?}"),
    }
}

/// The worker pids in state `ready`.
fn ready_workers(status: &ClusterStatus) -> Vec<u32> {
    status
        .processes
        .iter()
        .filter(|p| p.role == "worker" && p.state == "ready")
        .map(|p| p.pid)
        .collect()
}

/// Waits until the cluster runs exactly `n` worker processes, all ready; returns their pids.
fn await_workers(pid: u32, n: usize, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(pid);
        let workers = s.processes.iter().filter(|p| p.role == "worker").count();
        let ready = ready_workers(&s);
        if workers == n && ready.len() == n && s.workers as usize == n {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {n} ready workers: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn scaling_2_to_4_to_1_under_load_loses_no_request_and_removed_workers_drain_and_exit_0() {
    let cluster = support::Cluster::start_bin(fixture(), &["--workers", "2"], &[]);
    let addr = cluster.listen_addr();
    let master = cluster.pid();
    let first = await_workers(master, 2, Duration::from_secs(20));
    let load = Load::start(&addr, 4);
    std::thread::sleep(Duration::from_millis(300));

    let asked = Instant::now();
    let up = admin(master, Request::Scale(Scale::To(4)));
    assert!(
        matches!(&up, Response::Done(d) if d.contains("scaled from 2 to 4 workers")),
        "{up:?}"
    );
    let four = await_workers(master, 4, Duration::from_secs(20));
    let up_took = asked.elapsed();
    assert!(first.iter().all(|p| four.contains(p)), "{first:?} {four:?}");
    std::thread::sleep(Duration::from_millis(500));

    let asked = Instant::now();
    let down = admin(master, Request::Scale(Scale::Down(3)));
    assert!(
        matches!(&down, Response::Done(d) if d.contains("scaled from 4 to 1 workers: stopping 3")),
        "{down:?}"
    );
    cluster.await_log(
        "removed by a scale-down stopped (exited with code 0)",
        3,
        Duration::from_secs(20),
    );
    let down_took = asked.elapsed();
    let one = await_workers(master, 1, Duration::from_secs(20));
    // The lowest slot stays: the highest ids were removed.
    let s = status(master);
    assert_eq!(s.workers, 1);
    assert_eq!(
        s.processes
            .iter()
            .filter(|p| p.role == "worker")
            .map(|p| p.worker_id)
            .collect::<Vec<_>>(),
        vec![Some(0)]
    );
    let removed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(300));

    // A reload keeps the new count.
    cluster.signal(Signal::SIGHUP);
    cluster.await_log("rolling reload complete", 1, Duration::from_secs(20));
    let reloaded = await_workers(master, 1, Duration::from_secs(20));
    assert_ne!(reloaded, one, "the reload replaced the one worker");
    std::thread::sleep(Duration::from_millis(200));
    let report = load.stop();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();

    let failed = report.failed();
    let removed: Vec<u32> = four.iter().copied().filter(|p| !one.contains(p)).collect();
    eprintln!(
        "measured: scale 2→4→1 (then a reload) under load: {} requests, {} failed; 2→4 ready in \
         {up_took:?}, 4→1 drained and exited in {down_took:?}",
        report.outcomes.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    // Each removed worker drained through `serve` (after `Worker::shutdown`) and exited 0.
    for pid in &removed {
        assert!(
            run.stdout.contains(&format!("pid={pid}\n")),
            "worker {pid} did not return from serve\n{}",
            run.stdout
        );
    }
    assert_eq!(run.lines("RESULT shutdown").len(), 5, "{}", run.stdout);
    // After the scale-down, only the remaining worker (then its reload) answered.
    let answering = report.pids_after(removed_at);
    assert!(
        answering
            .iter()
            .all(|p| !removed.iter().any(|r| r.to_string() == *p)),
        "removed workers answered: {answering:?} vs removed {removed:?}"
    );
    assert!(
        !run.stderr.contains("restarting the worker"),
        "{}",
        run.stderr
    );
}

#[test]
fn scale_refuses_no_worker_and_past_the_limit_with_a_clear_message() {
    let cluster =
        support::Cluster::start_bin(fixture(), &["--workers", "2", "--max-workers", "8"], &[]);
    cluster.listen_addr();
    let master = cluster.pid();
    let refused = |change| match admin(master, Request::Scale(change)) {
        Response::Refused(why) => why,
        other => panic!("scale {change} was not refused: {other:?}"),
    };
    let zero = refused(Scale::To(0));
    assert!(zero.contains("at least 1 worker"), "{zero}");
    let below = refused(Scale::Down(5));
    assert!(below.contains("cannot scale -5 from 2 workers"), "{below}");
    let many = refused(Scale::Up(100));
    assert!(many.contains("the limit is 8"), "{many}");
    let huge = refused(Scale::Up(u32::MAX));
    assert!(huge.contains("the limit is 8"), "{huge}");
    eprintln!("measured: refusals: {zero:?}; {many:?}");
    assert_eq!(status(master).workers, 2);
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(20)).assert_success();
}

#[test]
fn the_cluster_handle_scales_from_the_masters_own_code() {
    let cluster =
        support::Cluster::start_bin(fixture(), &["--workers", "2", "--handle-scale", "+1"], &[]);
    cluster.await_stdout("RESULT handle_scale", 1, Duration::from_secs(20));
    await_workers(cluster.pid(), 3, Duration::from_secs(20));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    assert!(
        run.stdout
            .contains("RESULT handle_scale Ok(\"scaled from 2 to 3 workers: started 2 (pid"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_scale_during_a_rolling_reload_is_applied_when_the_reload_completes() {
    let cluster = support::Cluster::start_bin(
        fixture(),
        &["--workers", "2", "--worker-setup-ms", "700"],
        &[],
    );
    cluster.listen_addr();
    let master = cluster.pid();
    cluster.signal(Signal::SIGHUP);
    cluster.await_log("rolling reload of 2 workers", 1, Duration::from_secs(10));
    let queued = admin(master, Request::Scale(Scale::Up(1)));
    assert!(
        matches!(&queued, Response::Done(d) if d.contains("a rolling reload is in progress: scaling to 3 workers once it completes")),
        "{queued:?}"
    );
    cluster.await_log("scaled from 2 to 3 workers", 1, Duration::from_secs(20));
    await_workers(master, 3, Duration::from_secs(20));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    let log = &run.stderr;
    let complete = log
        .find("rolling reload complete")
        .expect("reload complete");
    let scaled = log.find("scaled from 2 to 3 workers").expect("scaled");
    assert!(complete < scaled, "{log}");
}

#[test]
fn the_http_example_scales_2_to_4_to_1_under_load_losing_no_request() {
    let port = support::free_port().to_string();
    let cluster = support::Cluster::start_bin(
        support::example("http"),
        &["--port", &port, "--workers", "2"],
        &[],
    );
    let addr = cluster.listen_addr();
    let master = cluster.pid();
    await_workers(master, 2, Duration::from_secs(20));
    let load = Load::start(&addr, 4);
    std::thread::sleep(Duration::from_millis(300));
    let up = admin(master, Request::Scale(Scale::Up(2)));
    assert!(matches!(&up, Response::Done(_)), "{up:?}");
    await_workers(master, 4, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let down = admin(master, Request::Scale(Scale::To(1)));
    assert!(matches!(&down, Response::Done(_)), "{down:?}");
    cluster.await_log(
        "removed by a scale-down stopped (exited with code 0)",
        3,
        Duration::from_secs(20),
    );
    await_workers(master, 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();
    let failed = report.failed();
    eprintln!(
        "measured: examples/http scaled 2→4→1 under load: {} requests (each a Library call), \
         {} failed",
        report.outcomes.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "requests failed: {failed:?}");
}
