//! The messenger: one-way typed messages between the processes of a cluster (Egg's IPC API),
//! routed by the master over the control sockets.
//!
//! Sending queues the message to the master and returns; the master delivers it to each
//! receiver in order (per sender and receiver), holding it (bounded) while a receiver is
//! starting or restarting. In the receiving process, messages wait (bounded) for the first
//! subscriber of their topic, so a message that arrives before the application subscribed is
//! not lost.

mod endpoint;
mod error;
mod reserved;
mod subscription;
mod topics;

pub use endpoint::Messenger;
pub use error::MessageError;
pub(crate) use reserved::RESERVED_REFUSAL;
pub use subscription::{Received, Subscription};

/// Messages kept per topic for a subscriber that has not subscribed yet; past this the oldest
/// is dropped, counted, with a warning. Byte budgets apply as well (per topic, in total, and a
/// cap on such topics: `Cluster::unclaimed_topic_bytes`, `unclaimed_bytes`, `unclaimed_topics`).
pub const UNCLAIMED_LIMIT: usize = 1024;
