//! Why a configuration could not be loaded, set or read.

use crate::messenger::MessageError;
use std::time::Duration;
use thiserror::Error;

/// Why a configuration could not be loaded, set or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The source could not be read: Redis unreachable, the key or the file missing.
    #[error("cannot read the config from {origin}: {message}")]
    Unavailable {
        /// Where it was read from (`Redis key `app:config` at redis://127.0.0.1:6379/`).
        origin: String,
        /// What went wrong.
        message: String,
    },
    /// The value does not parse into the configuration type, or its validator rejected it.
    #[error("the config from {origin} is invalid: {message}")]
    Invalid {
        /// Where it came from.
        origin: String,
        /// The parser's or the validator's message.
        message: String,
    },
    /// [`SharedConfig::set`](super::SharedConfig::set) on a configuration whose source is a file or Redis.
    #[error("the config `{type_name}` comes from {origin}: change it there (only in-memory configs can be set)")]
    ReadOnly {
        /// The configuration type.
        type_name: &'static str,
        /// Its source.
        origin: String,
    },
    /// A worker waited in vain for its first value from the Library.
    #[error("no value of the config `{type_name}` arrived from the Library within {waited:?}")]
    NoValue {
        /// The configuration type.
        type_name: &'static str,
        /// How long the worker waited.
        waited: Duration,
    },
    /// Outside the Library and the workers of a cluster that declared this configuration.
    #[error(
        "the config `{type_name}` is not available here: it exists in the Library and the \
         workers of a cluster built with Cluster::shared_config::<{type_name}>(…)"
    )]
    NotAvailable {
        /// The configuration type.
        type_name: &'static str,
    },
    /// The value could not be sent.
    #[error(transparent)]
    Message(#[from] MessageError),
}
