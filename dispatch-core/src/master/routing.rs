//! Message routing in the master: targets resolved to slots (the Library, worker `i`), each
//! slot with a mailbox bounded in messages and bytes that holds messages while its process
//! starts or restarts, published values handed to every process that starts later (within a
//! byte budget), the membership list, and the cluster's lifecycle events.
//!
//! One concept despite its length: every path a message takes through the master (resolve the
//! target, check the sender may use the topic, deliver or hold, retain and replay).
//!
//! Order per sender and receiver holds: a sender's messages arrive in order on its control
//! socket, the master handles them one at a time, and a mailbox is emptied, in order, before
//! anything newer reaches its process.
//!
//! Every message is encoded once, as the [`ToChild::Deliver`] its receivers get, and shared by
//! them. A message for a running process whose queue holds its budget is not queued: the
//! process is *behind*; every process is told (so their sends to it fail with
//! `MessageError::ReceiverBehind` at once), the drop is counted and logged at a bounded rate,
//! and a sender that asked for an answer gets the error. A process behind for
//! `child_queue_timeout` is hung (see `watch_queues`).

use super::child::{encode, QueueFull};
use super::state::Master;
use crate::process::ChildKind;
use crate::topic::{Members, Topic};
use crate::wire::{Incoming, Outgoing, Target, ToChild, BEHIND, MAX_MESSAGE};
use bytes::Bytes;
use serde::Serialize;
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A log line that may be written at most once a second; what was held back is counted.
#[derive(Debug, Default)]
pub(super) struct RateLimit {
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    /// `Some(lines held back since the last one)` if a line may be written now.
    pub(super) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_secs(1))
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// One slot's mailbox and drop counters.
#[derive(Debug, Default)]
struct SlotMail {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// Dropped from the full mailbox (oldest first).
    dropped_waiting: u64,
    /// Not queued for the running process because its queue was full.
    dropped_behind: u64,
    log: RateLimit,
}

/// The master's message state.
#[derive(Debug)]
pub(super) struct Mailboxes {
    slots: HashMap<ChildKind, SlotMail>,
    retained: BTreeMap<String, Incoming>,
    retained_bytes: usize,
    /// The processes whose queues are full, as last told to every process.
    pub(super) behind: BTreeSet<u32>,
    limit: usize,
    byte_limit: usize,
    rejected_log: RateLimit,
    rng: u64,
}

impl Mailboxes {
    pub(super) fn new(limit: usize, byte_limit: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Mailboxes {
            slots: HashMap::new(),
            retained: BTreeMap::new(),
            retained_bytes: 0,
            behind: BTreeSet::new(),
            limit: limit.max(1),
            byte_limit,
            rejected_log: RateLimit::default(),
            rng: seed | 1,
        }
    }

    /// A xorshift step: a uniform choice among `n` (n > 0).
    fn pick(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }
}

impl Master {
    /// Routes a message sent by process `from`.
    pub(super) fn route(&mut self, from: u32, out: Outgoing) {
        let Outgoing {
            seq,
            target,
            topic,
            payload,
            retain,
        } = out;
        if let Err(reason) = self.may_send(from, target, &topic, retain) {
            tracing::warn!(
                from,
                topic = %topic.escape_debug(),
                "refused a message from pid {from}: {}",
                reason.escape_debug()
            );
            if seq != 0 {
                self.send(
                    from,
                    ToChild::Sent {
                        seq,
                        error: Some(reason),
                    },
                );
            }
            return;
        }
        let size = payload.len() + topic.len();
        let result = if size > MAX_MESSAGE {
            // The messenger never sends this: only a child that writes its own frames does.
            Err(format!(
                "the message for topic {topic:?} is {size} bytes; the limit is {MAX_MESSAGE}"
            ))
        } else {
            let msg = Incoming {
                from,
                topic,
                payload,
                version: 0,
            };
            if retain {
                self.publish(target, msg)
            } else {
                self.deliver_to(target, msg)
            }
        };
        if seq != 0 {
            self.send(
                from,
                ToChild::Sent {
                    seq,
                    error: result.err(),
                },
            );
        } else if let Err(e) = result {
            if let Some(held_back) = self.mail.rejected_log.allow() {
                tracing::warn!(
                    from,
                    "a message was not delivered: {}{}",
                    e.escape_debug(),
                    held_back_note(held_back)
                );
            }
        }
    }

    /// Whether process `from` may send on `topic`. The runtime's own topics (`dispatch:…`:
    /// lifecycle events, shared configuration) are accepted only from the Library, whose
    /// config loader validates every value it publishes; a worker may only send a
    /// `SharedConfig::set` to the Library, which validates it (and refuses it for a source that
    /// is not in memory). Anything else would let a worker publish a config version that
    /// bypasses its source and its validator, or fake a lifecycle event.
    fn may_send(&self, from: u32, target: Target, topic: &str, retain: bool) -> Result<(), String> {
        if !crate::topic::is_reserved(topic) {
            return Ok(());
        }
        let is_library = self
            .procs
            .get(&from)
            .is_some_and(|p| p.handle.kind == ChildKind::Library);
        let config_set = target == Target::Library
            && !retain
            && topic.starts_with(crate::topic::WORKER_CONFIG_SET_PREFIX);
        if is_library || config_set {
            return Ok(());
        }
        Err(format!(
            "{}`{topic}` is the runtime's own (names starting with `dispatch:`): only the \
             Library may send or publish on it; a worker changes a shared config with \
             SharedConfig::set",
            crate::messenger::RESERVED_REFUSAL
        ))
    }

