//! Issue 14 item 2: the Library is replaced without failing a call (a Library handover), with
//! real processes: the fixture `dispatch-handover-fixture` keeps 2 workers × 32 calls in flight
//! without pause while the test asks the master for a handover through the admin socket (what
//! `dispatchctl reload --library` sends).

mod support;

use dispatch::admin::{discover, Request, Response};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::{field, number, pid_after, Cluster, Run, TempPath};

const FIXTURE: &str = env!("CARGO_BIN_EXE_dispatch-handover-fixture");

/// Sends `request` to the cluster whose master is `master`.
fn admin(master: u32, request: Request) -> Response {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let found = discover()
            .expect("discover")
            .select(Some(&master.to_string()))
            .expect("our cluster");
        found.request(request).await.expect("admin request")
    })
}

/// Starts the fixture with `args` and `FIXTURE_DIR=dir`, and waits until it is ready.
fn start(args: &[&str], dir: &TempPath) -> Cluster {
    std::fs::create_dir_all(&dir.0).expect("fixture dir");
    let cluster = Cluster::start_bin(FIXTURE, args, &[("FIXTURE_DIR", &dir.as_str())]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(60));
    cluster
}

/// The workers' tallies: (calls that succeeded, calls that failed, slowest call in ms, the
/// Library pids each worker saw).
fn tallies(run: &Run) -> (u64, u64, u64, Vec<Vec<u32>>) {
    let lines = run.lines("RESULT ");
    assert_eq!(lines.len(), 2, "one RESULT per worker:\n{}", run.stdout);
    let (mut ok, mut failed, mut max_ms, mut pids) = (0, 0, 0, Vec::new());
    for line in lines {
        ok += number(line, "ok") as u64;
        failed += number(line, "failed") as u64;
        max_ms = max_ms.max(number(line, "max_ms") as u64);
        pids.push(
            field(line, "pids")
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect(),
        );
    }
    (ok, failed, max_ms, pids)
}

/// The handover's duration in ms, from the master's "library handover N (...) complete in X".
fn handover_ms(log: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains("library handover") && l.contains(" complete in "))
        .expect("a completed handover in the log");
    let took = line
        .split(" complete in ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .expect("duration");
    parse_duration_ms(took)
}

/// `12.3ms`, `1.2s`, `950µs` → milliseconds.
fn parse_duration_ms(text: &str) -> f64 {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "s" => value * 1000.0,
        "ms" => value,
        "µs" | "us" => value / 1000.0,
        "ns" => value / 1e6,
        _ => f64::NAN,
    }
}

/// Row "reload --library under 2 workers × 32 calls in flight: 0 failed calls": the calls go
/// on through the handover, the Library's pid changes, and the old Library exits 0 after its
/// close hooks.
#[test]
fn library_handover_under_load_fails_no_call() {
    let dir = TempPath::new("dispatch-handover-load");
    let cluster = start(&["--workers", "2", "--calls", "32", "--work-ms", "5"], &dir);
    let old = pid_after(&cluster.stderr(), "library ready in").expect("library pid") as u32;
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let answer = admin(cluster.pid(), Request::ReloadLibrary);
    let answered = asked.elapsed();
    assert!(matches!(answer, Response::Done(_)), "{answer:?}");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    let complete = asked.elapsed();
    cluster.await_stdout(&format!("CLOSED pid={old}"), 1, Duration::from_secs(60));
    cluster.await_log(
        "the old library stopped (exited with code 0)",
        1,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = cluster.stderr();
    let new = pid_after(&log, "new library ready in").expect("new library pid") as u32;
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, max_ms, pids) = tallies(&run);
    eprintln!(
        "measured: library handover under 2 workers x 32 calls in flight: {ok} calls ok, \
         {failed} failed, answer after {answered:?}, complete after {complete:?} ({} ms by the \
         master's log), slowest call {max_ms} ms",
        handover_ms(&log)
    );
    assert_eq!(failed, 0, "no call fails:\n{}\n{}", run.stdout, run.stderr);
    assert_ne!(old, new);
    for seen in &pids {
        assert!(seen.contains(&old) && seen.contains(&new), "{pids:?}");
    }
    assert!(ok > 1000, "the load ran: {ok}");
    assert!(run.stdout.contains(&format!("CLOSED pid={new}")));
}

