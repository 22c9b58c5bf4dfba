//! The re-exec model's traps, each met with a clear message: `Cluster::run` inside a tokio
//! runtime, a second `Cluster::run`, a service crate that is not linked, and code that must run
//! once (`dispatch::role()`). Real processes, from the `dispatch-guards` fixture.

mod support;

use std::time::Duration;
use support::Cluster;

const LIMIT: Duration = Duration::from_secs(60);

fn guards() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_dispatch-guards").into()
}

#[test]
fn run_inside_a_tokio_runtime_says_to_use_a_plain_main() {
    let run = Cluster::start_bin(guards(), &["tokio-main"], &[]).wait(LIMIT);
    assert!(!run.status.success(), "must fail: {run:?}");
    // `fn main() -> Result<(), ClusterError>` prints the Debug form: the message, once.
    let wanted = "Error: Cluster::run was called inside a tokio runtime: call it from a plain \
                  `fn main` (no #[tokio::main])";
    assert!(run.stderr.contains(wanted), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("inside a tokio runtime").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Cannot start a runtime"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_second_run_in_one_process_is_an_error_not_a_cascade() {
    let run = Cluster::start_bin(guards(), &["twice"], &[]).wait(LIMIT);
    assert!(!run.status.success(), "must fail: {run:?}");
    assert!(run.stdout.contains("first run returned"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("Error: Cluster::run was already called in this process"),
        "{}",
        run.stderr
    );
    // One master, one Library, one worker: the first run's processes only.
    assert_eq!(
        run.stderr.matches("started the library").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn a_service_that_is_not_linked_is_explained() {
    let run = Cluster::start_bin(guards(), &["unlinked"], &[]).wait(LIMIT);
    run.assert_success();
    assert!(
        run.stderr.contains("the library hosts no services"),
        "the Library warns: {}",
        run.stderr
    );
    let line = run.lines("call error:").join("\n");
    assert!(
        line.contains("the library has no service `demo`") && line.contains("not linked"),
        "the caller's error says why: {line}"
    );
}

#[test]
fn role_tells_each_process_what_it_is_before_run() {
    let run = Cluster::start_bin(guards(), &["role"], &[]).wait(LIMIT);
    run.assert_success();
    let before = run.lines("role before run:");
    assert_eq!(
        before.iter().filter(|l| l.contains("Master")).count(),
        1,
        "{before:?}"
    );
    assert_eq!(
        before.iter().filter(|l| l.contains("Library")).count(),
        1,
        "{before:?}"
    );
    assert_eq!(
        before
            .iter()
            .filter(|l| l.contains("Worker { id: 0 }"))
            .count(),
        1,
        "{before:?}"
    );
    assert_eq!(
        run.lines("role in worker 0: Worker { id: 0 }").len(),
        1,
        "{}",
        run.stdout
    );
}

#[test]
fn log_dir_gives_each_process_its_own_file_of_whole_lines() {
    let dir = std::env::temp_dir().join(format!("guards-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_string_lossy().into_owned();
    let run = Cluster::start_bin(guards(), &["log-dir", &dir_arg], &[]).wait(LIMIT);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let (library, worker) = (read("library.log"), read("worker-0.log"));
    let _ = std::fs::remove_dir_all(&dir);
    run.assert_success();
    assert!(library.contains("library ready"), "library.log: {library}");
    assert!(!library.contains("long line"), "library.log: {library}");
    let long = format!("long line from worker 0: {} end", "x".repeat(64 << 10));
    assert!(
        worker.lines().any(|l| l == long),
        "worker-0.log holds the 64 KiB line whole, on a line of its own"
    );
    assert!(
        worker.contains("worker ready"),
        "worker-0.log: {worker:.300}"
    );
    // The master keeps its own stdout and stderr, without the children's lines.
    assert!(run.stderr.contains("cluster ready"), "{}", run.stderr);
    assert!(!run.stderr.contains("worker ready"), "{}", run.stderr);
    assert!(!run.stdout.contains("long line"), "{:.300}", run.stdout);
    println!(
        "measured: library.log {} bytes, worker-0.log {} bytes",
        library.len(),
        worker.len()
    );
}