    /// A message from the master itself (pid 0): the lifecycle events.
    pub(super) fn emit<T: Serialize>(&mut self, target: Target, topic: &Topic<T>, value: &T) {
        match crate::wire::codec::encode(value) {
            Ok(payload) => {
                let msg = Incoming {
                    from: 0,
                    topic: topic.name().to_owned(),
                    payload: ByteBuf::from(payload),
                    version: 0,
                };
                let _ = self.deliver_to(target, msg);
            }
            Err(e) => tracing::error!("cannot encode the {} event: {e}", topic.name()),
        }
    }

    /// A published value: numbered (the topic's last version + 1) and kept as the latest,
    /// within the budget of published bytes. The same payload again is not a new version and
    /// is not sent.
    fn publish(&mut self, target: Target, mut msg: Incoming) -> Result<(), String> {
        let last = self.mail.retained.get(&msg.topic);
        if last.is_some_and(|l| l.payload == msg.payload) {
            return Ok(());
        }
        let size = |m: &Incoming| m.topic.len() + m.payload.len();
        let after = self.mail.retained_bytes - last.map_or(0, size) + size(&msg);
        if after > self.config.published_bytes {
            let error = format!(
                "the published value of topic {:?} was refused: the master keeps at most {} bytes \
                 of published values (Cluster::published_bytes) and this one would make {after}",
                msg.topic, self.config.published_bytes
            );
            tracing::error!(from = msg.from, "{}", error.escape_debug());
            return Err(error);
        }
        msg.version = last.map_or(0, |l| l.version) + 1;
        self.mail.retained_bytes = after;
        self.mail.retained.insert(msg.topic.clone(), msg.clone());
        self.deliver_to(target, msg)
    }

    fn deliver_to(&mut self, target: Target, msg: Incoming) -> Result<(), String> {
        let topic = msg.topic.clone();
        let frame = encode(&ToChild::Deliver(msg)).map_err(|why| {
            let error = format!("cannot forward the message for topic {topic:?}: {why}");
            tracing::error!("{}", error.escape_debug());
            error
        })?;
        let workers: Vec<ChildKind> = (0..self.workers.len() as u32)
            .filter(|id| !self.workers[*id as usize].finished)
            .map(ChildKind::Worker)
            .collect();
        match target {
            Target::Broadcast => {
                let first = self.deliver(ChildKind::Library, &frame);
                workers
                    .into_iter()
                    .map(|w| self.deliver(w, &frame))
                    .fold(first, Result::and)
            }
            Target::App => workers
                .into_iter()
                .map(|w| self.deliver(w, &frame))
                .fold(Ok(()), Result::and),
            Target::Library => self.deliver(ChildKind::Library, &frame),
            Target::Random => {
                if workers.is_empty() {
                    return Err("no worker is running".into());
                }
                // A worker that is behind is chosen only when every worker is.
                let keeping_up: Vec<ChildKind> = workers
                    .iter()
                    .copied()
                    .filter(|w| {
                        self.slot_pid(*w)
                            .is_none_or(|pid| !self.mail.behind.contains(&pid))
                    })
                    .collect();
                let from = if keeping_up.is_empty() {
                    &workers
                } else {
                    &keeping_up
                };
                let chosen = from[self.mail.pick(from.len())];
                self.deliver(chosen, &frame)
            }
            Target::Pid(pid) => {
                let Some(p) = self.procs.get(&pid) else {
                    return Err(format!("no process of the cluster has pid {pid}"));
                };
                let kind = p.handle.kind;
                if p.ready {
                    let sent = p.handle.deliver(&frame);
                    sent.map_err(|full| self.on_full(pid, kind, full))
                } else {
                    // Not ready yet: it gets its slot's mailbox when it is.
                    self.enqueue(kind, frame);
                    Ok(())
                }
            }
        }
    }

    fn slot_pid(&self, slot: ChildKind) -> Option<u32> {
        match slot {
            ChildKind::Library => self.library.current,
            ChildKind::Worker(id) => self.worker_slot(id).and_then(|s| s.current),
        }
    }

    /// Forgets the mailbox of a slot a scale-down removed; returns how many messages it held.
    pub(super) fn drop_mailbox(&mut self, slot: ChildKind) -> usize {
        self.mail.slots.remove(&slot).map_or(0, |m| m.queue.len())
    }

