//! The file source: read at start, then polled; each change of its contents goes to the loader,
//! which parses and publishes it (or logs a bad one, and the last good value stays).

use super::error::ConfigError;
use super::feed::{self, ChangeSender, Changes, Feed, HeldVersion};
use super::source::FileSettings;
use std::path::{Path, PathBuf};

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

/// A file source, from its read at start to its poll.
pub(super) struct FileSource {
    settings: FileSettings,
    /// The contents read last: the poll hands on only a change.
    seen: Option<Vec<u8>>,
}

impl FileSource {
    pub(super) fn new(settings: &FileSettings) -> FileSource {
        FileSource {
            settings: settings.clone(),
            seen: None,
        }
    }
}

impl Feed for FileSource {
    async fn read_initial(&mut self) -> Result<Vec<u8>, ConfigError> {
        match read(self.settings.path.clone()).await {
            Ok(bytes) => {
                self.seen = Some(bytes.clone());
                Ok(bytes)
            }
            Err(e) => Err(ConfigError::Unavailable {
                origin: origin(&self.settings.path),
                message: e.to_string(),
            }),
        }
    }

    fn changes(self, held: HeldVersion) -> Changes {
        let (tx, rx) = feed::channel();
        tokio::spawn(poll(self.settings, self.seen, tx, held));
        rx
    }
}

/// Re-reads the file every poll interval; contents that differ from the last seen go to the
/// loader. Ends when the loader is gone.
async fn poll(
    settings: FileSettings,
    mut seen: Option<Vec<u8>>,
    changes: ChangeSender,
    held: HeldVersion,
) {
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
                    seen = Some(bytes.clone());
                    if changes.send(bytes).await.is_err() {
                        return;
                    }
                }
            }
            // Logged once per outage, not at every poll.
            Err(e) if !unreadable => {
                unreadable = true;
                tracing::warn!(
                    "cannot read config {origin}: {e}; keeping config v{}",
                    held()
                );
            }
            Err(_) => {}
        }
    }
}
