//! Shared configuration (DESIGN §5): the Library holds the host's configuration once and every
//! worker sees every version of it, typed.
//!
//! ```text
//!   source ──► Library ──publish──► master (numbers, keeps the latest) ──► every worker
//!   (memory,   parses, validates,   v1, v2, …; the same value again       snapshot before its
//!    file,     one Redis connection  is not a new version                 code runs, then a
//!    Redis)    per host                                                    watch of each version
//! ```
//!
//! [`Cluster::shared_config`] declares the configuration and where it comes from
//! ([`ConfigSource`]). The Library loads it before its services start (a failure aborts the
//! start, unless a fallback is configured) and publishes it on a reserved messenger topic; each
//! worker waits for that value before its application code runs. [`SharedConfig`] then gives the
//! latest value synchronously and a [`ConfigWatch`] stream of every later version, in the
//! Library and in every worker.
//!
//! On the wire a value is canonical JSON (object keys sorted), so the master recognises an
//! unchanged configuration even when it was re-read into a map with another iteration order,
//! and so configuration types may use `serde_json::Value`, untagged enums and `flatten`, which a
//! binary format cannot carry.
//!
//! [`Cluster::shared_config`]: crate::Cluster::shared_config

mod cell;
mod error;
mod feed;
mod file;
mod follower;
mod format;
mod loader;
mod publisher;
#[cfg(feature = "redis")]
mod redis;
mod registry;
mod shared;
mod source;

pub use error::ConfigError;
pub use format::ConfigFormat;
pub(crate) use registry::declare;
pub use shared::{ConfigWatch, SharedConfig, Versioned};
pub use source::ConfigSource;
