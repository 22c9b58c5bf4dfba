//! The Library's side of a configuration, and the one place that decides what happens to each
//! candidate value: loads it at start (the source's bytes, or else the fallback), then offers
//! every new value to the [`Publisher`] (a payload of the source's change feed, or a `set`) and
//! logs a rejected one. The sources only read bytes ([`Feed`]).
//!
//! ```text
//!   source (file, Redis)        loader                               Publisher
//!   read_initial ──bytes──►  offer; failing: the fallback ──►  parses, validates, and
//!   change feed ───bytes──►  offer; rejected: logged      ──►  publishes v1, v2, … if changed
//! ```

use super::error::ConfigError;
use super::feed::{Feed, HeldVersion};
use super::file::{self, FileSource};
use super::format::{self, ConfigFormat};
use super::publisher::{invalid, Publisher};
#[cfg(feature = "redis")]
use super::redis::RedisSource;
use super::registry::Entry;
use super::source::{ConfigSource, Fallback, SourceKind};
use crate::messenger::Messenger;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

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
            load(&publisher, &source, format, FileSource::new(settings)).await?;
        }
        #[cfg(feature = "redis")]
        SourceKind::Redis(settings) => {
            let format = source.format.unwrap_or(ConfigFormat::Json);
            load(&publisher, &source, format, RedisSource::open(settings)?).await?;
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

/// Loads a file or Redis source: its contents at start, offered (or, when they cannot be read
/// or are rejected, the fallback); then a task that offers every payload of its change feed, in
/// order, and logs each rejected one (the last good value stays).
async fn load<T, S>(
    publisher: &Arc<Publisher<T>>,
    source: &ConfigSource<T>,
    format: ConfigFormat,
    mut feed: S,
) -> Result<(), ConfigError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Feed,
{
    let origin = source.origin();
    let loaded = match feed.read_initial().await {
        Ok(bytes) => publisher.offer_bytes(&bytes, format, &origin).map(drop),
        Err(e) => Err(e),
    };
    if let Err(why) = loaded {
        fallback(publisher, source, why).await?;
    }
    let held: HeldVersion = {
        let publisher = Arc::clone(publisher);
        Arc::new(move || publisher.version())
    };
    let mut changes = feed.changes(held);
    let publisher = Arc::clone(publisher);
    tokio::spawn(async move {
        while let Some(bytes) = changes.recv().await {
            if let Err(e) = publisher.offer_bytes(&bytes, format, &origin) {
                publisher.reject(&e);
            }
        }
    });
    Ok(())
}

/// The source could not be read at start: start with the fallback if there is one, else fail
/// with `why`.
async fn fallback<T>(
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
            let origin = format!("the fallback {}", file::origin(path));
            let value = match file::read(path.clone()).await {
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
