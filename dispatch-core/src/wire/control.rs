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

/// The control plane's protocol, the first field of the init message: a child checks it before
/// it decodes the rest, and refuses a master of another protocol (another build of the binary)
/// with a message that says so instead of misreading its frames. Bump it with any change of
/// the control messages' layout.
pub(crate) const CONTROL_PROTOCOL: u32 = 1;

/// Decodes the master's first message, refusing one of another [`CONTROL_PROTOCOL`].
pub(crate) fn decode_first(frame: &[u8]) -> Result<ToChild, String> {
    // `ToChild::Init`'s index, then `ChildInit::protocol`. A master from before the protocol
    // field sends the token's length (32) there.
    if let Ok((0_u32, protocol)) = super::codec::decode_prefix::<(u32, u32)>(frame) {
        if protocol != CONTROL_PROTOCOL {
            return Err(format!(
                "the master speaks control protocol {protocol} and this process {CONTROL_PROTOCOL}: \
                 they are different builds of the binary (replaced on disk without an upgrade?); \
                 restart the cluster, or deploy with `dispatchctl upgrade`"
            ));
        }
    }
    super::codec::decode(frame).map_err(|e| format!("undecodable control message: {e}"))
}

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
    /// To a worker, during a Library handover: a new Library listens at `path` and is ready.
    /// Send new calls there, let the calls in flight finish on the old connection, then answer
    /// [`ToMaster::LibrarySwitched`].
    LibraryMoved {
        /// The new Library's socket.
        path: PathBuf,
        /// The handover's number, echoed in the answer.
        generation: u64,
    },
    /// To the old Library, during a handover, once no worker calls it any more: take the
    /// services' snapshots and answer [`ToMaster::Snapshot`].
    Snapshot,
    /// To the new Library, during a handover: restore the services from the old one's
    /// snapshots (`None`: there are none, start fresh), then admit the calls held at its gate
    /// and answer [`ToMaster::Restored`].
    Restore {
        /// Each snapshot, by service name.
        state: Option<Vec<(String, ByteBuf)>>,
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
    /// [`CONTROL_PROTOCOL`]: always the first field.
    pub(crate) protocol: u32,
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
    /// To a Library started by a handover: hold calls to services with handover hooks at the
    /// gate until the master sends [`ToChild::Restore`].
    pub(crate) handover: bool,
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
    /// A worker moved to the new Library (see [`ToChild::LibraryMoved`]) and its calls on the
    /// old one finished.
    LibrarySwitched {
        /// The handover's number.
        generation: u64,
    },
    /// The old Library's snapshots (see [`ToChild::Snapshot`]), or why there are none.
    Snapshot {
        /// Each snapshot by service name, or the error.
        state: Result<Vec<(String, ByteBuf)>, String>,
    },
    /// The new Library restored its services and admits calls.
    Restored,
    /// A heartbeat: the child's runtime is making progress (sent by a task on it), with what
    /// it is doing, so that the master can say so if the heartbeats stop.
    Alive {
        /// Calls running now (the Library) or waiting for a reply (a worker).
        in_flight: u64,
        /// The Library's calls running now by `service.method` (at most
        /// [`MAX_BUSY_METHODS`], busiest first); empty from workers.
        methods: Vec<(String, u64)>,
        /// Since the process started: calls served (the Library) or made (a worker), and HTTP
        /// requests served; zeros unless a recycling limit needs them.
        served: Served,
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

/// A child's counts since it started, for recycling (`Recycle::max_calls`, `max_requests`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Served {
    /// Calls served (the Library) or made by the Agent (a worker).
    pub(crate) calls: u64,
    /// HTTP requests served (`dispatch::http::serve`, `Worker::count_request`).
    pub(crate) requests: u64,
}

/// The most methods a heartbeat lists: it stays a small frame.
pub(crate) const MAX_BUSY_METHODS: usize = 16;

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn an_init_of_another_protocol_is_refused_with_a_clear_message() {
        let init = ToChild::Init(Box::new(ChildInit {
            protocol: CONTROL_PROTOCOL,
            token: "0123456789abcdef0123456789abcdef".into(),
            library_socket: "/tmp/x/library.sock".into(),
            settings: Settings::default(),
            published: 0,
            members: Members::default(),
            handover: false,
        }));
        let ours = crate::wire::codec::encode(&init).expect("encode");
        assert!(matches!(decode_first(&ours), Ok(ToChild::Init(_))));
        // A newer master.
        let mut newer = ours.clone();
        newer[1] = (CONTROL_PROTOCOL + 1) as u8;
        let err = decode_first(&newer).expect_err("refused");
        assert!(err.contains("control protocol 2"), "{err}");
        assert!(err.contains("different builds"), "{err}");
        // A master from before the field: the token's length where the protocol is.
        let old = crate::wire::codec::encode(&(0_u32, "0123456789abcdef0123456789abcdef"))
            .expect("encode");
        let err = decode_first(&old).expect_err("refused");
        assert!(err.contains("control protocol 32"), "{err}");
    }
}
