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

/// A keep-alive HTTP/1.1 client: one connection, reused; a request that finds its reused
/// connection closed before any byte of its response is sent again on a new one, once (as
/// HTTP clients do for idempotent requests: the server closed an idle connection).
struct KeepAlive {
    addr: String,
    conn: Option<std::io::BufReader<std::net::TcpStream>>,
    used: bool,
    /// Requests on the current connection; after 50, a new one (so that connections spread
    /// over new workers).
    on_conn: u32,
}

impl KeepAlive {
    fn get(&mut self) -> Result<(String, bool), String> {
        match self.try_get() {
            Ok(body) => Ok((body, false)),
            Err((true, _)) if self.used_before_close() => {
                self.try_get().map(|b| (b, true)).map_err(|(_, e)| e)
            }
            Err((_, e)) => Err(e),
        }
    }

    /// Whether the closed connection had served a request (then it was reused).
    fn used_before_close(&mut self) -> bool {
        std::mem::replace(&mut self.used, false)
    }

    /// The body, or (nothing of the response arrived, the error).
    fn try_get(&mut self) -> Result<String, (bool, String)> {
        use std::io::{BufRead, Read, Write};
        if self.conn.is_none() {
            let stream =
                std::net::TcpStream::connect(&self.addr).map_err(|e| (false, e.to_string()))?;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.set_nodelay(true);
            self.conn = Some(std::io::BufReader::new(stream));
            self.used = false;
            self.on_conn = 0;
        }
        let conn = self.conn.as_mut().expect("connected");
        let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        let sent = conn.get_mut().write_all(request.as_bytes());
        let mut status = String::new();
        let read = sent.and_then(|()| conn.read_line(&mut status));
        if !matches!(read, Ok(n) if n > 0) {
            self.conn = None;
            return Err((true, format!("closed before a response: {read:?}")));
        }
        let mut length = 0;
        let mut close = false;
        loop {
            let mut line = String::new();
            match conn.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                other => {
                    self.conn = None;
                    return Err((false, format!("headers cut: {other:?}")));
                }
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            close |= lower.starts_with("connection: close");
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        if let Err(e) = conn.read_exact(&mut body) {
            self.conn = None;
            return Err((false, format!("body cut: {e}")));
        }
        self.used = true;
        self.on_conn += 1;
        if close || self.on_conn >= 50 {
            self.conn = None;
        }
        if !status.contains(" 200 ") {
            return Err((false, status));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

#[test]
fn scaling_down_under_keep_alive_load_loses_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let cluster = support::Cluster::start_bin(fixture(), &["--workers", "2"], &[]);
    let addr = cluster.listen_addr();
    let master = cluster.pid();
    await_workers(master, 2, Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, retried) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, retried, failures) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&retried),
                Arc::clone(&failures),
            );
            let mut client = KeepAlive {
                addr: addr.clone(),
                conn: None,
                used: false,
                on_conn: 0,
            };
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.get() {
                        Ok((_, again)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if again {
                                retried.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => failures.lock().expect("failures").push(e),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let up = admin(master, Request::Scale(Scale::To(4)));
    assert!(matches!(&up, Response::Done(_)), "{up:?}");
    await_workers(master, 4, Duration::from_secs(20));
    // The clients' new connections spread over the 4 workers.
    std::thread::sleep(Duration::from_millis(500));
    let down = admin(master, Request::Scale(Scale::To(1)));
    assert!(matches!(&down, Response::Done(_)), "{down:?}");
    cluster.await_log(
        "removed by a scale-down stopped (exited with code 0)",
        3,
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();
    let failures = failures.lock().expect("failures").clone();
    eprintln!(
        "measured: keep-alive load (8 connections) through scale 2→4→1: {} requests, {} \
         failed, {} sent again after an idle connection closed",
        ok.load(Ordering::Relaxed),
        failures.len(),
        retried.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "{failures:?}");
}
