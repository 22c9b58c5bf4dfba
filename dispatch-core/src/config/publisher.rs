//! The Library's publisher of one configuration: validates every candidate value and publishes
//! each changed one as the next version, in order. A restarted Library resumes from the value
//! and version the master hands it.

use super::error::ConfigError;
use super::format::{self, ConfigFormat};
use super::registry::Entry;
use super::shared::Versioned;
use super::source::Validator;
use crate::messenger::Messenger;
use serde::{de::DeserializeOwned, Serialize};
use serde_bytes::ByteBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Validates and publishes values of one configuration, in order.
pub(crate) struct Publisher<T> {
    pub(super) entry: Arc<Entry<T>>,
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
    pub(super) fn new(entry: Arc<Entry<T>>, validate: Option<Validator<T>>) -> Self {
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
    pub(super) fn resume(&self, messenger: &Messenger) -> bool {
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

pub(super) fn invalid(origin: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        message,
    }
}
