//! Message routing in the master: targets resolved to slots (the Library, worker `i`), each
//! slot with a bounded mailbox that holds messages while its process starts or restarts,
//! published values handed to every process that starts later, the membership list, and the
//! cluster's lifecycle events.
//!
//! Order per sender and receiver holds: a sender's messages arrive in order on its control
//! socket, the master handles them one at a time, and a mailbox is emptied, in order, before
//! anything newer reaches its process.

use super::state::Master;
use crate::process::ChildKind;
use crate::topic::{Members, Topic};
use crate::wire::{Incoming, Outgoing, Target, ToChild};
use serde::Serialize;
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The master's message state.
#[derive(Debug)]
pub(super) struct Mailboxes {
    queues: HashMap<ChildKind, VecDeque<Incoming>>,
    retained: BTreeMap<String, Incoming>,
    limit: usize,
    dropped: u64,
    rng: u64,
}

impl Mailboxes {
    pub(super) fn new(limit: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Mailboxes {
            queues: HashMap::new(),
            retained: BTreeMap::new(),
            limit: limit.max(1),
            dropped: 0,
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
                topic = %topic,
                "refused a message from pid {from}: {reason}"
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
        let msg = Incoming {
            from,
            topic,
            payload,
            version: 0,
        };
        let result = if retain {
            self.publish(target, msg)
        } else {
            self.deliver_to(target, msg)
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
            tracing::warn!(from, "a message was not delivered: {e}");
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

    /// A published value: numbered (the topic's last version + 1) and kept as the latest. The
    /// same payload again is not a new version and is not sent.
    fn publish(&mut self, target: Target, mut msg: Incoming) -> Result<(), String> {
        let last = self.mail.retained.get(&msg.topic);
        if last.is_some_and(|l| l.payload == msg.payload) {
            return Ok(());
        }
        msg.version = last.map_or(0, |l| l.version) + 1;
        self.mail.retained.insert(msg.topic.clone(), msg.clone());
        self.deliver_to(target, msg)
    }

    fn deliver_to(&mut self, target: Target, msg: Incoming) -> Result<(), String> {
        let workers: Vec<ChildKind> = (0..self.workers.len() as u32)
            .filter(|id| !self.workers[*id as usize].finished)
            .map(ChildKind::Worker)
            .collect();
        match target {
            Target::Broadcast => {
                self.deliver(ChildKind::Library, msg.clone());
                for w in workers {
                    self.deliver(w, msg.clone());
                }
            }
            Target::App => {
                for w in workers {
                    self.deliver(w, msg.clone());
                }
            }
            Target::Library => self.deliver(ChildKind::Library, msg),
            Target::Random => {
                if workers.is_empty() {
                    return Err("no worker is running".into());
                }
                let chosen = workers[self.mail.pick(workers.len())];
                self.deliver(chosen, msg);
            }
            Target::Pid(pid) => {
                let Some(p) = self.procs.get(&pid) else {
                    return Err(format!("no process of the cluster has pid {pid}"));
                };
                if p.ready {
                    self.send(pid, ToChild::Deliver(msg));
                } else {
                    // Not ready yet: it gets its slot's mailbox when it is.
                    let kind = p.handle.kind;
                    self.enqueue(kind, msg);
                }
            }
        }
        Ok(())
    }

    /// To the slot's process if it is ready and nothing waits before this message; else into
    /// the slot's mailbox.
    fn deliver(&mut self, slot: ChildKind, msg: Incoming) {
        let current = match slot {
            ChildKind::Library => self.library.current,
            ChildKind::Worker(id) => self.workers[id as usize].current,
        };
        let queue_empty = self.mail.queues.get(&slot).is_none_or(VecDeque::is_empty);
        match current {
            Some(pid) if queue_empty && self.is_ready(pid) => self.send(pid, ToChild::Deliver(msg)),
            _ => self.enqueue(slot, msg),
        }
    }

    fn enqueue(&mut self, slot: ChildKind, msg: Incoming) {
        let limit = self.mail.limit;
        let queue = self.mail.queues.entry(slot).or_default();
        if queue.len() >= limit {
            queue.pop_front();
            self.mail.dropped += 1;
            let dropped = self.mail.dropped;
            if dropped == 1 || dropped.is_power_of_two() {
                tracing::warn!(
                    "the {}'s mailbox is full ({limit} messages waiting while it is not ready): \
                     dropped the oldest ({dropped} dropped so far)",
                    slot.label()
                );
            }
        }
        queue.push_back(msg);
    }

    /// The latest value of every published topic, for a new process's init message.
    pub(super) fn published(&self) -> Vec<Incoming> {
        self.mail.retained.values().cloned().collect()
    }

    /// A process just became ready (or took over its slot): the membership, then its slot's
    /// mailbox, in order.
    pub(super) fn on_member_ready(&mut self, pid: u32, slot: ChildKind) {
        self.announce_members();
        for msg in self.mail.queues.remove(&slot).unwrap_or_default() {
            self.send(pid, ToChild::Deliver(msg));
        }
    }

    /// Tells every ready process the current membership.
    pub(super) fn announce_members(&mut self) {
        let members = self.members();
        for p in self.procs.values() {
            if p.ready {
                p.handle.send(ToChild::Members(members.clone()));
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
