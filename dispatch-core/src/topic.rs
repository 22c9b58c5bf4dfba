//! Typed topics: a name and the type of the values sent under it, declared once and shared by
//! senders and receivers, so nobody handles raw bytes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// A message topic carrying values of type `T`.
///
/// ```
/// use dispatch::Topic;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Reload { reason: String }
/// const RELOAD: Topic<Reload> = Topic::new("reload");
/// assert_eq!(RELOAD.name(), "reload");
/// ```
pub struct Topic<T> {
    name: &'static str,
    ty: PhantomData<fn() -> T>,
}

impl<T> Topic<T> {
    /// A topic named `name`. Names starting with `dispatch:` are reserved for the runtime
    /// ([`events`](crate::events), shared configuration): the [`Messenger`](crate::Messenger)
    /// refuses to send on them with `MessageError::Reserved`, and the master refuses them from
    /// any process but the Library's runtime.
    pub const fn new(name: &'static str) -> Self {
        Topic {
            name,
            ty: PhantomData,
        }
    }

    /// The topic's name on the wire.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// The prefix of the runtime's own topics.
pub(crate) const RESERVED_PREFIX: &str = "dispatch:";

/// The one reserved topic family a worker may send on: a `SharedConfig::set` to the Library
/// (`config::Topics`), which validates it and publishes it only if its source is in memory.
pub(crate) const WORKER_CONFIG_SET_PREFIX: &str = "dispatch:config-set:";

/// Whether `name` is one of the runtime's own topics.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Topic<T> {}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", self.name)
    }
}

/// The cluster's lifecycle, delivered to every process through the messenger like any other
/// message: `Messenger::get().on(&events::WORKER_EXITED)`.
pub mod events {
    use super::*;

    /// Every process of the cluster is ready (Egg's `egg-ready`).
    pub const CLUSTER_READY: Topic<ClusterReady> = Topic::new("dispatch:cluster-ready");
    /// A worker (started, restarted or reloaded) became ready.
    pub const WORKER_STARTED: Topic<WorkerStarted> = Topic::new("dispatch:worker-started");
    /// A worker exited.
    pub const WORKER_EXITED: Topic<WorkerExited> = Topic::new("dispatch:worker-exited");
    /// The Library was restarted and is ready again.
    pub const LIBRARY_RESTARTED: Topic<LibraryRestarted> = Topic::new("dispatch:library-restarted");

    /// The payload of [`CLUSTER_READY`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ClusterReady {
        /// How many workers the cluster runs.
        pub workers: u32,
    }

    /// The payload of [`WORKER_STARTED`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct WorkerStarted {
        /// The worker's id.
        pub worker_id: u32,
        /// Its pid.
        pub pid: u32,
    }

    /// The payload of [`WORKER_EXITED`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct WorkerExited {
        /// The worker's id.
        pub worker_id: u32,
        /// Its pid.
        pub pid: u32,
        /// How it ended (`exited with code 0`, `was killed by SIGKILL …`).
        pub status: String,
    }

    /// The payload of [`LIBRARY_RESTARTED`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct LibraryRestarted {
        /// The new Library's pid.
        pub pid: u32,
    }
}

/// The live processes of the cluster, as the master knows them: the Library and every ready
/// worker. Every process gets the new list whenever it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The Library's pid, while it is ready.
    pub library: Option<u32>,
    /// `(worker id, pid)` of every ready worker, by id.
    pub workers: Vec<(u32, u32)>,
}

impl Members {
    /// Every member's pid, the Library first.
    pub fn pids(&self) -> Vec<u32> {
        self.library
            .into_iter()
            .chain(self.workers.iter().map(|(_, pid)| *pid))
            .collect()
    }
}
