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

mod cell;
mod file;
mod format;
mod library;
#[cfg(feature = "redis")]
mod redis;
mod worker;

pub use format::ConfigFormat;

use crate::cluster::Cluster;
use crate::messenger::{MessageError, Messenger};
use crate::topic::Topic;
use cell::Cell;
use futures::Stream;
use once_cell::sync::{Lazy, OnceCell};
use serde::{de::DeserializeOwned, Serialize};
use serde_bytes::ByteBuf;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;
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
    /// [`SharedConfig::set`] on a configuration whose source is a file or Redis.
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

/// A validator run on every candidate value in the Library: an `Err` rejects it.
type Validator<T> = Arc<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

/// Where a configuration comes from, chosen on the builder with [`Cluster::shared_config`].
///
/// - [`memory`](ConfigSource::memory): an initial value, changed by [`SharedConfig::set`] from
///   the Library or from any worker.
/// - [`file`](ConfigSource::file): a JSON or TOML file, read at start and polled for changes.
/// - [`redis`](ConfigSource::redis) (feature `redis`): `GET key` at start, `SUBSCRIBE channel`,
///   and the key re-read on every message, over one Redis connection pair per host.
///
/// Every candidate value (a file's or key's new contents, a `set`) is parsed and validated in
/// the Library; an invalid one is logged, naming its origin, and the last good value stays.
pub struct ConfigSource<T> {
    kind: SourceKind<T>,
    format: Option<ConfigFormat>,
    fallback: Option<Fallback<T>>,
    validate: Option<Validator<T>>,
    first_value_timeout: Duration,
}

enum SourceKind<T> {
    Memory(Arc<T>),
    File(FileSettings),
    #[cfg(feature = "redis")]
    Redis(RedisSettings),
}

/// What the Library starts with when the source cannot be read at start.
enum Fallback<T> {
    Value(Arc<T>),
    File(PathBuf),
}

/// A file source's settings.
#[derive(Debug, Clone)]
pub(crate) struct FileSettings {
    pub(crate) path: PathBuf,
    pub(crate) poll: Duration,
}

/// A Redis source's settings.
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) channel: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) health_interval: Duration,
}

impl<T> ConfigSource<T> {
    fn with(kind: SourceKind<T>) -> Self {
        ConfigSource {
            kind,
            format: None,
            fallback: None,
            validate: None,
            first_value_timeout: Duration::from_secs(10),
        }
    }

    /// An in-memory configuration starting at `initial`, changed with [`SharedConfig::set`]
    /// (in the Library, or from a worker by a message to the Library).
    ///
    /// The value lives in the Library and in the master's copy of the latest version: a
    /// restarted Library starts again from `initial`, as any Library state does.
    pub fn memory(initial: T) -> Self {
        Self::with(SourceKind::Memory(Arc::new(initial)))
    }

