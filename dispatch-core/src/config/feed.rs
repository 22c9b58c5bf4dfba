//! What a file or Redis source gives the loader: bytes. The source reads its contents at start,
//! then hands on each new payload through a small change feed; parsing, validation, the
//! fallback and publishing are all the loader's. A source knows nothing of them.

use super::error::ConfigError;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many payloads a change feed holds: one. It waits there while the loader handles the one
/// before; a source with a newer payload then waits for room. So every payload reaches the
/// loader, in order, and a slow loader slows the source down instead of growing a queue.
const CAPACITY: usize = 1;

/// A source's change feed: the bytes of each new candidate value after the initial read, in
/// order, for the loader to offer. A source's own trouble (a file it cannot read, a lost Redis
/// connection) does not travel here: the source logs it and retries, and the workers keep what
/// they hold.
pub(super) type Changes = mpsc::Receiver<Vec<u8>>;

/// The sending end of a [`Changes`] feed, in the source's task.
pub(super) type ChangeSender = mpsc::Sender<Vec<u8>>;

/// The version the workers hold now, for a source's log lines about its own trouble
/// ("keeping config v3"), read when the line is written.
pub(super) type HeldVersion = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A new change feed, of [`CAPACITY`] payloads.
pub(super) fn channel() -> (ChangeSender, Changes) {
    mpsc::channel(CAPACITY)
}

/// A file or Redis source, as the loader drives it: [`read_initial`](Feed::read_initial) once
/// in the Library's setup, then [`changes`](Feed::changes).
pub(super) trait Feed: Send + 'static {
    /// The source's contents at start. An `Err` (the file or key missing, Redis unreachable)
    /// is the loader's to answer, with the fallback or by failing the start.
    fn read_initial(&mut self) -> impl Future<Output = Result<Vec<u8>, ConfigError>> + Send;

    /// Starts following the source, in a task of its own: every later payload arrives on the
    /// returned feed (of [`CAPACITY`] payloads). `held` names the workers' version in the
    /// source's log lines.
    fn changes(self, held: HeldVersion) -> Changes;
}
