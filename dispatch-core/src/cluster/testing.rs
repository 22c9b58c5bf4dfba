//! Testing a cluster app with `cargo test`: run a whole cluster (master, Library, workers) from a
//! `#[test]` function.
//!
//! [`Cluster::run`] re-executes the binary for every child with the same arguments. In a test
//! binary that means the whole test harness again, in every child: each child would run every
//! test of the file (and start clusters of its own). [`run`] instead re-executes the test binary
//! with the arguments `<this test> --exact --nocapture --test-threads=1 --include-ignored --quiet`, so
//! the harness in a child runs this one test only; its body calls [`run`] again, which there
//! plays the child's role (Library or worker) and ends the child process. In the test's own
//! process, [`run`] is the master: it starts and supervises the cluster, and returns when every
//! worker's `app` has returned (`Ok(())` when all returned `Ok`), after stopping the Library.
//!
//! ```no_run
//! use dispatch::{Cluster, Worker};
//!
//! #[derive(Default)]
//! pub struct Greeter;
//!
//! #[dispatch::library_service]
//! impl Greeter {
//!     pub fn hello(&self, name: String) -> String {
//!         format!("hello {name}")
//!     }
//! }
//!
//! #[test]
//! fn workers_reach_the_library() -> Result<(), dispatch::ClusterError> {
//!     dispatch::testing::run(Cluster::new().workers(2), |worker: Worker| async move {
//!         let reply = dispatch::Agent::get().greeter().hello(format!("{}", worker.id())).await?;
//!         assert_eq!(reply, format!("hello {}", worker.id()));
//!         Ok::<(), dispatch::Error>(())
//!     })
//! }
//! # fn main() {}
//! ```
//!
//! What to know:
//!
//! - **Call it from a plain `#[test]` fn** (not `#[tokio::test]`: every process builds its own
//!   runtime; inside one, [`ClusterError::InsideRuntime`]). Several cluster tests may run at
//!   once in one test process (the harness runs tests in parallel threads): each has its own
//!   master, runtime dir and children.
//! - **The test's body before `run` runs in every process** of its cluster (as `main` before
//!   [`Cluster::run`] does): use [`role`](crate::role) for what must run once.
//! - **Failures.** A worker whose `app` returns an error or panics fails the cluster (with
//!   restarts on, it is restarted first, as in production: pass
//!   [`RestartPolicy::never`](crate::RestartPolicy::never) to stop at the first failure), and
//!   `run` returns the [`ClusterError`]: return it from the test, or `unwrap` it, to fail the
//!   test. An `assert!` in `app` panics in the worker, which then exits with an error.
//! - **Nothing outlives the test.** `run` returns only after every child has exited and the
//!   runtime dir is removed. If the test's thread ends any other way (a panic in the master, the
//!   harness killed), the children die with that thread: they are started with
//!   `PR_SET_PDEATHSIG`, which fires when the *thread* that started them exits. Do not call
//!   `run` from a thread you spawn and detach.
//! - **The test name** comes from the name of the calling thread, which the harness names after
//!   the test, except when it runs tests on the main thread (`--test-threads=1`): then `run`
//!   fails with [`ClusterError::UnknownTest`]; call [`run_named`] with the test's path. A wrong
//!   name makes the children run no test and exit at once: the start then fails, the Library
//!   having exited before it was ready.
//! - **Signals.** The test's master installs no signal handlers: Ctrl-C ends `cargo test` as
//!   usual (the children die with it; the runtime dirs left are removed by the next cluster's
//!   start). SIGHUP reloads do not apply.
//! - **Output.** The master's logs go through the harness's capture (shown for a failing test,
//!   or with `--nocapture`); the children's logs and prints go straight to the terminal.
//!
//! The same binary may still call [`Cluster::run`] in its own `main` (a custom harness): that
//! path is unchanged, and there a second cluster in one process is
//! [`ClusterError::AlreadyRunning`].

use super::Cluster;
use crate::cluster_error::ClusterError;
use crate::process::role;
use crate::worker::Worker;
use std::ffi::OsString;
use std::future::Future;

/// Runs `cluster` from the `#[test]` function that calls it, finding the test's name from the
/// calling thread (see the [module docs](self)).
///
/// In the test's process (the master) it returns when the cluster has finished and everything
/// it started is gone; in the cluster's children it plays their role and exits the process.
///
/// # Errors
/// What [`Cluster::run`] returns in the master; [`ClusterError::UnknownTest`] when the calling
/// thread is not named after a test (use [`run_named`]); [`ClusterError::InsideRuntime`] inside
/// a tokio runtime.
pub fn run<F, Fut, E>(cluster: Cluster, app: F) -> Result<(), ClusterError>
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !role().is_master() {
        // A child: the harness ran this test on its main thread; the name is not needed.
        return cluster.run_in_test(Vec::new(), app);
    }
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => run_named(name, cluster, app),
        other => Err(ClusterError::UnknownTest {
            thread: other.map(str::to_owned),
        }),
    }
}

/// [`run`] for the test whose full path (as `cargo test -- --list` shows it, without `: test`)
/// is `test_name`: for tests the harness runs on the main thread (`--test-threads=1`) or
/// clusters started from another thread of the test.
///
/// # Errors
/// As [`run`], without [`ClusterError::UnknownTest`].
pub fn run_named<F, Fut, E>(test_name: &str, cluster: Cluster, app: F) -> Result<(), ClusterError>
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    cluster.run_in_test(child_args(test_name), app)
}

/// The arguments that make a child's test harness run `test_name` only, on its main thread,
/// without capturing its output, even when the test is `#[ignore]`d (run with `--ignored`), and
/// without a `test … ...` line of its own (`--quiet`).
fn child_args(test_name: &str) -> Vec<OsString> {
    [
        test_name,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
        "--quiet",
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_args_select_one_test_exactly() {
        let args = child_args("tests::a_cluster");
        assert_eq!(args[0], "tests::a_cluster");
        assert!(args.iter().any(|a| a == "--exact"));
        assert!(args.iter().any(|a| a == "--test-threads=1"));
    }

    #[test]
    fn a_thread_not_named_after_a_test_is_a_clear_error() {
        for name in [None, Some("main")] {
            let mut builder = std::thread::Builder::new();
            if let Some(name) = name {
                builder = builder.name(name.to_owned());
            }
            let result = builder
                .spawn(|| {
                    run(Cluster::new(), |_: Worker| async {
                        Ok::<(), std::io::Error>(())
                    })
                })
                .expect("spawn")
                .join()
                .expect("join");
            match result {
                Err(e @ ClusterError::UnknownTest { .. }) => {
                    assert!(e.to_string().contains("run_named"), "{e}");
                }
                other => panic!("expected UnknownTest for thread {name:?}, got {other:?}"),
            }
        }
    }
}