    /// A file, read at start and polled for changes (every 500 ms by default). Its format comes
    /// from its extension (`.toml` is TOML, anything else JSON) unless set with
    /// [`format`](ConfigSource::format). A missing or unreadable file at start is an error
    /// unless a fallback is set; later, the last good value stays until the file is good again.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::with(SourceKind::File(FileSettings {
            path: path.into(),
            poll: Duration::from_millis(500),
        }))
    }

    /// Redis, as in Egg's agent pattern done once per host: the Library subscribes to
    /// `channel`, reads `key` (JSON by default), and re-reads it on every message published to
    /// the channel. Change the configuration with `SET key value` then `PUBLISH channel x` (the
    /// message's contents are ignored).
    ///
    /// Redis unreachable at start, or the key missing, is an error unless a fallback is set. A
    /// connection lost later is retried with backoff (50 ms doubling to 2 s); on reconnecting
    /// the Library subscribes again and re-reads the key, so a change made meanwhile is not
    /// missed. Workers keep the last good value throughout.
    #[cfg(feature = "redis")]
    pub fn redis(
        url: impl Into<String>,
        key: impl Into<String>,
        channel: impl Into<String>,
    ) -> Self {
        Self::with(SourceKind::Redis(RedisSettings {
            url: url.into(),
            key: key.into(),
            channel: channel.into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            health_interval: Duration::from_secs(5),
        }))
    }

    /// The format of the file's or the Redis key's contents. Default: JSON, or TOML for a
    /// `.toml` file.
    pub fn format(mut self, format: ConfigFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Starts with `value` when the source cannot be read at start (Redis down, key or file
    /// missing or invalid), instead of failing the cluster's start; the source's first good
    /// value replaces it.
    pub fn fallback(mut self, value: T) -> Self {
        self.fallback = Some(Fallback::Value(Arc::new(value)));
        self
    }

    /// Like [`fallback`](ConfigSource::fallback), with the value read from a file (format by
    /// its extension, as for [`file`](ConfigSource::file)).
    pub fn fallback_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.fallback = Some(Fallback::File(path.into()));
        self
    }

    /// Checks every candidate value in the Library beyond parsing: an `Err` rejects it with that
    /// message (logged, naming its origin) and the last good value stays. At start, a rejected
    /// value fails the start unless a fallback is set.
    pub fn validate<F>(mut self, check: F) -> Self
    where
        F: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        self.validate = Some(Arc::new(check));
        self
    }

    /// How long a starting worker waits for its first value before failing its start. Default
    /// 10 s (the value normally arrives at once: the master hands it over with the worker's
    /// init message).
    pub fn first_value_timeout(mut self, timeout: Duration) -> Self {
        self.first_value_timeout = timeout;
        self
    }

    /// How often a file source is checked for changes. Default 500 ms. Other sources ignore it.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        if let SourceKind::File(f) = &mut self.kind {
            f.poll = interval.max(Duration::from_millis(10));
        }
        self
    }

    /// The reconnection backoff of a Redis source: `initial`, doubled after each failed attempt
    /// up to `max` (each wait ±25 % at random, so hosts sharing a Redis do not reconnect in
    /// lockstep). Default 50 ms to 2 s. Other sources ignore it.
    #[cfg(feature = "redis")]
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        if let SourceKind::Redis(r) = &mut self.kind {
            r.backoff_initial = initial.max(Duration::from_millis(1));
            r.backoff_max = max.max(r.backoff_initial);
        }
        self
    }

    /// How long connecting to Redis, and each Redis command, may take. Default 2 s. Other
    /// sources ignore it.
    #[cfg(feature = "redis")]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        if let SourceKind::Redis(r) = &mut self.kind {
            r.connect_timeout = timeout;
            r.response_timeout = timeout;
        }
        self
    }

    /// How often an idle Redis subscription is checked with `PING`, to notice a connection that
    /// died silently. Default 5 s. Other sources ignore it.
    #[cfg(feature = "redis")]
    pub fn health_interval(mut self, interval: Duration) -> Self {
        if let SourceKind::Redis(r) = &mut self.kind {
            r.health_interval = interval.max(Duration::from_millis(10));
        }
        self
    }

    /// Where the values come from, for logs and errors.
    fn origin(&self) -> String {
        match &self.kind {
            SourceKind::Memory(_) => "memory".to_owned(),
            SourceKind::File(f) => file::origin(&f.path),
            #[cfg(feature = "redis")]
            SourceKind::Redis(r) => redis::origin(r),
        }
    }
}

impl<T> fmt::Debug for ConfigSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSource")
            .field("origin", &self.origin())
            .field("format", &self.format)
            .field("fallback", &self.fallback.is_some())
            .field("validate", &self.validate.is_some())
            .field("first_value_timeout", &self.first_value_timeout)
            .finish()
    }
}

/// The reserved messenger topics of one configuration type.
#[derive(Debug)]
struct Topics {
    /// Published by the Library: the canonical JSON of each value.
    value: Topic<ByteBuf>,
    /// To the Library: a worker's [`SharedConfig::set`], as JSON.
    set: Topic<ByteBuf>,
}