/// Row "a counter service's value survives through its restore hook": increments without pause
/// through the handover; the new Library's value at the end is the number of increments that
/// succeeded.
#[test]
fn counter_survives_a_library_handover_exactly() {
    let dir = TempPath::new("dispatch-handover-counter");
    let cluster = start(
        &[
            "--workers",
            "2",
            "--calls",
            "32",
            "--method",
            "incr",
            "--work-ms",
            "2",
        ],
        &dir,
    );
    std::thread::sleep(Duration::from_millis(500));
    let answer = admin(cluster.pid(), Request::ReloadLibrary);
    assert!(matches!(answer, Response::Done(_)), "{answer:?}");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let log = cluster.stderr();
    let new = pid_after(&log, "new library ready in").expect("new library pid") as u32;
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, max_ms, _) = tallies(&run);
    let value_line = run
        .lines("COUNTER ")
        .into_iter()
        .find(|l| field(l, "pid") == Some(&new.to_string()))
        .unwrap_or_else(|| panic!("the new library's counter:\n{}", run.stdout))
        .to_owned();
    let value = number(&value_line, "value") as u64;
    let old_value = run
        .lines("COUNTER ")
        .into_iter()
        .find(|l| field(l, "pid") != Some(&new.to_string()))
        .map(|l| number(l, "value") as u64);
    eprintln!(
        "measured: counter through a handover: {ok} increments ok, {failed} failed, value {value} \
         (old library's at the snapshot: {old_value:?}), handover {} ms, slowest call {max_ms} ms",
        handover_ms(&log)
    );
    assert_eq!(failed, 0, "{}", run.stdout);
    assert_eq!(value, ok, "every increment counted once:\n{}", run.stdout);
    assert!(
        old_value.is_some_and(|v| v > 0 && v < value),
        "{old_value:?} {value}"
    );
}

/// A new Library that fails its init: the handover is refused with the reason, and the old
/// Library keeps serving without a failed call.
#[test]
fn a_new_library_that_fails_its_init_is_refused_and_the_old_one_keeps_serving() {
    let dir = TempPath::new("dispatch-handover-refused");
    let cluster = start(&["--workers", "2", "--calls", "32", "--work-ms", "5"], &dir);
    let old = pid_after(&cluster.stderr(), "library ready in").expect("library pid") as u32;
    std::fs::write(dir.0.join("fail-init"), b"").expect("marker");
    let asked = Instant::now();
    let answer = admin(cluster.pid(), Request::ReloadLibrary);
    let refused_after = asked.elapsed();
    let Response::Refused(reason) = &answer else {
        panic!("refused: {answer:?}");
    };
    assert!(
        reason.contains("the fail-init marker is present"),
        "{reason}"
    );
    std::fs::remove_file(dir.0.join("fail-init")).expect("marker");
    let Response::Status(status) = admin(cluster.pid(), Request::Status { methods: false }) else {
        panic!("status");
    };
    let shown = status
        .processes
        .iter()
        .find_map(|p| p.last_handover.clone())
        .unwrap_or_default();
    assert!(
        shown.contains("aborted") && shown.contains("fail-init marker"),
        "{shown}"
    );
    std::thread::sleep(Duration::from_millis(500));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, _, pids) = tallies(&run);
    eprintln!(
        "measured: refused handover answered after {refused_after:?} ({reason}); {ok} calls ok, \
         {failed} failed"
    );
    assert_eq!(failed, 0, "{}", run.stdout);
    assert!(pids.iter().all(|seen| seen == &vec![old]), "{pids:?}");
}

