//! The master's handle on one running child: a task owns the process and reports its exit;
//! another reads its control messages; sends and signals are queued, so the supervisor never
//! blocks on a stuck child.
//!
//! One concept despite its length: the three tasks of one child (its waiter, its reader and
//! its writer) share the handle's queue accounting, so they stay together.
//!
//! The reader keeps when the child was last heard from (any message: its heartbeats, which it
//! keeps to itself, and everything else, which goes on to the supervisor), and what the last
//! heartbeat said the child was doing, for the liveness watchdog.
//! another reads its control messages; another writes them. Sends and signals are queued, so
//! the supervisor never blocks on a stuck child, and both directions are bounded in bytes:
//!
//! - the outgoing queue holds at most the child's budget (`Settings::child_queue_bytes`):
//!   [`ChildHandle::deliver`] refuses a message past it (the caller tells the sender and, if
//!   it stays full, treats the child as hung); control messages (few and small) are always
//!   queued but counted;
//! - the reader holds at most [`READ_AHEAD`] bytes of messages the supervisor has not handled
//!   yet; past that it stops reading the socket, so a child that floods the master waits
//!   (its own queue to the master then fills, and its sends fail).
//!
//! A child that writes a frame over the limit or a message that does not decode is reported
//! as [`ChildEvent::Broken`], and never read again.

use crate::process::{ChildKind, Spawned};
use crate::wire::{
    codec, ControlChannel, ControlSender, Served, ToChild, ToMaster, MAX_CONTROL_FRAME,
};
use bytes::Bytes;
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes of one child's messages read but not yet handled by the supervisor, at most.
pub(crate) const READ_AHEAD: usize = 4 * MAX_CONTROL_FRAME;

/// Bytes counted for each queued message beyond its frame: the queue's own bookkeeping.
const ENTRY_OVERHEAD: usize = 64;

/// The most the writer task buffers before it writes to the socket.
const BATCH_BYTES: usize = 256 << 10;

/// What the children tell the supervisor.
#[derive(Debug)]
pub(crate) enum ChildEvent {
    /// A control message from child `pid`.
    Message {
        kind: ChildKind,
        pid: u32,
        msg: ToMaster,
        /// The message's share of [`READ_AHEAD`], given back when the event is dropped.
        _permit: Option<OwnedSemaphorePermit>,
    },
    /// Child `pid` wrote something that is not a control message; it is no longer read.
    Broken {
        kind: ChildKind,
        pid: u32,
        /// What was wrong, in words (may quote the child's bytes: escape before logging).
        reason: String,
    },
    /// Child `pid`'s outgoing queue, full before, is down to half its budget.
    Drained { pid: u32 },
    /// Child `pid` exited and was reaped.
    Exited {
        kind: ChildKind,
        pid: u32,
        status: ExitStatus,
    },
}

/// The outgoing queue's counters, shared by the handle and the writer task.
#[derive(Debug, Default)]
struct Queue {
    bytes: AtomicUsize,
    messages: AtomicUsize,
    /// A message was refused (or queued past the budget) and the queue has not drained to
    /// half its budget since.
    full: AtomicBool,
}

/// A message refused because the child's queue holds its budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueFull {
    /// Bytes queued for the child.
    pub(crate) bytes: usize,
    /// Messages queued for the child.
    pub(crate) messages: usize,
}
/// How long a child's exit waits for the messages it wrote before exiting to be read.
const LAST_MESSAGES: std::time::Duration = std::time::Duration::from_millis(500);

/// A running child.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pub(crate) kind: ChildKind,
    pub(crate) pid: u32,
    to_child: mpsc::UnboundedSender<Bytes>,
    queue: Arc<Queue>,
    budget: usize,
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
    /// Its counts, by the last heartbeat (for recycling).
    pub(crate) served: Served,
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
    /// It broke the control protocol (garbage on its control socket).
    Broken,
    /// It left its queue full past the deadline.
    Hung,
}

