//! Where a configuration comes from: the [`ConfigSource`] builder and each source's settings.

use super::file;
use super::format::ConfigFormat;
#[cfg(feature = "redis")]
use super::redis;
#[cfg(doc)]
use super::shared::SharedConfig;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A validator run on every candidate value in the Library: an `Err` rejects it.
pub(super) type Validator<T> = Arc<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

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
///
/// [`Cluster::shared_config`]: crate::Cluster::shared_config
pub struct ConfigSource<T> {
    pub(super) kind: SourceKind<T>,
    pub(super) format: Option<ConfigFormat>,
    pub(super) fallback: Option<Fallback<T>>,
    pub(super) validate: Option<Validator<T>>,
    pub(super) first_value_timeout: Duration,
}

pub(super) enum SourceKind<T> {
    Memory(Arc<T>),
    File(FileSettings),
    #[cfg(feature = "redis")]
    Redis(RedisSettings),
}

/// What the Library starts with when the source cannot be read at start.
pub(super) enum Fallback<T> {
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
    pub(super) fn origin(&self) -> String {
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
