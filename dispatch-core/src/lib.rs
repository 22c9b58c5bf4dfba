//! The runtime behind `dispatch`. Use the `dispatch` crate; this one holds its parts.
//!
//! A cluster is one binary in three roles: the **master** (supervisor, runs no application code),
//! one **Library** (hosts every `#[library_service]` once) and N **workers** (run the
//! application; each has an [`Agent`] with one connection to the Library).
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

pub mod admin;
mod agent;
mod child;
mod client;
mod cluster;
mod cluster_error;
mod codec;
mod config;
mod control;
#[cfg(test)]
mod decoder_props;
mod error;
mod library;
mod listeners;
mod logging;
mod manifest;
mod master;
mod messenger;
mod metrics;
mod panic;
mod restart;
mod role;
mod runtime_dir;
mod server;
mod service;
mod services;
mod signals;
mod spawn;
mod status;
mod topic;
mod wire;
mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use agent::Agent;
pub use client::ServiceClient;
pub use cluster::{Cluster, ClusterHandle, LogFormat};
pub use cluster_error::ClusterError;
pub use config::{ConfigError, ConfigFormat, ConfigSource, ConfigWatch, SharedConfig, Versioned};
pub use error::Error;
pub use manifest::{Manifest, ManifestMismatch, ServiceManifest};
pub use messenger::{MessageError, Messenger, Received, Subscription, UNCLAIMED_LIMIT};
pub use metrics::{MethodStats, ERROR_KINDS};
pub use restart::RestartPolicy;
pub use status::{ClusterStatus, ProcessStatus};
pub use topic::{events, Members, Topic};
pub use worker::Worker;
