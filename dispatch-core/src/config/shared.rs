//! What the application holds: [`SharedConfig`], its [`ConfigWatch`] stream, and each
//! [`Versioned`] value.

use super::error::ConfigError;
use super::format;
use super::registry::{declared, Entry};
use crate::messenger::Messenger;
use futures::Stream;
use serde::{de::DeserializeOwned, Serialize};
use serde_bytes::ByteBuf;
use std::fmt;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A configuration value and its version.
///
/// Versions are numbered by the master from 1, per configuration type, and only a changed value
/// gets a new one; they keep growing across Library restarts. Derefs to the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The version: 1 for the first value, one more for each change.
    pub version: u64,
    /// The value.
    pub value: T,
}

impl<T> Deref for Versioned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// The shared configuration of type `T`, in the Library or a worker of a cluster that declared
/// it with [`Cluster::shared_config`]. Cheap to clone.
///
/// [`Cluster::shared_config`]: crate::Cluster::shared_config
pub struct SharedConfig<T> {
    entry: Arc<Entry<T>>,
}

impl<T> Clone for SharedConfig<T> {
    fn clone(&self) -> Self {
        SharedConfig {
            entry: Arc::clone(&self.entry),
        }
    }
}

impl<T> fmt::Debug for SharedConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConfig")
            .field("type", &self.entry.type_name)
            .field("origin", &self.entry.origin)
            .field("version", &self.entry.cell.version())
            .finish()
    }
}

impl<T> SharedConfig<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The configuration of type `T`.
    ///
    /// # Panics
    /// Outside the Library and the workers of a cluster that declared `T` with
    /// [`Cluster::shared_config`] (in the master, say), and in the Library before the
    /// configuration's setup step ran. [`try_get`](SharedConfig::try_get) returns `None` instead.
    ///
    /// [`Cluster::shared_config`]: crate::Cluster::shared_config
    pub fn get() -> SharedConfig<T> {
        match Self::try_get() {
            Some(config) => config,
            None => panic!(
                "{}",
                ConfigError::NotAvailable {
                    type_name: std::any::type_name::<T>()
                }
            ),
        }
    }

    /// The configuration of type `T`, or `None` where it has no value (see
    /// [`get`](SharedConfig::get)).
    pub fn try_get() -> Option<SharedConfig<T>> {
        let entry = declared::<T>()?;
        entry.cell.latest()?;
        Some(SharedConfig { entry })
    }

    /// The latest value, at once.
    pub fn latest(&self) -> Arc<Versioned<T>> {
        // `get` only hands out configurations that have a value, and a value is never removed.
        self.entry
            .cell
            .latest()
            .expect("a SharedConfig always has a value")
    }

    /// The latest value's version.
    pub fn version(&self) -> u64 {
        self.entry.cell.version()
    }

    /// The latest value, then every later version as it arrives, in order. Each watch gets
    /// every version this process receives; a version is never repeated.
    pub fn watch(&self) -> ConfigWatch<T> {
        ConfigWatch {
            rx: self.entry.cell.watch(),
        }
    }

    /// Replaces an in-memory configuration. In the Library the value is validated and
    /// published at once; in a worker it is sent to the Library, which validates and publishes
    /// it (an invalid value is logged there and dropped). Either way the new version reaches
    /// every worker's [`watch`](SharedConfig::watch), this one's included. Setting the current
    /// value again is not a new version.
    ///
    /// # Errors
    /// [`ConfigError::ReadOnly`] for a file or Redis source (change the source instead);
    /// [`ConfigError::Invalid`] in the Library for a rejected value; [`ConfigError::Message`]
    /// when the value cannot be sent.
    pub fn set(&self, value: T) -> Result<(), ConfigError> {
        let entry = &self.entry;
        if !entry.writable {
            return Err(ConfigError::ReadOnly {
                type_name: entry.type_name,
                origin: entry.origin.clone(),
            });
        }
        if let Some(publisher) = entry.publisher.get() {
            publisher.offer(value, "SharedConfig::set in the Library")?;
            return Ok(());
        }
        let json = format::canonical(&value).map_err(|message| ConfigError::Invalid {
            origin: "SharedConfig::set".into(),
            message,
        })?;
        let messenger = Messenger::try_get().ok_or(ConfigError::NotAvailable {
            type_name: entry.type_name,
        })?;
        messenger.send_to_library_runtime(&entry.topics.set, &ByteBuf::from(json))?;
        Ok(())
    }
}

/// A stream of a configuration's versions: the latest at the time of
/// [`SharedConfig::watch`], then each later one. Ends only when the process is exiting.
pub struct ConfigWatch<T> {
    rx: mpsc::UnboundedReceiver<Arc<Versioned<T>>>,
}

impl<T> fmt::Debug for ConfigWatch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfigWatch")
    }
}

impl<T> Stream for ConfigWatch<T> {
    type Item = Arc<Versioned<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
