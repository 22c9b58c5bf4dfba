//! # dispatch: one Library process per host, N workers calling it
//!
//! An application runs as N worker processes, but some resources (a config-server connection, a
//! registry client, a cache, a database session without a pool) must exist **once per host**,
//! not N times. `dispatch` runs them in one **Library** process and gives every worker typed,
//! async access to them:
//!
//! ```text
//!                    ┌──────────────┐
//!                    │    master    │  supervisor; runs no user code
//!                    └──┬────────┬──┘
//!       control socket  │        │  control socket (one per child)
//!           ┌───────────┘        └──────────────┐
//!    ┌──────┴──────┐      data plane      ┌──────┴───────┐
//!    │   library   │◄─── tarpc over ──────┤  app worker  │ × N   (an Agent inside each)
//!    │  (services) │     Unix socket      └──────────────┘
//!    └─────────────┘
//! ```
//!
//! # Theory of operation
//!
//! One binary plays all three roles: [`Cluster::run`] at the top of `main` makes the process you
//! start the master, which re-executes the binary as the Library and as each worker. **Code in
//! `main` before `Cluster::run` runs in every process**, and again in every restarted one; call
//! `run` from a plain `fn main` (not inside a tokio runtime: each process builds its own).
//!
//! - **What runs where.** The master runs no application code: it supervises and routes
//!   messages. The Library constructs each service once, runs the `library_setup` steps, and
//!   serves calls. Each worker runs the function given to `run`, with its [`Agent`] connected.
//! - **Start order.** The master starts the Library; only once every service is constructed and
//!   the Library listens does it start the workers. Each worker's Agent connects and checks
//!   that the Library serves the methods it was built with; when every worker is ready, the
//!   cluster is ready ([`Worker::cluster_ready`]). A failure at any step aborts the start with
//!   an error naming the process, and leaves nothing running.
//! - **Restarts.** A process that crashes is restarted (at once, then with backoff); too many
//!   crashes in a window stop the cluster with [`ClusterError::CrashLoop`]. When the Library is
//!   restarted, every Agent reconnects by itself: a call in flight fails with
//!   [`Error::LibraryRestarted`] (it may have run), a call made meanwhile waits up to its
//!   deadline. A worker that returns `Ok(())` is done and not restarted.
//! - **Reload.** SIGHUP (or [`ClusterHandle::reload`]) replaces one worker at a time, the new one
//!   ready before the old one is asked to stop; shared listeners ([`Cluster::listen`]) stay
//!   open throughout.
//! - **Shutdown.** SIGTERM or Ctrl-C asks every worker to stop ([`Worker::shutdown`] resolves:
//!   drain, then return), kills those still running after the grace period, and stops the
//!   Library last, after its services' close hooks.
//!
//! # Usage
//!
//! ```no_run
//! use dispatch::prelude::*;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! #[derive(Default)]
//! pub struct Counter {
//!     value: AtomicU64,
//! }
//!
//! #[library_service] // served as "counter"; exists once, in the Library
//! impl Counter {
//!     pub fn incr(&self) -> u64 {
//!         self.value.fetch_add(1, Ordering::SeqCst) + 1
//!     }
//! }
//!
//! fn main() -> Result<(), ClusterError> {
//!     Cluster::new().workers(2).run(|worker: Worker| async move {
//!         let n = Agent::get().counter().incr().await?;
//!         println!("worker {} counted {n}", worker.id());
//!         Ok::<(), dispatch::Error>(())
//!     })
//! }
//! ```
//!
//! Services must be linked into the binary: keep them in the binary's crate or in a library
//! crate the binary uses (a crate nothing references is not linked, and its services are
//! silently absent; the Library logs the services it found).

pub use dispatch_core::testing;
/// Services calling services inside the Library: `Library::get().<service>()`.
pub use dispatch_core::Library;
/// Recycling of workers (issue 14): see [`Cluster::recycle`].
pub use dispatch_core::Recycle;
pub use dispatch_core::{
    admin, events, role, Agent, Cluster, ClusterError, ClusterHandle, ClusterStatus, Error,
    Handover, HandoverError, LogFormat, Manifest, ManifestMismatch, Members, MessageError,
    Messenger, MethodStats, ProcessStatus, Received, RestartPolicy, Role, Runtime, ServiceClient,
    ServiceManifest, Subscription, Topic, Worker,
};
pub use dispatch_core::{
    ConfigError, ConfigFormat, ConfigSource, ConfigWatch, SharedConfig, Versioned,
};
pub use dispatch_core::{Feed, Overflow, Publisher, RemoteStream};
// Schedules (issue 17): tasks run by the clock, per host or once per fleet.
pub use dispatch_core::{Overlap, Schedule, ScheduleError, Standby, Target, TaskContext};
pub use dispatch_macros::library_service;
/// Bytes that cross the wire as one block: use it (not `Vec<u8>`) for byte arguments and return
/// values of service methods and for byte payloads of messages. A `Vec<u8>` is encoded element
/// by element; a `ByteBuf` is encoded as a length and the bytes, about 30 times cheaper.
/// It derefs to `Vec<u8>`: `ByteBuf::from(vec)`, `buf.into_vec()`, `&buf[..]`.
///
/// ```
/// use dispatch::ByteBuf;
/// let payload = ByteBuf::from(vec![1_u8, 2, 3]);
/// assert_eq!(payload.len(), 3);
/// ```
pub type ByteBuf = serde_bytes::ByteBuf;

#[doc(hidden)]
pub use dispatch_core::__private;

#[cfg(feature = "axum")]
pub mod http;

/// Everything an application needs: `use dispatch::prelude::*;`.
pub mod prelude {
    pub use crate::{
        events, library_service, Agent, Cluster, ClusterError, Error, Messenger, Topic, Worker,
    };
    pub use crate::{ConfigSource, SharedConfig};
}
