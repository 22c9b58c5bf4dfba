//! Issue 12, the control plane: no child can hurt the master. Each test reproduces one fault
//! found from outside against a real cluster (`dispatch-fixture-budgets`) and prints what it
//! measured: the peak resident memory of the master and the Library (`VmHWM` in
//! `/proc/<pid>/status`), the time to recover.
//!
//! The budgets are set small here (16 MiB per child, 2 s before a full queue is hung) to keep
//! the tests short; the bounds asserted are the budget plus 32 MiB, and times with wide margins.

mod support;

use dispatch::admin::{discover, Request, Response};
use dispatch::ClusterStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use support::{pid_after, Cluster, TempPath};

const MIB: u64 = 1 << 20;
/// The per-child budget the tests set (`--queue-mib`).
const BUDGET_MIB: u64 = 16;

fn fixture() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_dispatch-fixture-budgets").into()
}

/// Starts the budgets fixture (through the support guard: own process group, killed on drop).
fn start(args: &[&str]) -> Cluster {
    Cluster::start_bin(fixture(), args, &[])
}

/// `(VmHWM, VmRSS)` of `pid` in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn pid_of(cluster: &Cluster, needle: &str) -> u32 {
    pid_after(&cluster.stderr(), needle)
        .unwrap_or_else(|| panic!("no pid after {needle:?} in\n{}", cluster.stderr())) as u32
}

fn status(master: u32, methods: bool) -> ClusterStatus {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let found = discover()
            .expect("discover")
            .select(Some(&master.to_string()))
            .expect("our cluster");
        match found.request(Request::Status { methods }).await {
            Ok(Response::Status(status)) => status,
            other => panic!("status: {other:?}"),
        }
    })
}

/// Row 1: the Library floods `send_to_app` (200,000 × 1 KiB) while worker 1 is SIGSTOPped.
#[test]
fn row1_a_flood_to_a_stopped_worker_stays_within_the_masters_budget() {
    let marker = TempPath::new("dispatch-budgets-row1");
    let cluster = start(&[
        "flood",
        "--workers",
        "2",
        "--queue-mib",
        "16",
        "--queue-timeout-ms",
        "2000",
        "--count",
        "200000",
        "--size",
        "1024",
        "--delay-ms",
        "1000",
        "--marker",
        &marker.as_str(),
    ]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(30));
    let worker1 = pid_of(&cluster, "worker 1 ready");
    let library = pid_of(&cluster, "library ready in");
    let _ = kill(Pid::from_raw(worker1 as i32), Signal::SIGSTOP);
    let started = Instant::now();
    cluster.await_stdout("RESULT flood", 1, Duration::from_secs(180));
    let took = started.elapsed();
    let (master_peak, master_now) = memory(cluster.pid());
    let (library_peak, _) = memory(library);
    let stdout = cluster.stdout();
    let flood = stdout
        .lines()
        .find(|l| l.starts_with("RESULT flood"))
        .unwrap_or_default();
    println!(
        "measured: row 1: master peak {} (now {}), library peak {}; flood {took:?}: {flood}",
        mib(master_peak),
        mib(master_now),
        mib(library_peak)
    );
    let log = cluster.stderr();
    assert!(log.contains("is not keeping up with its messages"), "{log}");
    assert!(log.contains("it is hung; killing it"), "{log}");
    assert!(flood.contains("sent=200000"), "{flood}");
    assert_master_within_budget(master_peak);
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(30)).assert_success();
}

