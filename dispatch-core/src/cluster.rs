//! The entry point: a builder for the cluster's settings and [`Cluster::run`], which plays this
//! process's role (master, Library or worker).

use crate::cluster_error::ClusterError;
use crate::role::Role;
use crate::worker::Worker;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// A cluster: one master, one Library, N app workers, all running this same binary.
///
/// Call [`Cluster::run`] at the start of `main`. In the process you started it becomes the
/// master: it starts the Library, waits until its services are up, starts the workers and
/// supervises them. It re-executes this binary for each child, and in a child `run` plays that
/// child's role and exits the process: the Library serves the registered services, a worker runs
/// `app`.
///
/// ```no_run
/// use dispatch_core::{Cluster, Worker};
///
/// fn main() -> Result<(), dispatch_core::ClusterError> {
///     Cluster::new().workers(2).run(|worker: Worker| async move {
///         println!("worker {} up", worker.id());
///         Ok::<(), std::io::Error>(())
///     })
/// }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Cluster {
    config: ClusterConfig,
}

/// The settings the master starts the cluster with.
#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    pub(crate) workers: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) library_ready_timeout: Duration,
    pub(crate) worker_ready_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) grace_period: Duration,
    pub(crate) max_frame: usize,
    pub(crate) max_in_flight: u32,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// A cluster with the defaults: one worker per core, 3 s call deadline, 30 s ready timeouts,
    /// 5 s grace period, 8 MiB frames.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Cluster {
            config: ClusterConfig {
                workers: cores,
                call_timeout: Duration::from_secs(3),
                library_ready_timeout: Duration::from_secs(30),
                worker_ready_timeout: Duration::from_secs(30),
                handshake_timeout: Duration::from_secs(1),
                grace_period: Duration::from_secs(5),
                max_frame: 8 << 20,
                max_in_flight: 1024,
            },
        }
    }

    /// How many app workers to run (at least 1). Default: the number of cores.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n.max(1);
        self
    }

    /// The deadline of a call that sets none. Default 3 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// How long the Library may take to initialise its services and listen. Default 30 s.
    pub fn library_ready_timeout(mut self, timeout: Duration) -> Self {
        self.config.library_ready_timeout = timeout;
        self
    }

    /// How long a worker may take to connect and report ready. Default 30 s.
    pub fn worker_ready_timeout(mut self, timeout: Duration) -> Self {
        self.config.worker_ready_timeout = timeout;
        self
    }

    /// How long a stopping process may take before it is killed. Default 5 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.grace_period = grace;
        self
    }

    /// The largest frame on the data plane, the same for requests and replies. Default 8 MiB;
    /// payloads get this less 1 KiB of envelope.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.config.max_frame = bytes.max(4096);
        self
    }

    /// How many calls of one worker the Library runs at once; more wait (backpressure).
    /// Default 1024.
    pub fn max_in_flight(mut self, calls: u32) -> Self {
        self.config.max_in_flight = calls.max(1);
        self
    }

    /// Plays this process's role.
    ///
    /// - In the master: starts and supervises the cluster; returns `Ok(())` when every worker
    ///   has finished with success or a stop signal (SIGTERM, SIGINT, SIGQUIT) stopped the
    ///   cluster, and an error when a process failed.
    /// - In the Library and in workers: runs that role and **exits the process** with its exit
    ///   code; it never returns. `app` runs only in workers; an `Err` from it exits the worker
    ///   with code 1 after logging the error.
    ///
    /// # Errors
    /// In the master, [`ClusterError`] says which process failed and how.
    pub fn run<F, Fut, E>(self, app: F) -> Result<(), ClusterError>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let role = Role::take_from_env()?;
        crate::logging::init();
        let worker_id = match &role {
            Role::Worker(env) => Some(env.worker_id),
            _ => None,
        };
        let span = crate::logging::process_span(role.name(), worker_id);
        let _entered = span.clone().entered();
        let runtime = crate::logging::runtime(&span)
            .map_err(|e| ClusterError::io("cannot start the tokio runtime", e))?;
        let code = match role {
            Role::Master => return runtime.block_on(crate::master::run(self.config)),
            Role::Library(env) => runtime.block_on(crate::library::run(env)),
            Role::Worker(env) => runtime.block_on(crate::worker::run(env, app)),
        };
        drop(runtime);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(code);
    }
}
