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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::timeout;

    /// A file path of this test alone, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "dispatch-config-unit-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            TempFile(path)
        }

        /// Replaces the contents at once (write, then rename): a poll never sees half of them.
        fn replace(&self, contents: &[u8]) {
            let tmp = self.0.with_extension("tmp");
            std::fs::write(&tmp, contents).unwrap();
            std::fs::rename(&tmp, &self.0).unwrap();
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(self.0.with_extension("tmp"));
        }
    }

    fn settings(path: &Path) -> FileSettings {
        FileSettings {
            path: path.to_owned(),
            poll: Duration::from_millis(10),
        }
    }

    #[tokio::test]
    async fn the_feed_hands_on_each_change_of_the_contents_once() {
        let file = TempFile::new("feed");
        file.replace(b"one");
        let mut source = FileSource::new(&settings(&file.0));
        assert_eq!(source.read_initial().await.unwrap(), b"one");
        let mut changes = source.changes(Arc::new(|| 1));
        // The contents read at start are not handed on again.
        assert!(timeout(Duration::from_millis(100), changes.recv())
            .await
            .is_err());
        for next in [&b"two"[..], b"three"] {
            file.replace(next);
            let got = timeout(Duration::from_secs(5), changes.recv()).await;
            assert_eq!(got.unwrap().as_deref(), Some(next));
        }
        // Unchanged contents are no change.
        file.replace(b"three");
        assert!(timeout(Duration::from_millis(100), changes.recv())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_missing_file_at_start_is_unavailable_by_name() {
        let file = TempFile::new("missing");
        let err = FileSource::new(&settings(&file.0))
            .read_initial()
            .await
            .unwrap_err();
        assert!(matches!(err, ConfigError::Unavailable { .. }), "{err:?}");
        let named = format!("cannot read the config from file {}: ", file.0.display());
        assert!(err.to_string().starts_with(&named), "{err}");
    }
}
