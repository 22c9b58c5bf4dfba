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
