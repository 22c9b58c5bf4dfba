//! The control plane's messages: what the master and each child say to each other over the
//! child's private socket pair ([`ControlChannel`](super::ControlChannel)).

use crate::metrics::MethodStats;
use crate::settings::Settings;
use crate::topic::Members;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::path::PathBuf;

/// The largest control message.
pub(crate) const MAX_CONTROL_FRAME: usize = 1 << 20;
/// The largest message (payload and topic name): a control frame less room for the envelope.
/// The envelope of a [`ToChild::Deliver`] or a [`ToMaster::Send`] is a few dozen bytes, so a
/// message accepted under this limit is forwarded in one frame.
pub(crate) const MAX_MESSAGE: usize = MAX_CONTROL_FRAME - 4096;

/// The start of a [`ToChild::Sent`] error saying that the receiver (its pid follows) is not
/// keeping up with its messages.
pub(crate) const BEHIND: &str = "receiver behind: pid ";

/// Master → child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ToChild {
    /// The first message: what the child needs to join the cluster.
    Init(Box<ChildInit>),
    /// Every process of the cluster is ready.
    ClusterReady,
    /// The Library was restarted and is ready again: reconnect now.
    LibraryRestarted,
    /// Stop: a worker lets its app drain, the Library closes its services.
    Shutdown,
    /// A message for this process.
    Deliver(Incoming),
    /// The outcome of a send that asked for one.
    Sent {
        /// The send's sequence number.
        seq: u64,
        /// Why it could not be delivered, if it could not.
        error: Option<String>,
    },
    /// The cluster's live processes changed.
    Members(Members),
    /// Report your call counts (and, from the Library, per-method metrics).
    StatsRequest {
        /// Echoed in the answer.
        id: u64,
    },
    /// The processes whose queues in the master are full now (empty: none): a message for one
    /// of them fails with `MessageError::ReceiverBehind` until it catches up.
    Behind {
        /// Their pids.
        pids: Vec<u32>,
    },
    /// Run a schedule's task for one tick (issue 17); answered by [`ToMaster::TaskDone`].
    RunTask(TaskOrder),
}

/// A tick of a schedule for one process to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskOrder {
    /// The run's number, unique in the master's life: echoed in the report.
    pub(crate) run: u64,
    /// The schedule's name.
    pub(crate) schedule: String,
    /// The tick: its scheduled time in milliseconds since the Unix epoch.
    pub(crate) tick: u64,
    /// Cancel the run (and report it failed) after this long.
    pub(crate) timeout: Option<std::time::Duration>,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskReport {
    /// The run's number, from its [`TaskOrder`].
    pub(crate) run: u64,
    /// `Err`: why it failed (its error, a panic, its timeout, no code by that name).
    pub(crate) result: Result<(), String>,
    /// How long it ran.
    pub(crate) elapsed: std::time::Duration,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Target {
    /// The Library and every worker, the sender included.
    Broadcast,
    /// Every worker.
    App,
    /// The Library.
    Library,
    /// One worker, chosen by the master.
    Random,
    /// One process.
    Pid(u32),
}

/// A message on its way to the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outgoing {
    /// Non-zero when the sender waits for a [`ToChild::Sent`] answer.
    pub(crate) seq: u64,
    pub(crate) target: Target,
    pub(crate) topic: String,
    pub(crate) payload: ByteBuf,
    /// Kept by the master as the topic's latest value, replayed to processes that start later.
    pub(crate) retain: bool,
}

/// A message delivered to a process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Incoming {
    /// The sender's pid (0: the master itself).
    pub(crate) from: u32,
    pub(crate) topic: String,
    pub(crate) payload: ByteBuf,
    /// The version of a published (retained) value, numbered by the master per topic from 1;
    /// 0 for an ordinary message.
    pub(crate) version: u64,
}

/// What a child needs to join the cluster: the master's first message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildInit {
    /// The cluster's secret: an Agent proves membership with it.
    pub(crate) token: String,
    /// Where the Library listens.
    pub(crate) library_socket: PathBuf,
    /// The cluster's settings, as the master holds them.
    pub(crate) settings: Settings,
    /// How many published values follow this message, each in its own [`ToChild::Deliver`]
    /// (so that no size of published values can make the init message exceed a frame). The
    /// child reads them before any of its setup runs: a restarted Library resumes from them, a
    /// worker starts with them.
    pub(crate) published: u32,
    /// The cluster's live processes when the child was started: a restarted Library knows every
    /// worker before it serves its first call (egg#1743).
    pub(crate) members: Members,
}

/// Child → master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ToMaster {
    /// The child is ready: the Library has initialised its services and listens; a worker's
    /// Agent is connected and has checked the manifest.
    Ready {
        /// The Library's services (`demo (2 methods), …`); empty for a worker.
        services: String,
    },
    /// The child could not start, and says why before it exits.
    Failed {
        /// The reason, naming the service or step that failed.
        reason: String,
    },
    /// A message to route.
    Send(Outgoing),
    /// The answer to a [`ToChild::StatsRequest`].
    Stats {
        /// The request's id.
        id: u64,
        /// Calls served (the Library) or made (a worker).
        calls: u64,
        /// Calls running or waiting now.
        in_flight: u64,
        /// The Library's per-method metrics; empty from workers.
        methods: Vec<MethodStats>,
    },
    /// A heartbeat: the child's runtime is making progress (sent by a task on it), with what
    /// it is doing, so that the master can say so if the heartbeats stop.
    Alive {
        /// Calls running now (the Library) or waiting for a reply (a worker).
        in_flight: u64,
        /// The Library's calls running now by `service.method` (at most
        /// [`MAX_BUSY_METHODS`], busiest first); empty from workers.
        methods: Vec<(String, u64)>,
    },
    /// A run ordered by [`ToChild::RunTask`] ended.
    TaskDone(TaskReport),
    /// The Library's role for a fleet singleton service changed (issue 17).
    FleetRole {
        /// The service.
        service: String,
        /// Whether this host's Library serves it now.
        active: bool,
        /// The leading host, as the fleet's Redis says.
        leader: Option<String>,
    },
}

/// The most methods a heartbeat lists: it stays a small frame.
pub(crate) const MAX_BUSY_METHODS: usize = 16;
