//! The entry point: a builder for the cluster's settings and [`Cluster::run`], which plays this
//! process's role (master, Library or worker).
//!
//! One concept despite its length: most of it is the builder's setters, one short documented
//! method per setting; `run` is the only logic.

use crate::cluster_error::ClusterError;
use crate::config::ConfigSource;
#[cfg(doc)]
use crate::config::SharedConfig;
use crate::master::{ClusterHandle, Command};
use crate::process::{exit, logging, role, Hooks, Launch, Setup};
use crate::settings::{LogFormat, Recycle, RestartPolicy, Runtime, Settings};
use crate::worker::Worker;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub mod testing;

/// Whether `Cluster::run` was called in this process: a second call is an error.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// A cluster: one master, one Library, N app workers, all running this same binary.
///
/// Call [`Cluster::run`] at the start of `main`. In the process you started it becomes the
/// master: it starts the Library, waits until its services are up, starts the workers and
/// supervises them. It re-executes this binary for each child, and in a child `run` plays that
/// child's role and exits the process: the Library serves the registered services, a worker runs
/// `app`.
///
/// ```no_run
/// use dispatch::{Cluster, Worker};
///
/// fn main() -> Result<(), dispatch::ClusterError> {
///     Cluster::new().workers(2).run(|worker: Worker| async move {
///         println!("worker {} up", worker.id());
///         Ok::<(), std::io::Error>(())
///     })
/// }
/// ```
#[derive(Debug)]
#[must_use]
pub struct Cluster {
    settings: Settings,
    hooks: Hooks,
    commands: mpsc::UnboundedSender<Command>,
    command_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<Command>>>>,
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
        let (commands, command_rx) = mpsc::unbounded_channel();
        Cluster {
            settings: Settings::default(),
            hooks: Hooks::default(),
            commands,
            command_rx: Arc::new(Mutex::new(Some(command_rx))),
        }
    }

    /// How many app workers to run (at least 1). Default: the number of cores.
    pub fn workers(mut self, n: usize) -> Self {
        self.settings.workers = n.max(1);
        self
    }

    /// The deadline of a call that sets none. Default 3 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.settings.call_timeout = timeout;
        self
    }

    /// How long the Library may take to initialise its services and listen. Default 30 s.
    pub fn library_ready_timeout(mut self, timeout: Duration) -> Self {
        self.settings.library_ready_timeout = timeout;
        self
    }

    /// How long a worker may take to connect and report ready. Default 30 s.
    pub fn worker_ready_timeout(mut self, timeout: Duration) -> Self {
        self.settings.worker_ready_timeout = timeout;
        self
    }

    /// Recycles the Library: once its resident memory exceeds `max_rss_bytes`, or once it has
    /// run for `max_age`, the master replaces it through a Library handover (no call fails;
    /// services with [`Handover`](crate::Handover) hooks keep their state). Checked every
    /// second; the reason is logged and shown by `dispatchctl status`. Default: never.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cluster = dispatch::Cluster::new()
    ///     .library_recycle(Some(2 << 30), Some(Duration::from_secs(24 * 3600)));
    /// # let _ = cluster;
    /// ```
    pub fn library_recycle(
        mut self,
        max_rss_bytes: Option<u64>,
        max_age: Option<Duration>,
    ) -> Self {
        self.settings.library_max_rss = max_rss_bytes;
        self.settings.library_max_age = max_age;
        self
    }

    /// How long a stopping process may take before it is killed. Default 5 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.settings.grace_period = grace;
        self
    }

    /// The largest frame on the data plane, the same for requests and replies. Default 8 MiB;
    /// payloads get this less 1 KiB of envelope.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.settings.max_frame = bytes.max(4096);
        self
    }

    /// How many calls of one worker the Library runs at once; more wait (backpressure).
    /// Default 1024.
    pub fn max_in_flight(mut self, calls: u32) -> Self {
        self.settings.max_in_flight = calls.max(1);
        self
    }

    /// When a worker is replaced by a fresh process: past a resident memory limit, after a
    /// number of requests or calls (with jitter), or at an age; see [`Recycle`]. Default: never.
    pub fn recycle(mut self, recycle: Recycle) -> Self {
        self.settings.recycle = recycle;
        self
    }

    /// The most workers [`ClusterHandle::scale`](crate::ClusterHandle::scale) (or
    /// `dispatchctl scale`) may ask for (at least 1). Default 1024.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.settings.max_workers = n.max(1);
        self
    }

    /// How crashed processes are restarted, and when a crash loop stops the cluster. Default:
    /// [`RestartPolicy::default`]; [`RestartPolicy::never`] stops at the first crash.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.settings.restart = policy;
        self
    }

    /// The liveness watchdog (gunicorn's `timeout`, systemd's `WatchdogSec`): every child's
    /// runtime sends the master a heartbeat over its control socket (every tenth of the
    /// timeout, at most every second); a ready process silent for `timeout` (a deadlock, a
    /// blocking call on its runtime, `SIGSTOP`) is shown `unresponsive`, logged with the calls
    /// it had in flight, killed and restarted. Work on the blocking pool (`#[blocking]`
    /// methods, `spawn_blocking`) does not stop the heartbeat. `None` turns the watchdog off.
    /// Default 10 s.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let cluster = dispatch::Cluster::new().liveness_timeout(Duration::from_secs(30));
    /// let without = dispatch::Cluster::new().liveness_timeout(None);
    /// # let _ = (cluster, without);
    /// ```
    pub fn liveness_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.settings.liveness_timeout = timeout.into().filter(|t| !t.is_zero());
        self
    }

    /// Binds a TCP listener on `addr` (`"127.0.0.1:8080"`; port 0 picks a free one) in the
    /// master before any worker starts, and hands it to every worker:
    /// [`Worker::listener`]. The kernel spreads connections over the workers; restarts and
    /// reloads never close it. Call again for more listeners.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.settings.listen.push(addr.into());
        self
    }

    /// Workers report ready only when the application calls [`Worker::ready`] (after warming
    /// caches, say), instead of as soon as their Agent is connected. The master's worker ready
    /// timeout applies, and a rolling reload waits for it.
    pub fn explicit_ready(mut self, explicit: bool) -> Self {
        self.settings.explicit_ready = explicit;
        self
    }

    /// How many messages the master holds for one process that is not ready (starting or
    /// restarting) before it drops the oldest, with a warning. Default 10 000.
    pub fn message_queue_limit(mut self, messages: usize) -> Self {
        self.settings.message_queue_limit = messages.max(1);
        self
    }

    /// How many bytes of messages the master holds for one child: its outgoing control queue
    /// while it runs, its mailbox while it starts or restarts. Default 64 MiB.
    ///
    /// A message for a running child whose queue is full is not queued: senders see
    /// [`MessageError::ReceiverBehind`](crate::MessageError::ReceiverBehind) until it catches up,
    /// and a child that leaves its queue full for [`child_queue_timeout`](Cluster::child_queue_timeout)
    /// is hung: logged with what it held, killed and restarted. A full mailbox drops its oldest
    /// message, counted and logged. At least 2 MiB (two of the largest control messages).
    pub fn child_queue_bytes(mut self, bytes: usize) -> Self {
        self.settings.child_queue_bytes = bytes.max(2 << 20);
        self
    }

    /// How long a child may leave its full queue (see
    /// [`child_queue_bytes`](Cluster::child_queue_bytes)) unread before the master treats it as
    /// hung: logs what it held, kills it and restarts it. Default 10 s.
    pub fn child_queue_timeout(mut self, timeout: Duration) -> Self {
        self.settings.child_queue_timeout = timeout;
        self
    }

    /// How many bytes of messages one process (the Library or a worker) may have queued for the
    /// master; past this, its sends fail with
    /// [`MessageError::Backlog`](crate::MessageError::Backlog) until the queue drains. Default
    /// 16 MiB, at least 2 MiB.
    pub fn outbox_bytes(mut self, bytes: usize) -> Self {
        self.settings.outbox_bytes = bytes.max(2 << 20);
        self
    }

    /// How many bytes of published values (the latest of each topic, replayed to processes
    /// that start later) the master keeps over every topic. A publish that would exceed it is
    /// refused with a logged error and the topic keeps its previous value. Default 16 MiB.
    pub fn published_bytes(mut self, bytes: usize) -> Self {
        self.settings.published_bytes = bytes;
        self
    }

    /// Runs `setup` in the Library before its services are constructed (with the messenger
    /// available): connect to an upstream, publish a first value. Its error aborts the
    /// Library's start (and so the cluster's) with that message.
    pub fn library_setup<F, Fut, E>(mut self, setup: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        self.hooks.library_setup.push(Setup::new(setup));
        self
    }

    /// Runs `setup` in every worker after its Agent is connected and before the worker reports
    /// ready and its application code runs: wait for a published value, warm a cache. Its
    /// error fails the worker's start.
    pub fn worker_setup<F, Fut, E>(mut self, setup: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        self.hooks.worker_setup.push(Setup::new(setup));
        self
    }

    /// A name for operators: `dispatchctl --cluster NAME` finds the cluster by it. Default: the
    /// binary's file name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Whether the Library keeps per-method metrics (calls, errors by kind, p50/p99), shown by
    /// `dispatchctl status --methods` and logged at shutdown. Default on.
    pub fn method_metrics(mut self, on: bool) -> Self {
        self.settings.method_metrics = on;
        self
    }

    /// The log format of every process. Default [`LogFormat::Text`]; `DISPATCH_LOG_FORMAT=json`
    /// in the environment also selects JSON. `RUST_LOG` filters either.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.settings.log_format = format;
        self
    }

    /// Declares a configuration of type `T` shared by the whole host: the Library loads it from
    /// `source` before its services start and publishes it; every worker gets it before its
    /// application code runs, then every later version. Read it anywhere in the Library or a
    /// worker with [`SharedConfig::<T>::get()`](SharedConfig::get).
    ///
    /// A failure to load it at start (Redis down, file missing, invalid value) aborts the
    /// cluster's start with a message naming the source, unless the source has a
    /// [`fallback`](ConfigSource::fallback).
    ///
    /// One configuration per type: declare distinct types (newtypes) for several. Declaring the
    /// same type again replaces the earlier declaration.
    ///
    /// ```no_run
    /// use dispatch::{Cluster, ConfigSource, SharedConfig, Worker};
    /// use futures::StreamExt;
    ///
    /// #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// struct AppConfig { greeting: String }
    ///
    /// fn main() -> Result<(), dispatch::ClusterError> {
    ///     Cluster::new()
    ///         .shared_config(ConfigSource::<AppConfig>::file("app.json"))
    ///         .run(|worker: Worker| async move {
    ///             let config = SharedConfig::<AppConfig>::get();
    ///             println!("starting with {}", config.latest().greeting);
    ///             let mut changes = config.watch();
    ///             while let Some(c) = changes.next().await {
    ///                 println!("worker {} config v{}: {:?}", worker.id(), c.version, c.value);
    ///             }
    ///             Ok::<(), std::io::Error>(())
    ///         })
    /// }
    /// ```
    pub fn shared_config<T>(self, source: ConfigSource<T>) -> Self
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let declared = crate::config::declare(source);
        self.library_setup(move || (declared.library)())
            .worker_setup(move || (declared.worker)())
    }

    /// Serves Prometheus metrics on `addr` (`"127.0.0.1:9100"`; port 0 picks a free one, logged
    /// as `metrics on http://…/metrics`): `GET /metrics` answers in the Prometheus text format
    /// with, per process (labels `role`, `worker_id`), its restarts, state, resident memory,
    /// uptime, calls and calls in flight, the master's queue for it and its budget, and per
    /// service method (labels `service`, `method`)
    /// its calls, errors by kind and a latency histogram. The master serves it; a scrape asks
    /// every process for its counters, as `dispatchctl status --methods` does. Default: off.
    pub fn metrics_addr(mut self, addr: impl Into<String>) -> Self {
        self.settings.metrics_addr = Some(addr.into());
        self
    }

    /// Writes each child's stdout and stderr to its own file in `dir` (created if missing):
    /// `library.log` and `worker-<id>.log`, appended to across restarts and reloads, as Egg
    /// writes one log per process. Each file holds one process slot's lines, whole and in
    /// order; the master keeps its own stdout and stderr. The files are not rotated: use
    /// `logrotate` with `copytruncate` (the children write with `O_APPEND`).
    ///
    /// Default: children share the master's stdout and stderr. There, a `tracing` event is
    /// formatted whole and written at once, a `println!` line that fits the standard library's
    /// 1 KiB line buffer too, and a pipe keeps writes of up to 4 KiB whole, so such lines do not
    /// interleave mid-line; longer ones may, and a `println!` line names no process: choose
    /// `log_dir` when either matters.
    pub fn log_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.settings.log_dir = Some(dir.into());
        self
    }

    /// The Library's tokio runtime. Default [`Runtime::CurrentThread`]: the cheapest per call,
    /// but a service method that blocks its thread (a plain `fn` not marked `#[blocking]`, a
    /// busy loop in an `async fn`, building a huge reply) holds up every call of every worker
    /// until it returns. With [`Runtime::MultiThread`] each call runs as its own task on one of
    /// `threads` threads, so such a method holds up only its own thread (the README's
    /// "Performance" section gives the cost per call). Either way a poll of a method that
    /// runs over 100 ms is logged, naming the method.
    ///
    /// The runtime is built before the master's init message arrives, so the Library reads this
    /// from its own `Cluster` builder: the same binary and the same `main` as the master's, so
    /// the same value, as long as `main` does not choose it by role.
    pub fn library_runtime(mut self, runtime: Runtime) -> Self {
        self.settings.library_runtime = runtime;
        self
    }

    /// Every worker's tokio runtime. Default [`Runtime::CurrentThread`], where
    /// `tokio::task::block_in_place` panics ("can call blocking only when running on the
    /// multi-threaded runtime") and a task that blocks holds up the whole worker; choose
    /// [`Runtime::MultiThread`] for either. Read by each worker from its own builder, as
    /// [`Cluster::library_runtime`] is. The master always runs a current-thread runtime.
    pub fn worker_runtime(mut self, runtime: Runtime) -> Self {
        self.settings.worker_runtime = runtime;
        self
    }

    /// Whether the Library and the workers set glibc's allocator so that buffers of large
    /// calls come from the heap and stay there, instead of a fresh `mmap` (and its page
    /// faults) each: allocations up to twice [`max_frame`](Cluster::max_frame) (at most
    /// 32 MiB) from the heap, and up to twice that of freed heap kept before it goes back to
    /// the kernel. Default `true`: a 1 MiB call costs about a third of the CPU it does without
    /// (README, Performance). Turn it off to keep glibc's defaults (for instance when the
    /// application tunes the allocator itself). Does nothing on other C libraries.
    pub fn tune_malloc(mut self, on: bool) -> Self {
        self.settings.tune_malloc = on;
        self
    }

    /// How many bytes of messages one topic that nobody has subscribed to may hold in a
    /// process, waiting for its first subscriber. Past it the oldest are dropped, counted, with
    /// a warning at most once a second. Default 4 MiB; at least one message's largest size
    /// (1 MiB).
    pub fn unclaimed_topic_bytes(mut self, bytes: usize) -> Self {
        self.settings.budgets.unclaimed_topic_bytes = bytes.max(1 << 20);
        self
    }

    /// How many bytes of messages all the topics nobody has subscribed to may hold together in
    /// a process (the Library and each worker). A message that does not fit is dropped,
    /// counted, with a warning at most once a second. Default 16 MiB; at least 1 MiB.
    pub fn unclaimed_bytes(mut self, bytes: usize) -> Self {
        self.settings.budgets.unclaimed_bytes = bytes.max(1 << 20);
        self
    }

    /// How many topics nobody has subscribed to may hold messages in a process. A message for
    /// one more such topic is dropped, counted, with a warning. Default 256.
    pub fn unclaimed_topics(mut self, topics: usize) -> Self {
        self.settings.budgets.unclaimed_topics = topics.max(1);
        self
    }

    /// How many bytes the Library may hold for partial frames (a frame whose length was read
    /// but whose bytes have not all arrived), over every connection of the data plane. A
    /// connection whose next frame would take the total past it is closed, and logged with its
    /// peer's pid. Default 64 MiB (8 frames of the default 8 MiB limit at once); at least one
    /// frame of [`max_frame`](Cluster::max_frame).
    pub fn partial_frame_bytes(mut self, bytes: usize) -> Self {
        self.settings.budgets.partial_frame_bytes = bytes;
        self
    }

    /// How many connections to the Library one process (told by its pid) may hold at once. A
    /// worker needs one (two for a moment while it reconnects); the cap keeps one process from
    /// taking every connection, so a restarted worker always gets in. Default 4.
    pub fn connections_per_process(mut self, connections: usize) -> Self {
        self.settings.budgets.connections_per_process = connections.max(1);
        self
    }

    /// Declares a schedule (issue 17): a task run by the clock, in the Library, on one worker
    /// per tick or on every worker, as [`Schedule`](crate::Schedule) says. The master keeps
    /// the clock, so a tick runs once on the host through worker restarts, rolling reloads and
    /// Library restarts (the `schedule` module's docs give the rules). Declaring a schedule of
    /// the same name again replaces it.
    ///
    /// Declare schedules the same way in every process (before [`Cluster::run`], not by role):
    /// the master dispatches each tick by name to a child, which runs its own copy of the code.
    pub fn schedule(mut self, schedule: crate::schedule::Schedule) -> Self {
        let crate::schedule::Schedule { spec, task } = schedule;
        self.settings.schedules.retain(|s| s.name != spec.name);
        self.hooks.tasks.insert(spec.name.clone(), task);
        self.settings.schedules.push(spec);
        self
    }

    /// Joins this cluster to a fleet: the hosts (one master each) sharing the Redis at `url`.
    /// A [`fleet_wide`](crate::Schedule::fleet_wide) schedule then runs each tick on one host
    /// of the fleet only: every master claims the tick in Redis (`SET … NX PX`) and the one
    /// that gets it runs it. A host that cannot reach Redis claims nothing (and logs it).
    /// Clusters of one fleet must have the same [`name`](Cluster::name) (the keys carry it).
    pub fn fleet(mut self, url: impl Into<String>) -> Self {
        self.fleet_mut().url = url.into();
        self
    }

    /// The fleet's settings, created empty (no URL yet) by the first fleet setter called.
    fn fleet_mut(&mut self) -> &mut crate::settings::FleetSettings {
        self.settings
            .fleet
            .get_or_insert_with(|| crate::settings::FleetSettings {
                url: String::new(),
                host: None,
                lease: Duration::from_secs(10),
                singletons: Vec::new(),
            })
    }

    /// This host's name in the fleet (see [`Cluster::fleet`]). Default: the hostname and the
    /// master's pid.
    pub fn fleet_host(mut self, host: impl Into<String>) -> Self {
        self.fleet_mut().host = Some(host.into());
        self
    }

    /// How long a fleet-wide tick's claim is kept in Redis, at least (also at least two
    /// periods of the schedule): longer than any skew between the hosts' clocks. Default 10 s.
    pub fn fleet_lease(mut self, lease: Duration) -> Self {
        self.fleet_mut().lease = lease.max(Duration::from_millis(100));
        self
    }

    /// Makes the hosted service `service` (its name as the Library lists it: `weather`) a
    /// fleet singleton: active in one host's Library of the fleet at a time, the leader
    /// elected by a renewed lease in the fleet's Redis (see [`Cluster::fleet`]: call that
    /// too: without it the Library refuses to start). On the other hosts the service is on standby: calls fail with
    /// [`Error::NotLeader`](crate::Error::NotLeader) or wait to lead, as `standby` says. When
    /// the leader's host dies, another takes over once its lease ([`Cluster::fleet_lease`])
    /// runs out; a Library that stops gives its lease up at once. `dispatchctl status` shows
    /// who leads.
    pub fn fleet_singleton(
        mut self,
        service: impl Into<String>,
        standby: crate::schedule::Standby,
    ) -> Self {
        let fleet = self.fleet_mut();
        let service = service.into();
        fleet.singletons.retain(|(s, _)| *s != service);
        fleet
            .singletons
            .push((service, standby == crate::schedule::Standby::Wait));
        self
    }

    /// A handle to reload or stop the cluster from another thread of the master.
    pub fn handle(&self) -> ClusterHandle {
        ClusterHandle::new(self.commands.clone())
    }

    /// Plays this process's role.
    ///
    /// - In the master: starts and supervises the cluster; returns `Ok(())` when every worker
    ///   has finished with success or a stop signal (SIGTERM, SIGINT, SIGQUIT) stopped the
    ///   cluster, and an error when the start failed, a process failed with restarts off, or
    ///   processes crashed in a loop. SIGHUP reloads the workers.
    ///
    ///   The children die with the thread that calls `run` (`PR_SET_PDEATHSIG`): call it from
    ///   the main thread, or one that lives as long as the cluster.
    /// - In the Library and in workers: runs that role and **exits the process** with its exit
    ///   code; it never returns. `app` runs only in workers; an `Err` from it exits the worker
    ///   with code 1 after logging the error.
    ///
    /// Call it from a plain `fn main` (not `#[tokio::main]`: every process builds its own
    /// runtime), and only once per process. Everything `main` does before `run` runs in every
    /// process of the cluster: use [`role`](crate::role) for what must run once.
    ///
    /// # Errors
    /// In the master, [`ClusterError`] says which process failed and how.
    /// [`ClusterError::InsideRuntime`] when called inside a tokio runtime, and
    /// [`ClusterError::AlreadyRunning`] when `run` was already called in this process (in a
    /// `#[test]`, use [`testing::run`](crate::testing::run)).
    pub fn run<F, Fut, E>(self, app: F) -> Result<(), ClusterError>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ClusterError::InsideRuntime);
        }
        if RUNNING.swap(true, Ordering::SeqCst) {
            return Err(ClusterError::AlreadyRunning);
        }
        self.play(app)
    }

    /// [`Cluster::run`] for `dispatch::testing`: the master re-executes the test binary with
    /// `child_args`, and may run beside other masters of the same test process.
    pub(crate) fn run_in_test<F, Fut, E>(
        mut self,
        child_args: Vec<std::ffi::OsString>,
        app: F,
    ) -> Result<(), ClusterError>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ClusterError::InsideRuntime);
        }
        self.settings.test_child_args = Some(child_args);
        self.play(app)
    }

    /// Plays this process's role (the body of [`Cluster::run`]).
    fn play<F, Fut, E>(self, app: F) -> Result<(), ClusterError>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let launch = Launch::take_from_env()?;
        if launch != Launch::Master {
            role::name_child_process();
            if self.settings.tune_malloc {
                crate::process::malloc::tune(self.settings.max_frame);
            }
        }
        let test_master = launch == Launch::Master && self.settings.test_child_args.is_some();
        logging::init(self.settings.log_format, test_master);
        let worker_id = match &launch {
            Launch::Worker(env) => Some(env.worker_id),
            _ => None,
        };
        let span = logging::process_span(launch.name(), worker_id);
        let _entered = span.clone().entered();
        let flavour = match &launch {
            Launch::Master => Runtime::CurrentThread,
            Launch::Library(_) => self.settings.library_runtime,
            Launch::Worker(_) => self.settings.worker_runtime,
        };
        let runtime = logging::runtime(&span, flavour)
            .map_err(|e| ClusterError::io("cannot start the tokio runtime", e))?;
        let code = match launch {
            Launch::Master => {
                let commands = self.command_rx.lock().ok().and_then(|mut rx| rx.take());
                let admin = self.commands.clone();
                return runtime.block_on(crate::master::run(self.settings, commands, admin));
            }
            Launch::Library(env) => runtime.block_on(crate::library::run(env, &self.hooks)),
            Launch::Worker(env) => runtime.block_on(crate::worker::run(env, &self.hooks, app)),
        };
        drop(runtime);
        exit::exit(code)
    }
}
