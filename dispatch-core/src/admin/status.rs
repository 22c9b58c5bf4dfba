//! What `dispatchctl status` shows: the cluster and each of its processes.

use crate::metrics::MethodStats;
use serde::{Deserialize, Serialize};

/// A running cluster, as its master sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster's name (`Cluster::name`, else the binary's name).
    pub name: String,
    /// The master's pid.
    pub master_pid: u32,
    /// Milliseconds since the master started.
    pub uptime_ms: u64,
    /// The shared listeners' addresses.
    pub listeners: Vec<String>,
    /// How many workers the master runs (its target: `Cluster::workers`, then `scale`).
    #[serde(default)]
    pub workers: u32,
    /// The Library and the workers, the Library first.
    pub processes: Vec<ProcessStatus>,
    /// Per-method metrics from the Library (empty unless asked for, or with metrics off).
    pub methods: Vec<MethodStats>,
    /// Each schedule: its target, last run and next run, and its counters (issue 17).
    #[serde(default)]
    pub schedules: Vec<ScheduleStatus>,
    /// Each fleet singleton service: whether this host leads it, and who does (issue 17).
    #[serde(default)]
    pub singletons: Vec<SingletonStatus>,
}

/// A fleet singleton service, as this host's Library last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingletonStatus {
    /// The service.
    pub service: String,
    /// Whether this host's Library serves it now.
    pub active: bool,
    /// The leading host, as the fleet's Redis says (`None`: none right now).
    pub leader: Option<String>,
}

/// One schedule, as its master sees it (`dispatchctl status --schedules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// Its name.
    pub name: String,
    /// `every 200ms` or `cron */5 * * * * * (UTC)`.
    pub trigger: String,
    /// `library`, `one-worker` or `all-workers`.
    pub target: String,
    /// Once per fleet rather than once per host.
    pub fleet: bool,
    /// The next tick, in milliseconds since the Unix epoch.
    pub next_run_ms: Option<u64>,
    /// The last run that ended on this host.
    pub last_run: Option<LastRun>,
    /// Runs started on this host.
    pub runs: u64,
    /// Runs that failed (an error, a panic, a timeout, or the process died mid-run).
    pub failures: u64,
    /// Ticks skipped: the previous run still going (with `Overlap::Skip`), or the fleet's Redis
    /// unreachable.
    pub skips: u64,
    /// Ticks that found no process to run them before the next tick.
    pub missed: u64,
    /// Fleet-wide ticks that another host claimed.
    pub elsewhere: u64,
    /// Runs going now.
    pub running: u64,
}

/// How a schedule's last run went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// Its tick (scheduled time, milliseconds since the Unix epoch).
    pub tick: u64,
    /// Where it ran: `library (pid 12)` or `worker 2 (pid 15)`.
    pub process: String,
    /// How long it ran, in milliseconds.
    pub elapsed_ms: u64,
    /// `None`: it succeeded; else why it failed.
    pub error: Option<String>,
}

/// One process of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// `library` or `worker`.
    pub role: String,
    /// The worker's id (none for the Library).
    pub worker_id: Option<u32>,
    /// Its pid.
    pub pid: u32,
    /// `starting`, `ready`, `replacing` (a reload's or recycle's new worker, not ready yet),
    /// `retiring` (replaced by a reload or a recycle, stopping), `removing` (scaled down,
    /// stopping), `unresponsive` (silent past the liveness timeout:
    /// being killed and restarted) or `broken` (it broke the control protocol or stopped
    /// reading its messages: it is being killed, and its slot restarted).
    pub state: String,
    /// How often this slot's process was restarted after a crash.
    pub restarts: u32,
    /// Milliseconds since this process started.
    pub uptime_ms: u64,
    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub rss_kib: Option<u64>,
    /// Calls served (the Library) or made (a worker); none if it did not answer in time.
    pub calls: Option<u64>,
    /// Calls running now (the Library) or waiting for a reply (a worker).
    pub in_flight: Option<u64>,
    /// How the slot's last process that failed ended (`was killed by SIGKILL: broke the
    /// control protocol: …`), if one did.
    #[serde(default)]
    pub last_failure: Option<String>,
    /// How often this slot's worker was recycled (see `Recycle`).
    #[serde(default)]
    pub recycles: u32,
    /// Why this slot's worker was last recycled (`rss 130 MiB > 100 MiB`,
    /// `1037 requests (limit 1000+37 jitter)`, `age 1h > 1h`), if it was.
    #[serde(default)]
    pub last_recycle: Option<String>,
    /// Bytes of messages the master holds for this process now (its outgoing control queue).
    #[serde(default)]
    pub queued_bytes: u64,
    /// Messages the master holds for this process now.
    #[serde(default)]
    pub queued_messages: u64,
    /// The master's budget for that queue (`Cluster::child_queue_bytes`).
    #[serde(default)]
    pub queue_budget_bytes: u64,
    /// The Library's last handover: why (`requested`, or the recycling limit it crossed), how
    /// long it took, which pid it replaced. None for workers.
    #[serde(default)]
    pub last_handover: Option<String>,
}