/// Library recycling: a Library past its RSS limit is replaced through a handover, without a
/// failed call, and `status` says why.
#[test]
fn a_library_over_its_rss_limit_is_recycled_through_a_handover() {
    let dir = TempPath::new("dispatch-handover-recycle");
    let cluster = start(
        &[
            "--workers",
            "2",
            "--calls",
            "32",
            "--work-ms",
            "5",
            "--recycle-rss-mib",
            "200",
            "--grow-after-ms",
            "300",
            "--grow-mib",
            "300",
        ],
        &dir,
    );
    let old = pid_after(&cluster.stderr(), "library ready in").expect("library pid") as u32;
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    let Response::Status(status) = admin(cluster.pid(), Request::Status { methods: false }) else {
        panic!("status");
    };
    let library = status
        .processes
        .iter()
        .find(|p| p.role == "library" && p.state == "ready")
        .expect("library in status");
    let why = library.last_handover.clone().unwrap_or_default();
    assert!(why.contains("recycled: resident memory"), "{status:?}");
    assert_ne!(library.pid, old);
    let log = cluster.stderr();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, max_ms, _) = tallies(&run);
    eprintln!(
        "measured: library recycled ({why}); {ok} calls ok, {failed} failed, handover {} ms, \
         slowest call {max_ms} ms",
        handover_ms(&log)
    );
    assert_eq!(failed, 0, "{}", run.stdout);
}

/// The old Library dies during the handover (its calls in flight are slow): only those calls
/// fail (`LibraryRestarted`, as in any crash); the new Library takes over without a restart,
/// the handover completes, and every later call succeeds on it.
#[test]
fn an_old_library_that_dies_during_the_handover_leaves_the_new_one_serving() {
    let dir = TempPath::new("dispatch-handover-old-dies");
    let cluster = start(
        &["--workers", "2", "--calls", "8", "--work-ms", "1500"],
        &dir,
    );
    let old = pid_after(&cluster.stderr(), "library ready in").expect("library pid");
    std::thread::sleep(Duration::from_millis(300));
    let answer = admin(cluster.pid(), Request::ReloadLibrary);
    assert!(matches!(answer, Response::Done(_)), "{answer:?}");
    cluster.await_log("moving 2 workers", 1, Duration::from_secs(60));
    let killed = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).expect("kill");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    let complete = killed.elapsed();
    // Every worker makes new calls (1.5 s each) on the new Library.
    std::thread::sleep(Duration::from_millis(3500));
    let log = cluster.stderr();
    let new = pid_after(&log, "new library ready in").expect("new library pid") as u32;
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, _, pids) = tallies(&run);
    eprintln!(
        "measured: old library killed during the handover: {failed} calls failed (in flight on \
         it), {ok} ok, handover complete {complete:?} after the kill"
    );
    assert!(
        failed <= 16,
        "only the calls in flight on the old library fail: {failed}"
    );
    assert!(
        !log.contains("restarting the library"),
        "no restart:\n{log}"
    );
    assert!(log.contains("the new one takes over"), "{log}");
    for seen in &pids {
        assert!(seen.contains(&new), "{pids:?}");
    }
}

/// The old Library dies while the new one still starts: the workers' calls wait (none fails
/// but those in flight on it), the new Library takes the slot once ready, without a restart.
#[test]
fn an_old_library_that_dies_before_the_new_one_is_ready_is_taken_over() {
    let dir = TempPath::new("dispatch-handover-old-dies-early");
    let cluster = start(&["--workers", "2", "--calls", "8", "--work-ms", "5"], &dir);
    let old = pid_after(&cluster.stderr(), "library ready in").expect("library pid");
    std::fs::write(dir.0.join("slow-init"), b"").expect("marker");
    let master = cluster.pid();
    let asked = std::thread::spawn(move || admin(master, Request::ReloadLibrary));
    cluster.await_log("starting a new library", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).expect("kill");
    let answer = asked.join().expect("admin thread");
    assert!(matches!(answer, Response::Done(_)), "{answer:?}");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let log = cluster.stderr();
    let new = pid_after(&log, "new library ready in").expect("new library pid") as u32;
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, max_ms, pids) = tallies(&run);
    eprintln!(
        "measured: old library killed before the new one was ready: {failed} calls failed (in \
         flight on it), {ok} ok, slowest call {max_ms} ms (waiting for the new one)"
    );
    assert!(
        failed <= 16,
        "only the calls in flight on the old library fail: {failed}"
    );
    assert!(
        !log.contains("restarting the library"),
        "no restart:\n{log}"
    );
    for seen in &pids {
        assert!(seen.contains(&new), "{pids:?}");
    }
}

