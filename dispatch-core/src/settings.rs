//! The cluster's settings: one type, built by [`Cluster`](crate::Cluster)'s methods in the
//! master and handed to every child as it is, in its init message. Every process reads the same
//! values in the same units; nothing converts them on the way.
//!
//! A leaf: this module imports nothing else of the crate.
//!
//! Restarts follow [`RestartPolicy`]: a crash is restarted at once the first time; if the
//! restarted process crashes again before it has run for [`RestartPolicy::reset_after`], the
//! next restart waits, the wait growing by [`RestartPolicy::backoff_factor`] up to
//! [`RestartPolicy::max_backoff`] (PM2's scheme). Over all processes, more than
//! [`RestartPolicy::crash_limit`] crashes within [`RestartPolicy::crash_window`] is a crash loop:
//! the cluster stops (cfork's limit, OTP's intensity/period).
//!
//! A process that cannot stay up ends the cluster too (PM2's `min_uptime`/`max_restarts`): a
//! run shorter than [`RestartPolicy::min_uptime`] is *unstable*; after
//! [`RestartPolicy::max_unstable_restarts`] restarts that each ended unstable, the next unstable
//! crash stops the cluster with the process's own last error. A run of at least `min_uptime`
//! is restarted at once and starts its backoff over, so a Library that stays up between crashes
//! is never out for longer than its restart takes.
//!
//! Liveness: every child's runtime sends the master a heartbeat (every tenth of
//! `liveness_timeout`, at most every second); a ready child silent for `liveness_timeout` is
//! unresponsive and is killed and restarted.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The settings of a cluster, the same in every process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// How many app workers run.
    pub(crate) workers: usize,
    /// The deadline of a call that sets none.
    pub(crate) call_timeout: Duration,
    /// How long the Library may take to become ready.
    pub(crate) library_ready_timeout: Duration,
    /// How long a worker may take to become ready.
    pub(crate) worker_ready_timeout: Duration,
    /// How long a peer of the Library has to complete its handshake.
    pub(crate) handshake_timeout: Duration,
    /// How long a stopping process may take before it is killed.
    pub(crate) grace_period: Duration,
    /// The frame limit on the data plane, the same on both sides.
    pub(crate) max_frame: usize,
    /// The Library's per-connection cap on calls in flight.
    pub(crate) max_in_flight: u32,
    /// How crashed processes are restarted.
    pub(crate) restart: RestartPolicy,
    /// The addresses of the shared listeners the master binds.
    pub(crate) listen: Vec<String>,
    /// Whether workers report ready only when the application says so.
    pub(crate) explicit_ready: bool,
    /// Messages the master holds for a process that is not ready.
    pub(crate) message_queue_limit: usize,
    /// The cluster's name, if one was given.
    pub(crate) name: Option<String>,
    /// Whether the Library keeps per-method metrics.
    pub(crate) method_metrics: bool,
    /// How every process writes its logs.
    pub(crate) log_format: LogFormat,
    /// Where the master serves Prometheus metrics, if anywhere.
    pub(crate) metrics_addr: Option<String>,
    /// Where each child's stdout and stderr go, one file per slot; `None`: the master's own.
    pub(crate) log_dir: Option<std::path::PathBuf>,
    /// How long a ready child may go without a heartbeat before it is killed as unresponsive;
    /// `None`: no liveness watchdog.
    pub(crate) liveness_timeout: Option<Duration>,
    /// Bytes the master holds for one child: its outgoing control queue while it runs, its
    /// mailbox while it starts or restarts.
    pub(crate) child_queue_bytes: usize,
    /// How long a child may leave its full queue unread before it is treated as hung.
    pub(crate) child_queue_timeout: Duration,
    /// Bytes of messages a child may have queued for the master before its sends fail.
    pub(crate) outbox_bytes: usize,
    /// Bytes of published (retained) values the master keeps, over every topic.
    pub(crate) published_bytes: usize,
    /// The Library's tokio runtime. Read by each process from its own builder: the runtime is
    /// built before the init message arrives.
    pub(crate) library_runtime: Runtime,
    /// Every worker's tokio runtime (read as `library_runtime` is).
    pub(crate) worker_runtime: Runtime,
    /// Set glibc's allocator thresholds for large calls in the Library and the workers
    /// (`process/malloc.rs`; read as `library_runtime` is).
    pub(crate) tune_malloc: bool,
    /// Set by `dispatch::testing` in a master run from a `#[test]`: the arguments children get
    /// instead of this process's (they make the test binary run only that test). The master
    /// then also leaves the process's signals alone. Only the master reads it: not sent.
    #[serde(skip)]
    pub(crate) test_child_args: Option<Vec<std::ffi::OsString>>,
    /// What the data plane and the messenger may hold in memory (issue 12).
    pub(crate) budgets: DataBudgets,
    /// Replace the Library through a handover once its resident memory exceeds this many
    /// bytes; `None`: never for its memory.
    pub(crate) library_max_rss: Option<u64>,
    /// Replace the Library through a handover once it has run this long; `None`: never for
    /// its age.
    pub(crate) library_max_age: Option<Duration>,
    /// When a worker is replaced by a fresh one (issue 14). Default: never.
    #[serde(default)]
    pub(crate) recycle: Recycle,
    /// The most workers `scale` may ask for. Default 1024.
    #[serde(default = "default_max_workers")]
    pub(crate) max_workers: usize,
    /// The schedules (issue 17): the master keeps their clock and dispatches each tick.
    #[serde(default)]
    pub(crate) schedules: Vec<ScheduleSpec>,
    /// The fleet (hosts sharing one Redis) for fleet-wide schedules and singletons (issue 17).
    #[serde(default)]
    pub(crate) fleet: Option<FleetSettings>,
}