fn blocked_worker(size: &str, row: &str) {
    let marker = TempPath::new(&format!("dispatch-budgets-{row}"));
    let cluster = start(&[
        "blocked",
        "--workers",
        "2",
        "--queue-mib",
        "16",
        "--queue-timeout-ms",
        "2000",
        "--count",
        "1000",
        "--size",
        size,
        "--delay-ms",
        "500",
        "--marker",
        &marker.as_str(),
    ]);
    cluster.await_stdout("RESULT blocking", 1, Duration::from_secs(30));
    let started = Instant::now();
    cluster.await_stdout("RESULT blocked", 1, Duration::from_secs(300));
    let took = started.elapsed();
    let (master_peak, master_now) = memory(cluster.pid());
    let stdout = cluster.stdout();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT blocked"))
        .unwrap_or_default();
    println!(
        "measured: {row}: 1000 × {size} B: master peak {} (now {}); {took:?}: {line}",
        mib(master_peak),
        mib(master_now)
    );
    // Messages already on their way when the senders learnt that worker 1 was behind were
    // dropped for it, counted and logged; it is then found hung and replaced.
    cluster.await_log(
        "is not keeping up with its messages",
        1,
        Duration::from_secs(10),
    );
    cluster.await_log("it is hung; killing it", 1, Duration::from_secs(30));
    cluster.await_log("worker 1 ready", 2, Duration::from_secs(30));
    let (master_peak, _) = memory(cluster.pid());
    assert!(line.contains("sent=1000"), "{line}");
    assert_master_within_budget(master_peak);
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(30)).assert_success();
}

/// Row 2: worker 1's runtime is blocked; worker 0 sends 1000 × 512 KiB to every worker.
#[test]
fn row2_a_worker_that_never_reads_is_hung_and_the_master_stays_within_budget() {
    blocked_worker("524288", "row 2 (512 KiB)");
}

/// Row 2, second half: 1000 messages of (almost) the largest size to a child that never reads.
#[test]
fn row2_the_largest_messages_to_a_worker_that_never_reads() {
    blocked_worker("1040000", "row 2 (1 MiB)");
}

/// Row 3: two published values of 700 kB each, then the Library is SIGKILLed: it comes back.
#[test]
fn row3_published_values_over_a_frame_in_total_do_not_break_a_restart() {
    let cluster = start(&[
        "publish",
        "--workers",
        "1",
        "--library-ready-timeout-ms",
        "4000",
    ]);
    cluster.await_stdout("RESULT published", 1, Duration::from_secs(30));
    let library = pid_of(&cluster, "library ready in");
    let killed = Instant::now();
    let _ = kill(Pid::from_raw(library as i32), Signal::SIGKILL);
    cluster.await_log("library restarted", 1, Duration::from_secs(20));
    let recovered = killed.elapsed();
    let stdout = cluster.stdout();
    let starts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT library_start"))
        .collect();
    println!("measured: row 3: the Library was back {recovered:?} after SIGKILL; {starts:?}");
    assert_eq!(starts.len(), 2, "{stdout}");
    assert!(starts[1].contains("published=2"), "{}", starts[1]);
    assert!(recovered < Duration::from_secs(10), "{recovered:?}");
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(30)).assert_success();
}

/// Row 4: a worker writes one Broadcast of exactly 1 MiB on its control socket. The master
/// refuses it (over the message limit), and every writer keeps working: a later broadcast
/// arrives and SIGTERM stops the cluster at once, the Library's close hooks included.
#[test]
fn row4_a_frame_sized_broadcast_is_refused_and_every_writer_keeps_working() {
    let cluster = start(&["raw-broadcast", "--workers", "2"]);
    cluster.await_stdout("RESULT after_library", 1, Duration::from_secs(30));
    cluster.await_stdout("RESULT after_worker worker=1", 1, Duration::from_secs(10));
    let stdout = cluster.stdout();
    let recovery: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("RESULT after_"))
        .collect();
    let log = cluster.stderr();
    assert!(log.contains("a message was not delivered"), "{log}");
    assert!(log.contains("the limit is"), "{log}");
    let stopping = Instant::now();
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    let stop = stopping.elapsed();
    println!("measured: row 4: next broadcast after the 1 MiB frame: {recovery:?}; SIGTERM → exit {stop:?}");
    run.assert_success();
    assert_eq!(
        run.lines("RESULT library_closed").len(),
        1,
        "{}",
        run.stdout
    );
    let worst = recovery
        .iter()
        .filter_map(|l| support::field(l, "latency_us")?.parse::<u64>().ok())
        .max()
        .unwrap_or(u64::MAX);
    assert!(worst < 10_000_000, "recovery took {worst} µs");
    assert!(stop < Duration::from_secs(10), "{stop:?}");
}