impl Topics {
    fn new(type_name: &str) -> Topics {
        let leak = |kind: &str| -> &'static str {
            Box::leak(format!("dispatch:config{kind}:{type_name}").into_boxed_str())
        };
        Topics {
            value: Topic::new(leak("")),
            set: Topic::new(leak("-set")),
        }
    }
}

/// One declared configuration type in this process.
struct Entry<T> {
    type_name: &'static str,
    topics: Topics,
    origin: String,
    writable: bool,
    cell: Cell<T>,
    /// Set in the Library only, by its setup.
    publisher: OnceCell<Arc<library::Publisher<T>>>,
}

/// Every configuration declared in this process, by type. A type declared again replaces the
/// earlier declaration (whose setup steps then do nothing).
static REGISTRY: Lazy<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

fn declared<T: Send + Sync + 'static>() -> Option<Arc<Entry<T>>> {
    let registry = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let any = Arc::clone(registry.get(&TypeId::of::<T>())?);
    any.downcast::<Entry<T>>().ok()
}

fn is_current<T: Send + Sync + 'static>(entry: &Arc<Entry<T>>) -> bool {
    declared::<T>().is_some_and(|e| Arc::ptr_eq(&e, entry))
}

impl Cluster {
    /// Declares a configuration of type `T` shared by the whole host: the Library loads it from
    /// `source` before its services start and publishes it; every worker gets it before its
    /// application code runs, then every later version. Read it anywhere in the Library or a
    /// worker with [`SharedConfig::<T>::get()`](SharedConfig::get).
    ///
    /// A failure to load it at start (Redis down, file missing, invalid value) aborts the
    /// cluster's start with a message naming the source, unless the source has a
    /// [`fallback`](ConfigSource::fallback).
    ///
    /// One configuration per type: declare distinct types (newtypes) for several. Declaring the
    /// same type again replaces the earlier declaration.
    ///
    /// ```no_run
    /// use dispatch_core::{Cluster, ConfigSource, SharedConfig, Worker};
    /// use futures::StreamExt;
    ///
    /// #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// struct AppConfig { greeting: String }
    ///
    /// fn main() -> Result<(), dispatch_core::ClusterError> {
    ///     Cluster::new()
    ///         .shared_config(ConfigSource::<AppConfig>::file("app.json"))
    ///         .run(|worker: Worker| async move {
    ///             let config = SharedConfig::<AppConfig>::get();
    ///             println!("starting with {}", config.latest().greeting);
    ///             let mut changes = config.watch();
    ///             while let Some(c) = changes.next().await {
    ///                 println!("worker {} config v{}: {:?}", worker.id(), c.version, c.value);
    ///             }
    ///             Ok::<(), std::io::Error>(())
    ///         })
    /// }
    /// ```
    pub fn shared_config<T>(self, source: ConfigSource<T>) -> Self
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let type_name = std::any::type_name::<T>();
        let entry = Arc::new(Entry {
            type_name,
            topics: Topics::new(type_name),
            origin: source.origin(),
            writable: matches!(source.kind, SourceKind::Memory(_)),
            cell: Cell::new(),
            publisher: OnceCell::new(),
        });
        REGISTRY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                TypeId::of::<T>(),
                Arc::clone(&entry) as Arc<dyn Any + Send + Sync>,
            );
        let wait = source.first_value_timeout;
        let source = Arc::new(source);
        let in_library = Arc::clone(&entry);
        self.library_setup(move || {
            let (entry, source) = (Arc::clone(&in_library), Arc::clone(&source));
            async move {
                if !is_current(&entry) {
                    return Ok(());
                }
                library::start(entry, source).await
            }
        })
        .worker_setup(move || {
            let entry = Arc::clone(&entry);
            async move {
                if !is_current(&entry) {
                    return Ok(());
                }
                worker::start(entry, wait).await
            }
        })
    }
}

/// The shared configuration of type `T`, in the Library or a worker of a cluster that declared
/// it with [`Cluster::shared_config`]. Cheap to clone.
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