fn default_max_workers() -> usize {
    1024
}

/// When the master replaces a worker by a fresh process (PM2's `max_memory_restart`,
/// gunicorn's `max_requests` with `max_requests_jitter`): start-new-first, as a rolling reload
/// does, so no request is lost. Only one worker is recycled at a time, never while a reload
/// runs, and recycles are at least [`min_interval`](Recycle::min_interval) apart (a worker
/// past its memory limit does not wait), so that workers never retire together; the most
/// overdue worker goes first. The reason is logged and shown by `dispatchctl status`.
///
/// ```no_run
/// use dispatch::Recycle;
/// use std::time::Duration;
///
/// let cluster = dispatch::Cluster::new().recycle(Recycle {
///     max_rss_bytes: Some(512 << 20),
///     max_requests: Some(10_000),
///     max_requests_jitter: 1_000,
///     max_age: Some(Duration::from_secs(24 * 3600)),
///     ..Recycle::default()
/// });
/// # let _ = cluster;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recycle {
    /// Replace a worker whose resident memory (`VmRSS` in `/proc/<pid>/status`, read by the
    /// master four times a second) passes this many bytes. Default: no limit.
    pub max_rss_bytes: Option<u64>,
    /// Replace a worker after it served this many HTTP requests (counted by
    /// `dispatch::http::serve`, or by the application with
    /// [`Worker::count_request`](crate::Worker::count_request)), plus its jitter. The counts
    /// reach the master with the worker's heartbeats (then at least every 250 ms), so a busy
    /// worker serves a little past its limit before its replacement is ready. Default: no
    /// limit.
    pub max_requests: Option<u64>,
    /// Replace a worker after its Agent made this many calls to the Library, plus its jitter.
    /// Default: no limit.
    pub max_calls: Option<u64>,
    /// Each worker's limits are `max_requests` (or `max_calls`) plus a number drawn uniformly
    /// in `0..=max_requests_jitter` for each new process, so that workers started together do
    /// not reach them together. Default 0.
    pub max_requests_jitter: u64,
    /// Replace a worker that has run this long. Default: no limit.
    pub max_age: Option<Duration>,
    /// The shortest time between two recycles (from one old worker told to stop to the next).
    /// A worker past `max_rss_bytes` does not wait for it. Default 1 s.
    pub min_interval: Duration,
}

impl Default for Recycle {
    fn default() -> Self {
        Recycle {
            max_rss_bytes: None,
            max_requests: None,
            max_calls: None,
            max_requests_jitter: 0,
            max_age: None,
            min_interval: Duration::from_secs(1),
        }
    }
}

impl Recycle {
    /// Whether any limit is set.
    pub(crate) fn enabled(&self) -> bool {
        self.max_rss_bytes.is_some() || self.counts() || self.max_age.is_some()
    }

    /// Whether a limit needs the worker's counts (sent with its heartbeats).
    pub(crate) fn counts(&self) -> bool {
        self.max_requests.is_some() || self.max_calls.is_some()
    }
}

/// The memory budgets of the data plane and of each process's messenger, in bytes (issue 12;
/// SECURITY.md lists each with its test). Sized for a small host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DataBudgets {
    /// Bytes of messages one topic nobody subscribed to may hold in a process. Default 4 MiB.
    pub(crate) unclaimed_topic_bytes: usize,
    /// Bytes of messages all such topics together may hold in a process. Default 16 MiB.
    pub(crate) unclaimed_bytes: usize,
    /// How many topics nobody subscribed to may hold messages in a process. Default 256.
    pub(crate) unclaimed_topics: usize,
    /// Bytes the Library holds for partial frames (read but not yet complete), over every
    /// data-plane connection. Default 64 MiB.
    pub(crate) partial_frame_bytes: usize,
    /// Data-plane connections one process (by its pid) may hold at once. Default 4.
    pub(crate) connections_per_process: usize,
}

