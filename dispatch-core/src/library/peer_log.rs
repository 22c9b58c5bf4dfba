//! The rate-limited log of refused and dropped peers: a flood of bad connections cannot flood
//! the log.

use super::accept::{LOG_LINES_PER_WINDOW, LOG_PEERS_PER_WINDOW, LOG_WINDOW};
use super::gate::{Peer, PidField};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// The rate-limited log of refused and dropped peers: each peer's first event of a window gets
/// its own line (up to [`LOG_LINES_PER_WINDOW`] lines); the others are counted, per peer, and
/// summed up in one line when the window ends.
#[derive(Debug)]
pub(super) struct PeerLog {
    /// When the current window began.
    pub(super) window_start: Instant,
    /// Lines logged this window.
    pub(super) lines: usize,
    /// Events not logged this window, per peer (a peer that got its line counts from 0).
    pub(super) peers: HashMap<Peer, u64>,
    /// Events not logged this window.
    pub(super) suppressed: u64,
    /// Accept failures this window (the first one was logged).
    pub(super) accept_failures: u64,
}

impl PeerLog {
    /// An empty log whose first window starts now.
    pub(super) fn new() -> Self {
        PeerLog {
            window_start: Instant::now(),
            lines: 0,
            peers: HashMap::new(),
            suppressed: 0,
            accept_failures: 0,
        }
    }

    /// Logs `what` about `peer`, or counts it.
    pub(super) fn event(&mut self, peer: Peer, what: fmt::Arguments<'_>) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.flush();
        }
        let room = self.peers.len() < LOG_PEERS_PER_WINDOW;
        let first = !self.peers.contains_key(&peer);
        if first && room && self.lines < LOG_LINES_PER_WINDOW {
            self.lines += 1;
            self.peers.insert(peer, 0);
            tracing::warn!(peer_pid = %PidField(peer.pid), peer_uid = peer.uid, "{what}");
            return;
        }
        self.suppressed += 1;
        if let Some(count) = self.peers.get_mut(&peer) {
            *count += 1;
        } else if room {
            self.peers.insert(peer, 1);
        }
    }

    /// Logs the first accept failure of the window; counts the others.
    pub(super) fn accept_failed(&mut self, e: &io::Error, pause: Duration) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.flush();
        }
        self.accept_failures += 1;
        if self.accept_failures == 1 {
            tracing::warn!("accept failed on the library socket: {e}; pausing {pause:?}");
        }
    }

    /// Ends the window: sums up what was not logged, and starts a new one.
    pub(super) fn flush(&mut self) {
        let elapsed = self.window_start.elapsed();
        if self.suppressed > 0 {
            let mut busiest: Vec<(Peer, u64)> = self
                .peers
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(p, n)| (*p, *n))
                .collect();
            busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<String> = busiest
                .iter()
                .take(4)
                .map(|(p, n)| format!("{n} from {p}"))
                .collect();
            tracing::warn!(
                suppressed = self.suppressed,
                "refused or dropped {} more connections in the last {:.1} s without a line each \
                 (peers with most events: {})",
                self.suppressed,
                elapsed.as_secs_f64(),
                top.join(", ")
            );
        }
        if self.accept_failures > 1 {
            tracing::warn!(
                "accept failed {} more times in the last {:.1} s",
                self.accept_failures - 1,
                elapsed.as_secs_f64()
            );
        }
        self.window_start = Instant::now();
        self.lines = 0;
        self.peers.clear();
        self.suppressed = 0;
        self.accept_failures = 0;
    }
}

/// An error with its sources, `outer: inner: …`.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