/// Snapshots over the control message's budget: the snapshot fails with an error that says
/// so and what to do, the new Library serves from its fresh state, and no call fails.
#[test]
fn a_snapshot_over_its_budget_is_refused_and_no_call_fails() {
    let dir = TempPath::new("dispatch-handover-big");
    let cluster = start(
        &[
            "--workers",
            "2",
            "--calls",
            "32",
            "--method",
            "incr",
            "--work-ms",
            "2",
        ],
        &dir,
    );
    std::fs::write(dir.0.join("big-snapshot"), b"2000000").expect("marker");
    let answer = admin(cluster.pid(), Request::ReloadLibrary);
    assert!(matches!(answer, Response::Done(_)), "{answer:?}");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let log = cluster.stderr();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, _, _) = tallies(&run);
    let why = log
        .lines()
        .find(|l| l.contains("no snapshot:"))
        .unwrap_or_else(|| panic!("the snapshot error:\n{log}"));
    eprintln!(
        "measured: snapshot of 2,000,000 bytes refused: {why}; {ok} calls ok, {failed} failed"
    );
    assert!(why.contains("bytes one control message carries"), "{why}");
    assert!(log.contains("serves from its fresh state"), "{log}");
    assert!(!run.stdout.contains("BIG restored"), "{}", run.stdout);
    assert_eq!(failed, 0, "{}", run.stdout);
}

/// After a handover, a crash of the new Library is handled as any Library crash: it is
/// restarted on its socket and the Agents reconnect to it.
#[test]
fn a_library_crash_after_a_handover_is_restarted_and_agents_reconnect() {
    let dir = TempPath::new("dispatch-handover-crash-after");
    let cluster = start(&["--workers", "2", "--calls", "8", "--work-ms", "5"], &dir);
    let answer = admin(cluster.pid(), Request::ReloadLibrary);
    assert!(matches!(answer, Response::Done(_)), "{answer:?}");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    let new = pid_after(&cluster.stderr(), "new library ready in").expect("new library pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), Signal::SIGKILL).expect("kill");
    cluster.await_log(
        "library restarted: telling the workers",
        1,
        Duration::from_secs(60),
    );
    let log = cluster.stderr();
    let third = log
        .rfind("library ready in")
        .and_then(|at| pid_after(&log[at..], "library ready in"))
        .expect("restarted library pid") as u32;
    std::thread::sleep(Duration::from_millis(500));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, _, pids) = tallies(&run);
    eprintln!("measured: crash after a handover: {failed} calls failed (in flight), {ok} ok");
    assert!(failed <= 16, "{failed}");
    for seen in &pids {
        assert!(seen.contains(&third), "{pids:?} {third}");
    }
}

/// A worker restarted while the new Library starts connects to the old one, then moves with
/// the others: no call of it fails, and it ends on the new Library.
#[test]
fn a_worker_started_during_the_handover_moves_with_the_others() {
    let dir = TempPath::new("dispatch-handover-new-worker");
    let cluster = start(&["--workers", "2", "--calls", "8", "--work-ms", "5"], &dir);
    let log = cluster.stderr();
    let worker = log
        .find("started the worker 1")
        .and_then(|at| pid_after(&log[at..], "started the worker 1"))
        .expect("worker 1 pid");
    std::fs::write(dir.0.join("slow-init"), b"").expect("marker");
    let master = cluster.pid();
    let asked = std::thread::spawn(move || admin(master, Request::ReloadLibrary));
    cluster.await_log("starting a new library", 1, Duration::from_secs(60));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGKILL).expect("kill");
    cluster.await_log("worker 1 ready in", 2, Duration::from_secs(60));
    let answer = asked.join().expect("admin thread");
    assert!(matches!(answer, Response::Done(_)), "{answer:?}");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let log = cluster.stderr();
    let new = pid_after(&log, "new library ready in").expect("new library pid") as u32;
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let (ok, failed, _, pids) = tallies(&run);
    eprintln!("measured: worker restarted during the handover: {ok} calls ok, {failed} failed");
    assert_eq!(failed, 0, "{}", run.stdout);
    for seen in &pids {
        assert!(seen.contains(&new), "{pids:?}");
    }
}