impl Default for DataBudgets {
    fn default() -> Self {
        DataBudgets {
            unclaimed_topic_bytes: 4 << 20,
            unclaimed_bytes: 16 << 20,
            unclaimed_topics: 256,
            partial_frame_bytes: 64 << 20,
            connections_per_process: 4,
        }
    }
}

impl Default for Settings {
    /// One worker per core, 3 s call deadline, 30 s ready timeouts, 5 s grace period, 8 MiB
    /// frames; 64 MiB held by the master per child (10 s before a child that leaves it full is
    /// hung), 16 MiB per child's queue to the master, 16 MiB of published values.
    fn default() -> Self {
        Settings {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            call_timeout: Duration::from_secs(3),
            library_ready_timeout: Duration::from_secs(30),
            worker_ready_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(1),
            grace_period: Duration::from_secs(5),
            max_frame: 8 << 20,
            max_in_flight: 1024,
            restart: RestartPolicy::default(),
            listen: Vec::new(),
            explicit_ready: false,
            message_queue_limit: 10_000,
            name: None,
            method_metrics: true,
            log_format: LogFormat::default(),
            metrics_addr: None,
            log_dir: None,
            liveness_timeout: Some(Duration::from_secs(10)),
            child_queue_bytes: 64 << 20,
            child_queue_timeout: Duration::from_secs(10),
            outbox_bytes: 16 << 20,
            published_bytes: 16 << 20,
            library_runtime: Runtime::default(),
            worker_runtime: Runtime::default(),
            tune_malloc: true,
            budgets: DataBudgets::default(),
            recycle: Recycle::default(),
            max_workers: default_max_workers(),
            test_child_args: None,
            library_max_rss: None,
            library_max_age: None,
            schedules: Vec::new(),
            fleet: None,
        }
    }
}

impl Settings {
    /// The cluster's name: the one given, else the binary's file name.
    pub(crate) fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::env::args_os()
                .next()
                .and_then(|a| {
                    std::path::Path::new(&a)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "dispatch".into())
        })
    }

    /// How often a child's runtime proves it is making progress: a tenth of the liveness
    /// timeout, at most every second (at least every 10 ms); `None` with the watchdog off.
    /// A recycling limit on the workers' counts (they travel with the heartbeats) makes it at
    /// most 250 ms, watchdog or not.
    pub(crate) fn heartbeat_interval(&self) -> Option<Duration> {
        let every = self.liveness_timeout.map(|t| {
            (t / 10)
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(10))
        });
        if !self.recycle.counts() {
            return every;
        }
        let counts = Duration::from_millis(250);
        Some(every.map_or(counts, |every| every.min(counts)))
    }
}

/// How processes write their logs (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers; span fields (role, worker_id, pid) included.
    Json,
}

/// The tokio runtime a process of the cluster runs on: [`Cluster::library_runtime`] and
/// [`Cluster::worker_runtime`](crate::Cluster::worker_runtime).
///
/// [`Cluster::library_runtime`]: crate::Cluster::library_runtime
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Runtime {
    /// One thread runs every task of the process (the default): the fastest for inter-process
    /// calls, but a task that blocks its thread or spins holds up every other task of the
    /// process, and `tokio::task::block_in_place` panics ("can call blocking only when running
    /// on the multi-threaded runtime").
    #[default]
    CurrentThread,
    /// `threads` worker threads (at least 1) that steal each other's tasks: a task blocking one
    /// thread leaves the others running; `block_in_place` works. In the Library, each call then
    /// runs as its own task.
    MultiThread {
        /// How many worker threads (tokio's `worker_threads`).
        threads: usize,
    },
}

/// How the master restarts crashed processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Whether crashed processes are restarted at all. Without restarts, the first crash stops
    /// the cluster with an error.
    pub enabled: bool,
    /// The wait before the second restart in a row (the first is immediate). Default 100 ms.
    pub initial_backoff: Duration,
    /// How much each further wait grows. Default 1.5.
    pub backoff_factor: f64,
    /// The longest wait. Default 15 s.
    pub max_backoff: Duration,
    /// A process that ran this long before crashing starts the backoff over. Default 30 s;
    /// [`min_uptime`](RestartPolicy::min_uptime) does the same when it is shorter (as by
    /// default).
    pub reset_after: Duration,
    /// More crashes than this within `crash_window`, over all processes, stop the cluster.
    /// Default 60.
    pub crash_limit: u32,
    /// The window of `crash_limit`. Default 60 s.
    pub crash_window: Duration,
    /// A run shorter than this, from start to crash, is *unstable*; a longer one is restarted
    /// at once and starts the backoff over. Default 5 s.
    pub min_uptime: Duration,
    /// How many restarts in a row a process may get after unstable runs: its next unstable
    /// crash stops the cluster with its last error. Default 10 (at the default backoff, an
    /// always-crashing process ends the cluster within about a minute).
    pub max_unstable_restarts: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            backoff_factor: 1.5,
            max_backoff: Duration::from_secs(15),
            reset_after: Duration::from_secs(30),
            crash_limit: 60,
            crash_window: Duration::from_secs(60),
            min_uptime: Duration::from_secs(5),
            max_unstable_restarts: 10,
        }
    }
}

