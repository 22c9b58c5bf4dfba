//! The file source: read at start, then polled; a change is parsed and published, a bad one is
//! logged and the last good value stays.

use super::error::ConfigError;
use super::format::ConfigFormat;
use super::publisher::Publisher;
use super::source::{ConfigSource, FileSettings};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Larger files are refused: a value travels as one message (about 1 MiB at most).
const MAX_FILE: u64 = 1 << 20;

pub(super) fn origin(path: &Path) -> String {
    format!("file {}", path.display())
}

/// Reads a whole file on the blocking pool.
pub(super) async fn read(path: PathBuf) -> std::io::Result<Vec<u8>> {
    let read = tokio::task::spawn_blocking(move || {
        let size = std::fs::metadata(&path)?.len();
        if size > MAX_FILE {
            return Err(std::io::Error::other(format!(
                "it is {size} bytes; a config is at most {MAX_FILE}"
            )));
        }
        std::fs::read(&path)
    });
    read.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Loads the file (or the fallback) and starts polling it.
pub(super) async fn start<T>(
    publisher: &Arc<Publisher<T>>,
    settings: &FileSettings,
    format: ConfigFormat,
    source: &ConfigSource<T>,
) -> Result<(), ConfigError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let origin = origin(&settings.path);
    let (seen, loaded) = match read(settings.path.clone()).await {
        Ok(bytes) => {
            let loaded = publisher.offer_bytes(&bytes, format, &origin).map(drop);
            (Some(bytes), loaded)
        }
        Err(e) => (
            None,
            Err(ConfigError::Unavailable {
                origin: origin.clone(),
                message: e.to_string(),
            }),
        ),
    };
    if let Err(why) = loaded {
        super::loader::fallback(publisher, source, why).await?;
    }
    tokio::spawn(poll(Arc::clone(publisher), settings.clone(), format, seen));
    Ok(())
}

/// Re-reads the file every poll interval; contents that differ from the last seen are offered.
async fn poll<T>(
    publisher: Arc<Publisher<T>>,
    settings: FileSettings,
    format: ConfigFormat,
    mut seen: Option<Vec<u8>>,
) where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let origin = origin(&settings.path);
    let mut ticker = tokio::time::interval(settings.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut unreadable = false;
    loop {
        ticker.tick().await;
        match read(settings.path.clone()).await {
            Ok(bytes) => {
                if unreadable {
                    unreadable = false;
                    tracing::info!("config {origin} is readable again");
                }
                if seen.as_deref() != Some(&bytes[..]) {
                    if let Err(e) = publisher.offer_bytes(&bytes, format, &origin) {
                        publisher.reject(&e);
                    }
                    seen = Some(bytes);
                }
            }
            // Logged once per outage, not at every poll.
            Err(e) if !unreadable => {
                unreadable = true;
                tracing::warn!(
                    "cannot read config {origin}: {e}; keeping config v{}",
                    publisher.version()
                );
            }
            Err(_) => {}
        }
    }
}
