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
//! One binary plays all three roles: [`Cluster::run`] at the top of `main` makes the process you
//! start the master, which re-executes the binary as the Library and as each worker.
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

pub use dispatch_core::{
    admin, events, Agent, Cluster, ClusterError, ClusterHandle, ClusterStatus, Error, LogFormat,
    Manifest, ManifestMismatch, Members, MessageError, Messenger, MethodStats, ProcessStatus,
    Received, RestartPolicy, ServiceClient, ServiceManifest, Subscription, Topic, Worker,
};
pub use dispatch_core::{
    ConfigError, ConfigFormat, ConfigSource, ConfigWatch, SharedConfig, Versioned,
};
pub use dispatch_macros::library_service;
pub use serde_bytes::ByteBuf;

#[doc(hidden)]
pub use dispatch_core::__private;

/// Everything an application needs: `use dispatch::prelude::*;`.
pub mod prelude {
    pub use crate::{
        events, library_service, Agent, Cluster, ClusterError, Error, Messenger, Topic, Worker,
    };
    pub use crate::{ConfigSource, SharedConfig};
}
