//! The errors of starting, running and stopping a cluster.

use std::io;
use std::time::Duration;
use thiserror::Error;

/// Why a cluster could not start, or why it stopped with a failure.
///
/// Returned by [`Cluster::run`](crate::Cluster::run) in the master. Every variant's message says
/// which process failed and how.
///
/// Its `Debug` form is its message, so that `fn main() -> Result<(), ClusterError>` prints the
/// reason once, readably.
#[derive(Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A service's `init` failed in the Library, so the cluster did not start.
    #[error("the library failed to start: {message}")]
    LibraryInit {
        /// The init error, naming the service.
        message: String,
    },
    /// The Library did not report ready in time.
    #[error("the library did not become ready within {timeout:?}")]
    LibraryNotReady {
        /// The ready timeout.
        timeout: Duration,
    },
    /// The Library exited when it should not have.
    #[error("the library (pid {pid}) {status}")]
    LibraryExited {
        /// Its pid.
        pid: u32,
        /// How it ended (`exited with code 3`, `was killed by SIGKILL`…).
        status: String,
    },
    /// A worker did not report ready in time.
    #[error("worker {worker_id} (pid {pid}) did not become ready within {timeout:?}")]
    WorkerNotReady {
        /// The worker's id.
        worker_id: u32,
        /// Its pid.
        pid: u32,
        /// The ready timeout.
        timeout: Duration,
    },
    /// A worker failed: it exited non-zero, was killed by a signal, or could not start.
    #[error("worker {worker_id} (pid {pid}) {status}")]
    WorkerFailed {
        /// The worker's id.
        worker_id: u32,
        /// Its pid.
        pid: u32,
        /// How it ended, or why it could not start.
        status: String,
    },
    /// Processes crashed faster than the restart policy allows: the cluster stopped.
    #[error("crash loop: {crashes} crashes within {window:?} (the limit); the last: {last}")]
    CrashLoop {
        /// Crashes within the window.
        crashes: usize,
        /// The policy's window.
        window: Duration,
        /// The last crash, in words.
        last: String,
    },
    /// A process could not stay up: it crashed soon after each start, more times in a row than
    /// the restart policy allows ([`RestartPolicy::max_unstable_restarts`]), so the cluster
    /// stopped instead of restarting it forever.
    ///
    /// [`RestartPolicy::max_unstable_restarts`]: crate::RestartPolicy::max_unstable_restarts
    #[error(
        "the {process} cannot stay up: {runs} runs in a row ended within {min_uptime:?} of their \
         start; the last: {last}"
    )]
    CannotStayUp {
        /// `library` or `worker 3`.
        process: String,
        /// Unstable runs in a row.
        runs: u32,
        /// The policy's `min_uptime`.
        min_uptime: Duration,
        /// How the last run ended, with the process's own error when it sent one.
        last: String,
    },
    /// The master was stopped by a signal before the cluster was ready.
    #[error("received {signal} while starting: start aborted")]
    Interrupted {
        /// The signal's name.
        signal: &'static str,
    },
    /// An Agent could not complete its handshake with the Library.
    #[error("handshake with the library failed: {message}")]
    Handshake {
        /// What went wrong, naming the service and method for a manifest mismatch.
        message: String,
    },
    /// `Cluster::run` was called inside a tokio runtime (`#[tokio::main]` on `main`, say).
    #[error(
        "Cluster::run was called inside a tokio runtime: call it from a plain `fn main` (no \
         #[tokio::main]); every process of the cluster builds its own runtime"
    )]
    InsideRuntime,
    /// `Cluster::run` was already called in this process.
    #[error(
        "Cluster::run was already called in this process: a process plays one role in one \
         cluster (in a `#[test]`, start the cluster with `dispatch::testing::run`)"
    )]
    AlreadyRunning,
    /// `dispatch::testing::run` could not tell which test called it.
    #[error(
        "dispatch::testing::run cannot tell which test is running: it was called on thread \
         {thread:?}, not on a thread the test harness named after the test (the harness runs \
         tests on the main thread with --test-threads=1, and threads you start have their own \
         names); call dispatch::testing::run_named(\"path::to::test\", ...) instead"
    )]
    UnknownTest {
        /// The name of the calling thread, if it has one.
        thread: Option<String>,
    },
    /// A process of the cluster broke the control protocol.
    #[error("protocol error: {message}")]
    Protocol {
        /// What was received or missing.
        message: String,
    },
}

impl std::fmt::Debug for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every message already carries its source.
        std::fmt::Display::fmt(self, f)
    }
}

impl ClusterError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ClusterError::Io {
            context: context.into(),
            source,
        }
    }
}