    /// To the slot's process if it is ready and nothing waits before this message; else into
    /// the slot's mailbox.
    fn deliver(&mut self, slot: ChildKind, frame: &Bytes) -> Result<(), String> {
        let queue_empty = self
            .mail
            .slots
            .get(&slot)
            .is_none_or(|m| m.queue.is_empty());
        match self.slot_pid(slot) {
            Some(pid) if queue_empty && self.is_ready(pid) => {
                let sent = self.procs.get(&pid).map(|p| p.handle.deliver(frame));
                match sent {
                    Some(Err(full)) => Err(self.on_full(pid, slot, full)),
                    _ => Ok(()),
                }
            }
            _ => {
                self.enqueue(slot, frame.clone());
                Ok(())
            }
        }
    }

    /// A message was refused because `pid`'s queue is full: counted, logged at a bounded rate,
    /// and, the first time, every process is told that `pid` is behind. Returns the error for
    /// the sender.
    fn on_full(&mut self, pid: u32, slot: ChildKind, full: QueueFull) -> String {
        let budget = self.config.child_queue_bytes;
        let mail = self.mail.slots.entry(slot).or_default();
        mail.dropped_behind += 1;
        let dropped = mail.dropped_behind;
        if let Some(held_back) = mail.log.allow() {
            tracing::warn!(
                pid,
                "the {} is not keeping up with its messages: {} bytes in {} messages wait for it \
                 (budget {budget}); {dropped} messages for it dropped so far, senders get \
                 ReceiverBehind{}",
                slot.label(),
                full.bytes,
                full.messages,
                held_back_note(held_back)
            );
        }
        if self.mail.behind.insert(pid) {
            self.announce_behind();
        }
        format!("{BEHIND}{pid}")
    }

    /// Tells every ready process which processes are behind.
    pub(super) fn announce_behind(&mut self) {
        let pids: Vec<u32> = self.mail.behind.iter().copied().collect();
        for p in self.procs.values() {
            if p.ready {
                let _ = p.handle.send(ToChild::Behind { pids: pids.clone() });
            }
        }
    }

    /// `pid` is no longer behind (its queue drained, or it exited).
    pub(super) fn no_longer_behind(&mut self, pid: u32) {
        if self.mail.behind.remove(&pid) {
            self.announce_behind();
        }
    }

    fn enqueue(&mut self, slot: ChildKind, frame: Bytes) {
        let (limit, byte_limit) = (self.mail.limit, self.mail.byte_limit);
        let mail = self.mail.slots.entry(slot).or_default();
        let mut dropped_now = 0;
        while !mail.queue.is_empty()
            && (mail.queue.len() >= limit || mail.bytes + frame.len() > byte_limit)
        {
            if let Some(old) = mail.queue.pop_front() {
                mail.bytes -= old.len();
            }
            dropped_now += 1;
        }
        if dropped_now > 0 {
            mail.dropped_waiting += dropped_now;
            if let Some(held_back) = mail.log.allow() {
                tracing::warn!(
                    "the {}'s mailbox is full ({} messages, {} bytes wait while it is not ready; \
                     limits {limit} messages, {byte_limit} bytes): dropped the oldest ({} dropped \
                     so far){}",
                    slot.label(),
                    mail.queue.len(),
                    mail.bytes,
                    mail.dropped_waiting,
                    held_back_note(held_back)
                );
            }
        }
        mail.bytes += frame.len();
        mail.queue.push_back(frame);
    }

    /// The latest value of every published topic, for a new process: sent right after its
    /// init message, one message each.
    pub(super) fn published(&self) -> Vec<Incoming> {
        self.mail.retained.values().cloned().collect()
    }

    /// A process just became ready (or took over its slot): the membership, then its slot's
    /// mailbox, in order.
    pub(super) fn on_member_ready(&mut self, pid: u32, slot: ChildKind) {
        self.announce_members();
        if !self.mail.behind.is_empty() {
            let pids = self.mail.behind.iter().copied().collect();
            self.send(pid, ToChild::Behind { pids });
        }
        let waiting = self
            .mail
            .slots
            .get_mut(&slot)
            .map(|m| {
                m.bytes = 0;
                std::mem::take(&mut m.queue)
            })
            .unwrap_or_default();
        for frame in waiting {
            let sent = self.procs.get(&pid).map(|p| p.handle.deliver(&frame));
            if let Some(Err(full)) = sent {
                self.on_full(pid, slot, full);
            }
        }
    }

    /// Tells every ready process the current membership.
    pub(super) fn announce_members(&mut self) {
        let members = self.members();
        for p in self.procs.values() {
            if p.ready {
                let _ = p.handle.send(ToChild::Members(members.clone()));
            }
        }
    }

    /// The Library and the ready workers.
    pub(super) fn members(&self) -> Members {
        let library = self.library.current.filter(|pid| self.is_ready(*pid));
        let workers = self
            .workers
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| {
                slot.current
                    .filter(|pid| self.is_ready(*pid))
                    .map(|pid| (id as u32, pid))
            })
            .collect();
        Members { library, workers }
    }
}

/// `" (N more like it held back)"`, or nothing.
fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more like it in the last second not logged)")
    }
}
