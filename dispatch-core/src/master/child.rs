//! The master's handle on one running child: a task owns the process and reports its exit;
//! another reads its control messages; sends and signals are queued, so the supervisor never
//! blocks on a stuck child.

use crate::process::{ChildKind, Spawned};
use crate::wire::{ControlChannel, ToChild, ToMaster};
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use tokio::sync::mpsc;

/// What the children tell the supervisor.
#[derive(Debug)]
pub(crate) enum ChildEvent {
    /// A control message from child `pid`.
    Message {
        kind: ChildKind,
        pid: u32,
        msg: ToMaster,
    },
    /// Child `pid` exited and was reaped.
    Exited {
        kind: ChildKind,
        pid: u32,
        status: ExitStatus,
    },
}

/// How long a child's exit waits for the messages it wrote before exiting to be read.
const LAST_MESSAGES: std::time::Duration = std::time::Duration::from_millis(500);

/// A running child.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pub(crate) kind: ChildKind,
    pub(crate) pid: u32,
    to_child: mpsc::UnboundedSender<ToChild>,
    signals: mpsc::UnboundedSender<Signal>,
}

impl ChildHandle {
    /// Starts the tasks that watch `spawned`, reporting to `events`.
    pub(crate) fn watch(
        kind: ChildKind,
        spawned: Spawned,
        events: mpsc::UnboundedSender<ChildEvent>,
    ) -> Self {
        let Spawned {
            mut child,
            pid,
            control,
        } = spawned;
        let (mut sender, mut receiver) = ControlChannel::new(control).split();
        let (to_child, mut outbox) = mpsc::unbounded_channel::<ToChild>();
        let (signals, mut signal_rx) = mpsc::unbounded_channel::<Signal>();

        tokio::spawn(async move {
            while let Some(msg) = outbox.recv().await {
                if sender.send(&msg).await.is_err() {
                    break;
                }
            }
        });
        let reader_events = events.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(msg)) = receiver.recv::<ToMaster>().await {
                if reader_events
                    .send(ChildEvent::Message { kind, pid, msg })
                    .is_err()
                {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(sig) = signal_rx.recv() => {
                        // The child is not reaped yet (we own it and are not waiting), so the
                        // pid cannot have been reused.
                        if let Some(raw) = child.id() {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw as i32), sig);
                        }
                    }
                }
            };
            let status = match status {
                Ok(status) => status,
                Err(e) => {
                    tracing::error!("cannot wait for {} (pid {pid}): {e}", kind.label());
                    ExitStatus::from_raw(0x7f00)
                }
            };
            // Everything the child wrote before it exited (its ready report, say) is reported
            // before its exit: the reader ends at end-of-file, which the exit brings unless a
            // process the child started holds the socket, hence the bound.
            let _ = tokio::time::timeout(LAST_MESSAGES, reader).await;
            let _ = events.send(ChildEvent::Exited { kind, pid, status });
        });
        ChildHandle {
            kind,
            pid,
            to_child,
            signals,
        }
    }

    /// Queues a control message.
    pub(crate) fn send(&self, msg: ToChild) {
        let _ = self.to_child.send(msg);
    }

    /// Sends a signal, unless the child has already been reaped.
    pub(crate) fn signal(&self, sig: Signal) {
        let _ = self.signals.send(sig);
    }
}

/// How a child ended, in words: `exited with code 3`, `was killed by SIGKILL (out of memory?)`.
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = Signal::try_from(sig)
                .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned());
            if sig == libc::SIGKILL {
                format!("was killed by {name} (by the out-of-memory killer?)")
            } else {
                format!("was killed by {name}")
            }
        }
        None => "ended in an unknown way".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exits() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exited with code 3");
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGKILL)),
            "was killed by SIGKILL (by the out-of-memory killer?)"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGSEGV)),
            "was killed by SIGSEGV"
        );
    }
}