impl RestartPolicy {
    /// No restarts: the first crash stops the cluster.
    pub fn never() -> Self {
        RestartPolicy {
            enabled: false,
            ..RestartPolicy::default()
        }
    }

    /// The wait before restarting after the `consecutive`-th crash in a row (1-based).
    pub(crate) fn backoff(&self, consecutive: u32) -> Duration {
        if consecutive <= 1 {
            return Duration::ZERO;
        }
        let exp = i32::try_from(consecutive - 2).unwrap_or(i32::MAX);
        let wait = self.initial_backoff.as_secs_f64() * self.backoff_factor.max(1.0).powi(exp);
        Duration::try_from_secs_f64(wait)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_backs_off_by_half_up_to_the_cap() {
        let p = RestartPolicy::default();
        assert_eq!(p.backoff(1), Duration::ZERO);
        assert_eq!(p.backoff(2), Duration::from_millis(100));
        assert_eq!(p.backoff(3), Duration::from_millis(150));
        assert_eq!(p.backoff(4), Duration::from_millis(225));
        assert_eq!(p.backoff(100), Duration::from_secs(15));
    }

    #[test]
    fn settings_cross_the_control_socket_unchanged() {
        let s = Settings {
            call_timeout: Duration::from_micros(1_234_567),
            name: Some("x".into()),
            ..Settings::default()
        };
        let bytes = bincode::serialize(&s).expect("encode");
        let back: Settings = bincode::deserialize(&bytes).expect("decode");
        assert_eq!(back.call_timeout, s.call_timeout);
        assert_eq!(back.name, s.name);
        assert_eq!(back.restart, s.restart);
    }
}

/// When a schedule's ticks fall (issue 17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Trigger {
    /// Every `Duration`, aligned to the Unix epoch: ticks fall on multiples of the interval, so
    /// every host names them the same (a skewed clock fires them late or early).
    Every(Duration),
    /// A cron expression (5 or 6 fields, seconds optional) in an IANA time zone.
    Cron {
        /// The expression, as given (checked when the schedule was declared).
        expr: String,
        /// The IANA zone name (`UTC`, `Europe/Paris`).
        zone: String,
    },
}

/// Where a schedule's task runs at each tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// In the Library, once per tick (Egg's agent).
    Library,
    /// On one worker per tick, chosen by the master: a ready worker that is not being replaced,
    /// the least busy one (egg-schedule's `type: 'worker'`).
    OneWorker,
    /// On every ready worker (egg-schedule's `type: 'all'`).
    AllWorkers,
}

/// What a tick does when the previous run of its schedule is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Skip the tick, counted as a skip (the default).
    Skip,
    /// Run it anyway, beside the previous run.
    Allow,
}

/// A schedule as the master holds it: everything but its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScheduleSpec {
    /// Its name: unique in the cluster, the key of its code in every process.
    pub(crate) name: String,
    pub(crate) trigger: Trigger,
    pub(crate) target: Target,
    /// Run once as soon as the cluster is ready.
    pub(crate) immediate: bool,
    /// Each run starts up to this much after its tick (uniformly at random).
    pub(crate) jitter: Duration,
    /// A run still going after this fails (and is cancelled).
    pub(crate) timeout: Option<Duration>,
    pub(crate) overlap: Overlap,
    /// Once per fleet (hosts sharing the fleet's Redis) rather than once per host.
    pub(crate) fleet: bool,
    /// At start, run the latest tick missed while no host ran the schedule (fleet-wide
    /// schedules: the fleet's Redis remembers the last tick run).
    #[serde(default)]
    pub(crate) catch_up: bool,
}

/// The fleet: hosts (one master each) sharing one Redis (issue 17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FleetSettings {
    /// The Redis URL.
    pub(crate) url: String,
    /// This host's name in the fleet (default: hostname and master pid).
    pub(crate) host: Option<String>,
    /// How long a tick's claim and a leader's lease last without renewal.
    pub(crate) lease: Duration,
    /// The fleet-wide singleton services, by name, and whether a call on a standby host waits
    /// for leadership (up to its deadline) rather than failing with `NotLeader`.
    pub(crate) singletons: Vec<(String, bool)>,
}
