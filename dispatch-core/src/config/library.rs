//! The Library's side: loads the source at start, then validates and publishes every new value
//! (from the source's watcher, or a `set`). A restarted Library resumes from the value and
//! version the master hands it.

use super::format::{self, ConfigFormat};
use super::{ConfigError, ConfigSource, Entry, Fallback, SourceKind, Validator, Versioned};
use crate::messenger::Messenger;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use serde_bytes::ByteBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Validates and publishes values of one configuration, in order.
pub(crate) struct Publisher<T> {
    entry: Arc<Entry<T>>,
    validate: Option<Validator<T>>,
    state: Mutex<State>,
}

struct State {
    /// The canonical JSON of the current value.
    last: Option<Vec<u8>>,
    /// Its version: the master numbers each published value of the topic from 1, so the next
    /// one is this + 1 (also for a restarted Library, which resumes from the master's).
    version: u64,
}

impl<T> Publisher<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn new(entry: Arc<Entry<T>>, validate: Option<Validator<T>>) -> Self {
        Publisher {
            entry,
            validate,
            state: Mutex::new(State {
                last: None,
                version: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The version of the Library's current value.
    pub(crate) fn version(&self) -> u64 {
        self.entry.cell.version()
    }

    /// Parses a source's bytes and [`offer`](Publisher::offer)s the value.
    pub(crate) fn offer_bytes(
        &self,
        bytes: &[u8],
        format: ConfigFormat,
        origin: &str,
    ) -> Result<Option<u64>, ConfigError> {
        let value = format
            .parse::<T>(bytes)
            .map_err(|message| invalid(origin, message))?;
        self.offer(value, origin)
    }

    /// Validates `value` and, if it differs from the current one, publishes it as the next
    /// version. Returns that version, or `None` for an unchanged value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the value fails the validator or does not survive the
    /// trip to JSON and back (so the workers could not read it); [`ConfigError::Message`] when
    /// it cannot be sent (too large, the master gone).
    pub(crate) fn offer(&self, value: T, origin: &str) -> Result<Option<u64>, ConfigError> {
        let bytes = format::canonical(&value).map_err(|m| invalid(origin, m))?;
        // What the workers will decode, so the Library holds exactly what they hold.
        let value: T = format::decode(&bytes).map_err(|e| {
            invalid(
                origin,
                format!("it does not read back from JSON, so workers could not read it: {e}"),
            )
        })?;
        if let Some(check) = &self.validate {
            check(&value).map_err(|m| invalid(origin, m))?;
        }
        let messenger = Messenger::try_get().ok_or(ConfigError::NotAvailable {
            type_name: self.entry.type_name,
        })?;
        let mut state = self.lock();
        if state.last.as_deref() == Some(&bytes[..]) {
            return Ok(None);
        }
        messenger.publish_runtime(&self.entry.topics.value, &ByteBuf::from(bytes.clone()))?;
        state.version += 1;
        let version = state.version;
        state.last = Some(bytes);
        // Under the lock, so concurrent offers reach the Library's watches in version order.
        self.entry.cell.update(Versioned { version, value });
        drop(state);
        tracing::info!(
            config = self.entry.type_name,
            "config v{version} from {origin}"
        );
        Ok(Some(version))
    }

    /// A restarted Library: takes the value the workers hold (the master handed it over) as
    /// the current one, under its version, so numbering goes on and an unchanged source
    /// publishes nothing. Returns whether there was one.
    fn resume(&self, messenger: &Messenger) -> bool {
        let Some(latest) = messenger.latest(&self.entry.topics.value) else {
            return false;
        };
        let bytes = latest.value.into_vec();
        let Ok(value) = format::decode::<T>(&bytes) else {
            return false;
        };
        let mut state = self.lock();
        state.version = latest.version;
        state.last = Some(bytes);
        self.entry.cell.update(Versioned {
            version: latest.version,
            value,
        });
        drop(state);
        tracing::info!(
            config = self.entry.type_name,
            "resumed config v{} from before the restart",
            latest.version
        );
        true
    }

    /// Whether the Library holds a value (resumed or loaded).
    pub(crate) fn has_value(&self) -> bool {
        self.lock().last.is_some()
    }

    /// Logs a rejected candidate: the last good value stays.
    pub(crate) fn reject(&self, error: &ConfigError) {
        tracing::error!(
            config = self.entry.type_name,
            "{error}; keeping config v{}",
            self.version()
        );
    }
}

fn invalid(origin: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        message,
    }
}

/// Loads the configuration in the Library's setup, then starts what keeps it current.
pub(super) async fn start<T>(
    entry: Arc<Entry<T>>,
    source: Arc<ConfigSource<T>>,
) -> Result<(), ConfigError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let messenger = Messenger::try_get().ok_or(ConfigError::NotAvailable {
        type_name: entry.type_name,
    })?;
    let publisher = Arc::new(Publisher::new(Arc::clone(&entry), source.validate.clone()));
    if entry.publisher.set(Arc::clone(&publisher)).is_err() {
        return Ok(()); // Already started in this process.
    }
    let resumed = publisher.resume(messenger);
    match &source.kind {
        // A value set at run time outlives a Library restart: the initial one is only the first.
        SourceKind::Memory(_) if resumed => {}
        SourceKind::Memory(initial) => {
            let value = owned(initial.as_ref()).map_err(|m| invalid("the initial value", m))?;
            publisher.offer(value, "the initial value")?;
        }
        SourceKind::File(settings) => {
            let format = source
                .format
                .unwrap_or_else(|| ConfigFormat::of_path(&settings.path));
            super::file::start(&publisher, settings, format, &source).await?;
        }
        #[cfg(feature = "redis")]
        SourceKind::Redis(settings) => {
            let format = source.format.unwrap_or(ConfigFormat::Json);
            super::redis::start(&publisher, settings, format, &source).await?;
        }
    }

    // `set` from workers.
    let mut sets = messenger.on(&entry.topics.set);
    let setter = Arc::clone(&publisher);
    tokio::spawn(async move {
        while let Some(msg) = sets.next().await {
            let origin = format!("SharedConfig::set in the worker with pid {}", msg.from);
            if !setter.entry.writable {
                setter.reject(&ConfigError::ReadOnly {
                    type_name: setter.entry.type_name,
                    origin: setter.entry.origin.clone(),
                });
                continue;
            }
            if let Err(e) = setter.offer_bytes(&msg.value, ConfigFormat::Json, &origin) {
                setter.reject(&e);
            }
        }
    });
    Ok(())
}

/// The source could not be read at start: start with the fallback if there is one, else fail
/// with `why`.
pub(super) async fn fallback<T>(
    publisher: &Publisher<T>,
    source: &ConfigSource<T>,
    why: ConfigError,
) -> Result<(), ConfigError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    if publisher.has_value() {
        // A restarted Library keeps what the workers hold while the source is down.
        tracing::warn!(
            config = publisher.entry.type_name,
            "{why}: keeping config v{} from before the restart; the source's next good value will replace it",
            publisher.version()
        );
        return Ok(());
    }
    let (value, origin) = match &source.fallback {
        None => return Err(why),
        Some(Fallback::Value(value)) => (owned(value.as_ref()), "the fallback value".to_owned()),
        Some(Fallback::File(path)) => {
            let origin = format!("the fallback {}", super::file::origin(path));
            let value = match super::file::read(path.clone()).await {
                Ok(bytes) => ConfigFormat::of_path(path).parse(&bytes),
                Err(e) => Err(e.to_string()),
            };
            (value, origin)
        }
    };
    let offered = value
        .map_err(|m| invalid(&origin, m))
        .and_then(|v| publisher.offer(v, &origin));
    match offered {
        Ok(_) => {
            tracing::warn!(
                config = publisher.entry.type_name,
                "{why}: started with {origin}; the source's first good value will replace it"
            );
            Ok(())
        }
        Err(e) => Err(ConfigError::Unavailable {
            origin: source.origin(),
            message: format!("{why}; and the fallback failed: {e}"),
        }),
    }
}

/// An owned copy of a value, through its JSON.
fn owned<T: Serialize + DeserializeOwned>(value: &T) -> Result<T, String> {
    format::decode(&format::canonical(value)?)
}