fn garbage(kind: &str) {
    let marker = TempPath::new(&format!("dispatch-budgets-garbage-{kind}"));
    let cluster = start(&[
        "garbage",
        "--workers",
        "2",
        "--garbage",
        kind,
        "--marker",
        &marker.as_str(),
    ]);
    // The worker is killed before its stdout is flushed: the master's log says when it spoke.
    cluster.await_log("broke the control protocol", 1, Duration::from_secs(30));
    let noticed = Instant::now();
    cluster.await_log("worker 1 ready", 2, Duration::from_secs(20));
    let recovered = noticed.elapsed();
    let status = status(cluster.pid(), false);
    let worker1 = status
        .processes
        .iter()
        .find(|p| p.worker_id == Some(1))
        .expect("worker 1 in the status");
    println!(
        "measured: row 11 ({kind}): worker 1 ready again {recovered:?} after the master noticed; status: state={} restarts={} last_failure={:?}",
        worker1.state, worker1.restarts, worker1.last_failure
    );
    assert_eq!(worker1.restarts, 1);
    assert!(
        worker1
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("broke the control protocol")),
        "{worker1:?}"
    );
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(30)).assert_success();
}

/// Row 11: a frame that does not decode.
#[test]
fn row11_an_undecodable_frame_gets_the_child_killed_restarted_and_shown() {
    garbage("undecodable");
}

/// Row 11: a 4 GiB length prefix.
#[test]
fn row11_a_huge_length_prefix_gets_the_child_killed_restarted_and_shown() {
    garbage("huge");
}

/// Row 13: a worker answering stats nobody asked it for cannot fake the Library's metrics.
#[test]
fn row13_stats_are_taken_only_from_the_process_asked_and_methods_only_from_the_library() {
    let cluster = start(&["forge-stats", "--workers", "2"]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(30));
    for _ in 0..5 {
        let status = status(cluster.pid(), true);
        let forged: Vec<_> = status
            .methods
            .iter()
            .filter(|m| m.service == "forged")
            .collect();
        assert!(forged.is_empty(), "forged metrics shown: {forged:?}");
    }
    println!("measured: row 13: 5 × status --methods, no forged metrics shown");
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(30)).assert_success();
}

/// Row 13: the mailbox of a restarting Library is bounded in bytes (1000 × 1 MiB sent to it).
#[test]
fn row13_the_mailbox_of_a_restarting_process_is_bounded_in_bytes() {
    let marker = TempPath::new("dispatch-budgets-mailbox");
    let cluster = start(&[
        "mailbox",
        "--workers",
        "1",
        "--queue-mib",
        "16",
        "--count",
        "1000",
        "--size",
        "1040000",
        "--marker",
        &marker.as_str(),
    ]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(30));
    let library = pid_of(&cluster, "library ready in");
    let _ = kill(Pid::from_raw(library as i32), Signal::SIGKILL);
    cluster.await_stdout("RESULT mailbox", 1, Duration::from_secs(300));
    cluster.await_log("library restarted", 1, Duration::from_secs(30));
    let (master_peak, master_now) = memory(cluster.pid());
    let stdout = cluster.stdout();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT mailbox"))
        .unwrap_or_default();
    println!(
        "measured: row 13 (mailbox): master peak {} (now {}); {line}",
        mib(master_peak),
        mib(master_now)
    );
    assert!(
        cluster.stderr().contains("mailbox is full"),
        "{}",
        cluster.stderr()
    );
    assert_master_within_budget(master_peak);
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(30)).assert_success();
}

/// Row 13: a failure reason with a newline cannot forge a log line in the master's log. (The
/// worker logs its own error as it is, once: that line is its own business.)
#[test]
fn row13_a_childs_failure_reason_is_escaped_in_the_log() {
    let run = Cluster::start_bin(fixture(), &["forge-reason", "--workers", "1"], &[])
        .wait(Duration::from_secs(30));
    assert!(!run.status.success());
    let forged: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("FORGED-LINE"))
        .collect();
    println!(
        "measured: row 13 (reason): forged lines in the log: {}",
        forged.len()
    );
    assert_eq!(forged.len(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("bad\\nFORGED-LINE"), "{}", run.stderr);
}

/// The bound on the master in rows 1, 2 and 13: its budget plus 32 MiB.
fn assert_master_within_budget(master_peak: u64) {
    assert!(
        master_peak < (BUDGET_MIB + 32) * MIB,
        "master peak {} over budget + 32 MiB",
        mib(master_peak)
    );
}
