//! Why a message could not be sent.

use thiserror::Error;

/// Why a message could not be sent.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The value could not be encoded.
    #[error("cannot encode the message for topic `{topic}`: {message}")]
    Encode {
        /// The topic.
        topic: String,
        /// The encoder's error.
        message: String,
    },
    /// The encoded value is larger than a message can be.
    #[error("the message for topic `{topic}` is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// The topic.
        topic: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No process of the cluster has this pid.
    #[error("no process of the cluster has pid {pid}")]
    UnknownPid {
        /// The pid asked for.
        pid: u32,
    },
    /// The master rejected the message for another reason.
    #[error("the message was not delivered: {reason}")]
    Rejected {
        /// The master's reason.
        reason: String,
    },
    /// A receiver of the message is not keeping up: the master already holds its budget of
    /// messages for it (`Cluster::child_queue_bytes`). Nothing was sent; try again later, or
    /// send less. A receiver that stays behind is restarted by the master.
    #[error(
        "the message for topic `{topic}` was not sent: process {pid} is not keeping up with its \
         messages (the master holds its budget of bytes for it); retry later or send less"
    )]
    ReceiverBehind {
        /// The topic.
        topic: String,
        /// The pid of the receiver that is behind.
        pid: u32,
    },
    /// This process has queued its budget of messages for the master
    /// (`Cluster::outbox_bytes`) and the master has not read them yet. Nothing was sent;
    /// retry later or send less.
    #[error(
        "the message for topic `{topic}` was not sent: {queued} bytes already wait to be read by \
         the master (budget {budget}); retry later or send less"
    )]
    Backlog {
        /// The topic.
        topic: String,
        /// Bytes queued.
        queued: usize,
        /// The budget.
        budget: usize,
    },
    /// The topic's name starts with `dispatch:`: it is the runtime's own (lifecycle events,
    /// shared configuration), and only the runtime sends on it. A configuration changes through
    /// its source or `SharedConfig::set`, which validate every value.
    #[error(
        "topic `{topic}` is reserved for the runtime (names starting with `dispatch:`); use \
         another name for your own topics, and SharedConfig::set or the config's source to \
         change a shared configuration"
    )]
    Reserved {
        /// The topic.
        topic: String,
    },
    /// The master is gone: the process is exiting.
    #[error("the master is gone")]
    Closed,
}
