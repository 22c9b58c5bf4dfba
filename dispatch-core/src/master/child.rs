//! The master's handle on one running child: a task owns the process and reports its exit;
//! another reads its control messages; sends and signals are queued, so the supervisor never
//! blocks on a stuck child.
//!
//! The reader keeps when the child was last heard from (any message: its heartbeats, which it
//! keeps to itself, and everything else, which goes on to the supervisor), and what the last
//! heartbeat said the child was doing, for the liveness watchdog.

use crate::process::{ChildKind, Spawned};
use crate::wire::{ControlChannel, ToChild, ToMaster};
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

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

/// A running child.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pub(crate) kind: ChildKind,
    pub(crate) pid: u32,
    to_child: mpsc::UnboundedSender<ToChild>,
    signals: mpsc::UnboundedSender<Signal>,
    heard: Arc<Mutex<Heard>>,
}

/// When a child was last heard from, and what its last heartbeat said it was doing.
#[derive(Debug, Clone)]
pub(crate) struct Heard {
    /// The last message of any kind.
    pub(crate) at: Instant,
    /// Calls in flight, by the last heartbeat.
    pub(crate) in_flight: u64,
    /// The Library's calls in flight by `service.method`, by the last heartbeat.
    pub(crate) methods: Vec<(String, u64)>,
}

impl Heard {
    /// `3 calls in flight (demo.slow: 2, counter.incr: 1)`, for logs.
    pub(crate) fn doing(&self) -> String {
        let mut s = format!("{} calls in flight", self.in_flight);
        if !self.methods.is_empty() {
            let by: Vec<String> = self
                .methods
                .iter()
                .map(|(m, n)| format!("{m}: {n}"))
                .collect();
            s.push_str(&format!(" ({})", by.join(", ")));
        }
        s
    }
}

/// Why the master killed a child, for the log line of its exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// It did not stop within the grace period.
    GracePeriod,
    /// It missed its liveness deadline.
    Liveness,
    /// It did not become ready in time.
    ReadyDeadline,
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
        let heard = Arc::new(Mutex::new(Heard {
            at: Instant::now(),
            in_flight: 0,
            methods: Vec::new(),
        }));
        let reader_heard = Arc::clone(&heard);
        tokio::spawn(async move {
            while let Ok(Some(mut msg)) = receiver.recv::<ToMaster>().await {
                let alive = {
                    let mut heard = reader_heard.lock().unwrap_or_else(PoisonError::into_inner);
                    heard.at = Instant::now();
                    match msg {
                        ToMaster::Alive {
                            in_flight,
                            ref mut methods,
                        } => {
                            tracing::trace!(pid, in_flight, ?methods, "heartbeat");
                            heard.in_flight = in_flight;
                            heard.methods = std::mem::take(methods);
                            true
                        }
                        _ => false,
                    }
                };
                if alive {
                    continue;
                }
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
            let _ = events.send(ChildEvent::Exited { kind, pid, status });
        });
        ChildHandle {
            kind,
            pid,
            to_child,
            signals,
            heard,
        }
    }

    /// When the child was last heard from, and what it last said it was doing.
    pub(crate) fn heard(&self) -> Heard {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long the child has been silent.
    pub(crate) fn silent_for(&self) -> Duration {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at
            .elapsed()
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
/// The hint is only for a SIGKILL the master did not send.
pub(crate) fn describe(status: ExitStatus) -> String {
    describe_kill(status, None)
}

/// [`describe`], knowing whether (and why) the master killed the child itself.
pub(crate) fn describe_kill(status: ExitStatus, killed: Option<KillReason>) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = Signal::try_from(sig)
                .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned());
            if let (Some(why), libc::SIGKILL) = (killed, sig) {
                let why = match why {
                    KillReason::GracePeriod => "after the grace period",
                    KillReason::Liveness => "after missing its liveness deadline",
                    KillReason::ReadyDeadline => "after missing its ready deadline",
                };
                format!("was killed by the master {why} ({name})")
            } else if sig == libc::SIGKILL {
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
        assert_eq!(
            describe_kill(
                ExitStatus::from_raw(libc::SIGKILL),
                Some(KillReason::GracePeriod)
            ),
            "was killed by the master after the grace period (SIGKILL)"
        );
        assert_eq!(
            describe_kill(
                ExitStatus::from_raw(libc::SIGKILL),
                Some(KillReason::Liveness)
            ),
            "was killed by the master after missing its liveness deadline (SIGKILL)"
        );
    }
}
