//! `dispatch::testing` (issue 16, "Testing an app"): a cluster run from a `#[test]`, as a user
//! writes it. Two cluster tests and one plain test in one file, run by the default harness in
//! parallel threads: exactly two masters (the test process itself), two Libraries, 2 + 3
//! workers, the plain test run once (not again in any child), and when the last test ends no
//! child process and no runtime dir is left.
//!
//! Every process appends one line to a log named after the test process's pid (a child finds it
//! as its parent's pid: its master is the test process), before the test's cluster starts:
//! `<role> <test> <pid>`. The last of the three tests to finish reads it and checks the counts.

use dispatch::{Agent, Cluster, RestartPolicy, Role, Worker};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The tests of this file; the last to finish checks what all of them left.
const TESTS: usize = 3;
static FINISHED: AtomicUsize = AtomicUsize::new(0);
/// Workers of each cluster test.
const FIRST_WORKERS: usize = 2;
const SECOND_WORKERS: usize = 3;
/// A correctness bound on the whole file (idle: well under a second per cluster).
const BOUND: Duration = Duration::from_secs(120);

/// The service the workers call.
#[derive(Debug, Default)]
pub struct Doubler;

#[dispatch::library_service]
impl Doubler {
    /// `n` times two.
    pub fn double(&self, n: u64) -> u64 {
        n * 2
    }
}

/// The test process's pid: ours in the test process, our parent's (the master) in a child.
fn harness_pid() -> u32 {
    if dispatch::role().is_master() {
        std::process::id()
    } else {
        std::os::unix::process::parent_id()
    }
}

fn log_path(harness: u32) -> PathBuf {
    std::env::temp_dir().join(format!("testing-support-{harness}.log"))
}

/// Appends `<role> <test> <pid>` to the log (one `write` on an `O_APPEND` file: lines of
/// concurrent processes never interleave).
fn record(test: &str) {
    let role = match dispatch::role() {
        Role::Master => "master".to_owned(),
        Role::Library => "library".to_owned(),
        Role::Worker { id } => format!("worker{id}"),
    };
    let line = format!("{role} {test} {}\n", std::process::id());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(harness_pid()))
        .expect("open the log");
    file.write_all(line.as_bytes()).expect("write the log");
    if dispatch::role().is_master() {
        start_watchdog();
    }
}

/// Ends the test process (and so, by their parent-death signal, every child) if the file runs
/// past its bound.
fn start_watchdog() {
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(BOUND);
            eprintln!("testing_support: still running after {BOUND:?}: aborting");
            std::process::abort();
        });
    });
}

/// A cluster test's cluster: no restarts (a failure fails the test at once), short deadlines.
fn cluster(workers: usize) -> Cluster {
    Cluster::new()
        .workers(workers)
        .restart_policy(RestartPolicy::never())
        .library_ready_timeout(Duration::from_secs(20))
        .worker_ready_timeout(Duration::from_secs(20))
        .grace_period(Duration::from_secs(2))
}

/// Every worker makes calls and returns.
async fn app(worker: Worker) -> Result<(), dispatch::Error> {
    let id = u64::from(worker.id());
    for n in 0..10 {
        let doubled = Agent::get().doubler().double(id * 100 + n).await?;
        assert_eq!(doubled, (id * 100 + n) * 2);
    }
    Ok(())
}

#[test]
fn first_cluster() -> Result<(), dispatch::ClusterError> {
    record("first_cluster");
    let started = Instant::now();
    let result = dispatch::testing::run(cluster(FIRST_WORKERS), app);
    println!("measured: first_cluster ran in {:?}", started.elapsed());
    finished();
    result
}

#[test]
fn second_cluster() -> Result<(), dispatch::ClusterError> {
    record("second_cluster");
    let started = Instant::now();
    let result = dispatch::testing::run_named("second_cluster", cluster(SECOND_WORKERS), app);
    println!("measured: second_cluster ran in {:?}", started.elapsed());
    finished();
    result
}

#[test]
fn plain_test() {
    record("plain_test");
    finished();
}

/// Counts this test as finished; the last one checks the whole file's run.
fn finished() {
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == TESTS {
        check_everything();
    }
}

fn check_everything() {
    let me = std::process::id();
    let path = log_path(me);
    let log = std::fs::read_to_string(&path).expect("read the log");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<Vec<&str>> = log.lines().map(|l| l.split(' ').collect()).collect();
    let count = |role: &dyn Fn(&str) -> bool, test: &str| {
        lines.iter().filter(|l| role(l[0]) && l[1] == test).count()
    };
    let master = |r: &str| r == "master";
    let library = |r: &str| r == "library";
    let worker = |r: &str| r.starts_with("worker");
    println!(
        "measured: {} processes recorded: {} masters, {} Libraries, {} workers, {} plain test runs",
        lines.len(),
        lines
            .iter()
            .filter(|l| master(l[0]) && l[1] != "plain_test")
            .count(),
        lines.iter().filter(|l| library(l[0])).count(),
        lines.iter().filter(|l| worker(l[0])).count(),
        lines.iter().filter(|l| l[1] == "plain_test").count(),
    );
    assert_eq!(count(&master, "first_cluster"), 1, "{log}");
    assert_eq!(count(&master, "second_cluster"), 1, "{log}");
    assert_eq!(count(&library, "first_cluster"), 1, "{log}");
    assert_eq!(count(&library, "second_cluster"), 1, "{log}");
    assert_eq!(count(&worker, "first_cluster"), FIRST_WORKERS, "{log}");
    assert_eq!(count(&worker, "second_cluster"), SECOND_WORKERS, "{log}");
    // The plain test ran once, in the test process, and in no child.
    assert_eq!(count(&|_| true, "plain_test"), 1, "{log}");
    assert_eq!(count(&master, "plain_test"), 1, "{log}");
    assert_eq!(
        lines.len(),
        2 + 2 + FIRST_WORKERS + SECOND_WORKERS + 1,
        "{log}"
    );
    // Every master is this process.
    for l in lines.iter().filter(|l| master(l[0])) {
        assert_eq!(l[2], me.to_string(), "{log}");
    }

    // Nothing left: no recorded child alive, no child of this process at all, no runtime dir.
    for l in lines.iter().filter(|l| !master(l[0])) {
        let pid = l[2];
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "process {pid} ({} of {}) outlived its test",
            l[0],
            l[1]
        );
    }
    let children = children_of(me);
    assert!(children.is_empty(), "children left: {children:?}");
    let dirs = runtime_dirs_of(me);
    assert!(dirs.is_empty(), "runtime dirs left: {dirs:?}");
    println!("measured: no process and no runtime dir left after the last test");
}

/// The pids whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces, so read after the last `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Runtime dirs of masters in process `pid` (`dispatch-<pid>-…`), where dispatch makes them.
fn runtime_dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("dispatch-{pid}-");
    let mut bases = vec![std::env::temp_dir()];
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        bases.push(xdg.into());
    }
    bases
        .iter()
        .filter_map(|b| std::fs::read_dir(b).ok())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}
