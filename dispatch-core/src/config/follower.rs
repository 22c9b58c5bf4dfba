//! A worker's side: waits for the first value in its setup (before its code runs), then
//! follows every later version.

use super::error::ConfigError;
use super::format;
use super::registry::Entry;
use super::shared::Versioned;
use crate::messenger::{Messenger, Received};
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use serde_bytes::ByteBuf;
use std::sync::Arc;
use std::time::Duration;

/// A published value, decoded; `None` (logged) if it does not decode, which a value the Library
/// validated never does short of a mismatched build.
fn decode<T: DeserializeOwned>(entry: &Entry<T>, msg: &Received<ByteBuf>) -> Option<Versioned<T>> {
    match format::decode(&msg.value) {
        Ok(value) => Some(Versioned {
            version: msg.version,
            value,
        }),
        Err(e) => {
            tracing::error!(
                config = entry.type_name,
                "config v{} from the Library does not decode: {e}; keeping config v{}",
                msg.version,
                entry.cell.version()
            );
            None
        }
    }
}

/// The worker's setup step: the first value (the master hands the latest over right after
/// the worker's init message), then a task that follows the rest.
pub(super) async fn start<T>(entry: Arc<Entry<T>>, wait: Duration) -> Result<(), ConfigError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let messenger = Messenger::try_get().ok_or(ConfigError::NotAvailable {
        type_name: entry.type_name,
    })?;
    let mut values = messenger.subscribe(&entry.topics.value);
    let first = tokio::time::timeout(wait, async {
        while let Some(msg) = values.next().await {
            if let Some(value) = decode(&entry, &msg) {
                return Some(value);
            }
        }
        None
    })
    .await;
    let Ok(Some(first)) = first else {
        return Err(ConfigError::NoValue {
            type_name: entry.type_name,
            waited: wait,
        });
    };
    entry.cell.update(first);
    tokio::spawn(async move {
        while let Some(msg) = values.next().await {
            if let Some(value) = decode(&entry, &msg) {
                entry.cell.update(value);
            }
        }
    });
    Ok(())
}
