//! What the master does about a child that misbehaves on its control socket: one that writes
//! garbage (a frame over the limit, a message that does not decode) is logged, marked `broken`,
//! killed and restarted; one that leaves its outgoing queue full (it does not read) for
//! `child_queue_timeout` is hung: logged with what it held, killed and restarted. Either way
//! the master's memory stays within the child's budget.
//!
//! Whatever a child says is escaped before it is logged ([`escape`]): a reason with a newline
//! cannot forge a log line.

use super::child::KillReason;
use super::state::{Master, Timer};
use crate::process::ChildKind;
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::time::Instant;

/// The longest text of a child the master keeps or logs (a failure reason, say).
const MAX_REASON: usize = 4096;

/// `text` from a child, safe to log and to show: control characters, newlines and quotes
/// escaped (`{:?}`-style), and cut at [`MAX_REASON`] characters.
pub(crate) fn escape(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_REASON)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_REASON).is_some() {
        out.push_str("… (cut)");
    }
    out
}

impl Master {
    /// Child `pid` wrote something that is not a control message.
    pub(super) fn on_broken(&mut self, kind: ChildKind, pid: u32, reason: &str) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let reason = escape(reason);
        tracing::error!(
            pid,
            "the {} broke the control protocol: it {reason}; killing it",
            kind.label()
        );
        p.broken = true;
        p.failure = Some(format!("broke the control protocol: it {reason}"));
        p.killed.get_or_insert(KillReason::Broken);
        p.handle.signal(Signal::SIGKILL);
    }

    /// Child `pid`'s queue drained to half its budget.
    pub(super) fn on_drained(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.full_since = None;
        }
        self.no_longer_behind(pid);
    }

    /// How often the queues are looked at: a quarter of the timeout, within 50 ms..1 s.
    pub(super) fn queue_watch_period(&self) -> Duration {
        (self.config.child_queue_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Kills every child whose queue has been full for `child_queue_timeout`, and looks again
    /// later.
    pub(super) fn watch_queues(&mut self) {
        let now = Instant::now();
        let timeout = self.config.child_queue_timeout;
        let mut hung = Vec::new();
        for (pid, p) in &mut self.procs {
            if !p.handle.is_full() {
                p.full_since = None;
                continue;
            }
            let since = *p.full_since.get_or_insert(now);
            if now.duration_since(since) >= timeout && !p.broken {
                hung.push(*pid);
            }
        }
        for pid in hung {
            let Some(p) = self.procs.get_mut(&pid) else {
                continue;
            };
            let held = p.handle.queued();
            let why = format!(
                "left {} bytes in {} messages unread for {timeout:?} (budget {}): it is hung",
                held.bytes, held.messages, self.config.child_queue_bytes
            );
            tracing::error!(pid, "the {} {why}; killing it", p.handle.kind.label());
            p.broken = true;
            p.failure = Some(why);
            p.killed.get_or_insert(KillReason::Hung);
            p.handle.signal(Signal::SIGKILL);
        }
        let period = self.queue_watch_period();
        self.schedule(period, Timer::QueueWatch);
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_what_could_forge_a_log_line() {
        assert_eq!(
            escape("a\nb\r\u{1b}[31m\"x\""),
            "a\\nb\\r\\u{1b}[31m\\\"x\\\""
        );
        assert_eq!(escape("plain é"), "plain é");
        let long = "x".repeat(5000);
        assert!(escape(&long).ends_with("… (cut)"));
        assert!(escape(&long).len() < 4200);
    }
}