impl ChildHandle {
    /// Starts the tasks that watch `spawned`, reporting to `events`; at most `budget` bytes
    /// are queued for it.
    pub(crate) fn watch(
        kind: ChildKind,
        spawned: Spawned,
        budget: usize,
        events: mpsc::UnboundedSender<ChildEvent>,
    ) -> Self {
        let Spawned {
            mut child,
            pid,
            control,
        } = spawned;
        let (sender, mut receiver) = ControlChannel::new(control).split();
        let (to_child, outbox) = mpsc::unbounded_channel::<Bytes>();
        let (signals, mut signal_rx) = mpsc::unbounded_channel::<Signal>();
        let queue = Arc::new(Queue::default());

        tokio::spawn(write(
            kind,
            pid,
            sender,
            outbox,
            Arc::clone(&queue),
            budget,
            events.clone(),
        ));
        let reader_events = events.clone();
        let heard = Arc::new(Mutex::new(Heard {
            at: Instant::now(),
            in_flight: 0,
            methods: Vec::new(),
            served: Served::default(),
        }));
        let reader_heard = Arc::clone(&heard);
        let reader = tokio::spawn(async move {
            let read_ahead = Arc::new(Semaphore::new(READ_AHEAD));
            loop {
                let frame = match receiver.recv_frame().await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        let reason = format!("wrote an invalid frame: {e}");
                        let _ = reader_events.send(ChildEvent::Broken { kind, pid, reason });
                        break;
                    }
                    Err(e) => {
                        // A reset: the child is gone; its exit is reported by the waiter.
                        tracing::debug!(pid, "stopped reading the {}: {e}", kind.label());
                        break;
                    }
                };
                reader_heard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .at = Instant::now();
                let msg = match codec::decode::<ToMaster>(&frame) {
                    Ok(msg) => msg,
                    Err(e) => {
                        let reason = format!(
                            "wrote a control message that does not decode ({} bytes): {e}",
                            frame.len()
                        );
                        let _ = reader_events.send(ChildEvent::Broken { kind, pid, reason });
                        break;
                    }
                };
                // Heartbeats stay here: the watchdog reads them from `heard`.
                if let ToMaster::Alive {
                    in_flight,
                    methods,
                    served,
                } = msg
                {
                    tracing::trace!(pid, in_flight, ?methods, ?served, "heartbeat");
                    let mut heard = reader_heard.lock().unwrap_or_else(PoisonError::into_inner);
                    heard.in_flight = in_flight;
                    heard.methods = methods;
                    heard.served = served;
                    continue;
                }
                let share = u32::try_from(frame.len().clamp(1, READ_AHEAD)).unwrap_or(u32::MAX);
                let permit = Arc::clone(&read_ahead).acquire_many_owned(share).await.ok();
                let event = ChildEvent::Message {
                    kind,
                    pid,
                    msg,
                    _permit: permit,
                };
                if reader_events.send(event).is_err() {
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
            queue,
            budget,
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

    /// Queues a control message, whatever the queue holds (control messages are few and
    /// small); `Err` if the queue is now past its budget, so the caller can watch the child.
    pub(crate) fn send(&self, msg: ToChild) -> Result<(), QueueFull> {
        match encode(&msg) {
            Ok(frame) => self.push(frame),
            Err(why) => {
                tracing::error!(
                    pid = self.pid,
                    "cannot send a control message to the {}: {why}",
                    self.kind.label()
                );
                Ok(())
            }
        }
    }

    /// Queues an encoded message unless the queue would exceed its budget.
    pub(crate) fn deliver(&self, frame: &Bytes) -> Result<(), QueueFull> {
        let bytes = self.queue.bytes.load(Ordering::Relaxed);
        if bytes + frame.len() + ENTRY_OVERHEAD > self.budget {
            self.queue.full.store(true, Ordering::Relaxed);
            return Err(self.queued());
        }
        self.push(frame.clone())
    }

    fn push(&self, frame: Bytes) -> Result<(), QueueFull> {
        let size = frame.len() + ENTRY_OVERHEAD;
        let bytes = self.queue.bytes.fetch_add(size, Ordering::Relaxed) + size;
        self.queue.messages.fetch_add(1, Ordering::Relaxed);
        if self.to_child.send(frame).is_err() {
            self.queue.bytes.fetch_sub(size, Ordering::Relaxed);
            self.queue.messages.fetch_sub(1, Ordering::Relaxed);
            return Ok(());
        }
        if bytes > self.budget {
            self.queue.full.store(true, Ordering::Relaxed);
            return Err(self.queued());
        }
        Ok(())
    }

    /// What is queued for the child now.
    pub(crate) fn queued(&self) -> QueueFull {
        QueueFull {
            bytes: self.queue.bytes.load(Ordering::Relaxed),
            messages: self.queue.messages.load(Ordering::Relaxed),
        }
    }

    /// Whether the queue has been full and not drained to half its budget since.
    pub(crate) fn is_full(&self) -> bool {
        self.queue.full.load(Ordering::Relaxed)
    }

    /// Sends a signal, unless the child has already been reaped.
    pub(crate) fn signal(&self, sig: Signal) {
        let _ = self.signals.send(sig);
    }
}

/// `msg` encoded, checked against the frame limit.
pub(crate) fn encode(msg: &ToChild) -> Result<Bytes, String> {
    let bytes = codec::encode(msg).map_err(|e| format!("cannot encode it: {e}"))?;
    if bytes.len() > MAX_CONTROL_FRAME {
        return Err(format!(
            "it is {} bytes encoded, over the control frame limit of {MAX_CONTROL_FRAME}",
            bytes.len()
        ));
    }
    Ok(Bytes::from(bytes))
}

/// Logs why a child's control socket took no more. A child that has exited (or is exiting:
/// its side closed) makes the write fail with a broken pipe or a reset: that is how every
/// child's end looks from here, and its exit is reported on its own, so it is not a warning.
fn write_failed(kind: ChildKind, pid: u32, e: &std::io::Error) {
    if matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    ) {
        tracing::debug!(
            pid,
            "the {} closed its control socket ({e}): what is queued for it is dropped",
            kind.label()
        );
    } else {
        tracing::warn!(
            pid,
            "cannot write to the {}'s control socket: {e}",
            kind.label()
        );
    }
}

/// The writer task: everything queued goes out in order, batched into few writes. A write
/// error (the child is gone or its socket broke) is logged once; what is queued after it is
/// discarded and uncounted, so the queue never holds memory for a dead child.
async fn write(
    kind: ChildKind,
    pid: u32,
    mut sender: ControlSender,
    mut outbox: mpsc::UnboundedReceiver<Bytes>,
    queue: Arc<Queue>,
    budget: usize,
    events: mpsc::UnboundedSender<ChildEvent>,
) {
    let mut broken = false;
    while let Some(first) = outbox.recv().await {
        let mut frame = Some(first);
        let (mut bytes, mut messages) = (0, 0);
        while let Some(current) = frame.take() {
            bytes += current.len() + ENTRY_OVERHEAD;
            messages += 1;
            if !broken {
                if let Err(e) = sender.feed(current).await {
                    broken = true;
                    write_failed(kind, pid, &e);
                }
            }
            if bytes < BATCH_BYTES {
                frame = outbox.try_recv().ok();
            }
        }
        if !broken {
            if let Err(e) = sender.flush().await {
                broken = true;
                write_failed(kind, pid, &e);
            }
        }
        let left = queue.bytes.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        queue.messages.fetch_sub(messages, Ordering::Relaxed);
        if left <= budget / 2 && queue.full.swap(false, Ordering::Relaxed) {
            let _ = events.send(ChildEvent::Drained { pid });
        }
    }
}

/// How a child ended, in words: `exited with code 3`, `was killed by SIGKILL (not by the
/// master: …)`. Who sent a SIGKILL is said only for one the master did not send.
pub(crate) fn describe(status: ExitStatus) -> String {
    describe_kill(status, None, None)
}

/// [`describe`], knowing whether (and why) the master killed the child itself, and the
/// kernel's count of out-of-memory kills when the child started (to tell whether the OOM
/// killer sent a SIGKILL the master did not).
pub(crate) fn describe_kill(
    status: ExitStatus,
    killed: Option<KillReason>,
    oom_kills_at_start: Option<u64>,
) -> String {
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
                    KillReason::Broken => "for breaking the control protocol",
                    KillReason::Hung => "for leaving its messages unread",
                };
                format!("was killed by the master {why} ({name})")
            } else if sig == libc::SIGKILL {
                let now = oom_kills_at_start.and_then(|_| crate::process::oom::kills());
                let sender = crate::process::oom::sender(oom_kills_at_start, now);
                format!("was killed by {name} ({sender})")
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
            "was killed by SIGKILL (not by the master: by the kernel's out-of-memory killer or \
             by another process)"
        );
        // With the count from the child's start: the host's count now decides.
        let now = crate::process::oom::kills();
        let text = describe_kill(ExitStatus::from_raw(libc::SIGKILL), None, now);
        assert!(text.starts_with("was killed by SIGKILL (not by the master, nor by the kernel's out-of-memory killer") || text.contains("most likely by the kernel's"), "{text}");
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGSEGV)),
            "was killed by SIGSEGV"
        );
        assert_eq!(
            describe_kill(
                ExitStatus::from_raw(libc::SIGKILL),
                Some(KillReason::GracePeriod),
                None
            ),
            "was killed by the master after the grace period (SIGKILL)"
        );
        assert_eq!(
            describe_kill(
                ExitStatus::from_raw(libc::SIGKILL),
                Some(KillReason::Liveness),
                None
            ),
            "was killed by the master after missing its liveness deadline (SIGKILL)"
        );
    }
}
