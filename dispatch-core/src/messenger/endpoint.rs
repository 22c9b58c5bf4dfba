//! This process's end of the messenger: sending (queued to the master, which routes), and
//! receiving (per-topic subscribers, and what waits for the first of them).
//!
//! One concept despite its length: the public `Messenger`, whose methods are mostly Egg's
//! send calls, each a few lines over one `post`; the per-topic state lives in `topics`.

use super::error::MessageError;
use super::reserved::{rejection, reserved};
use super::subscription::{Delivery, Received, Subscription};
use super::topics::Topics;
use crate::settings::DataBudgets;
use crate::topic::{Members, Topic};
use crate::wire::{
    ControlWriter, Incoming, Outgoing, Refused, Target, ToChild, ToMaster, BEHIND, MAX_MESSAGE,
};
use once_cell::sync::OnceCell;
use serde::{de::DeserializeOwned, Serialize};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot, watch};

static MESSENGER: OnceCell<Messenger> = OnceCell::new();

/// This process's end of the messenger. Exists in the Library and in every worker.
#[derive(Debug)]
pub struct Messenger {
    pid: u32,
    outbox: ControlWriter,
    seq: AtomicU64,
    acks: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    topics: Mutex<Topics>,
    members: watch::Sender<Members>,
    /// The processes the master says are not keeping up (see [`ToChild::Behind`]).
    behind: Mutex<Vec<u32>>,
    /// Whether `behind` is not empty: the fast path of every send.
    any_behind: AtomicBool,
}

impl Messenger {
    /// The messenger of this process.
    ///
    /// # Panics
    /// Outside the Library and the workers of a running cluster. Use [`Messenger::try_get`].
    pub fn get() -> &'static Messenger {
        match MESSENGER.get() {
            Some(m) => m,
            None => panic!(
                "Messenger::get() called outside a cluster process: the messenger exists in the \
                 Library and in workers started by Cluster::run (use Messenger::try_get())"
            ),
        }
    }

    /// The messenger of this process, or `None` outside the Library and the workers.
    pub fn try_get() -> Option<&'static Messenger> {
        MESSENGER.get()
    }

    pub(crate) fn install(outbox: ControlWriter, budgets: &DataBudgets) -> &'static Messenger {
        MESSENGER.get_or_init(|| Messenger {
            pid: std::process::id(),
            outbox,
            seq: AtomicU64::new(0),
            acks: Mutex::new(HashMap::new()),
            topics: Mutex::new(Topics::new(budgets.into())),
            members: watch::channel(Members::default()).0,
            behind: Mutex::new(Vec::new()),
            any_behind: AtomicBool::new(false),
        })
    }

    /// To the Library and every worker, this process included (Egg's `broadcast`).
    ///
    /// # Errors
    /// When the value cannot be encoded or is too large, or the master is gone.
    pub fn broadcast<T: Serialize>(&self, topic: &Topic<T>, value: &T) -> Result<(), MessageError> {
        reserved(topic.name())?;
        self.post(Target::Broadcast, topic, value, false, 0)
    }

    /// To every worker (Egg's `sendToApp`).
    ///
    /// # Errors
    /// As [`broadcast`](Messenger::broadcast).
    pub fn send_to_app<T: Serialize>(
        &self,
        topic: &Topic<T>,
        value: &T,
    ) -> Result<(), MessageError> {
        reserved(topic.name())?;
        self.post(Target::App, topic, value, false, 0)
    }

    /// To the Library (Egg's `sendToAgent`).
    ///
    /// # Errors
    /// As [`broadcast`](Messenger::broadcast).
    pub fn send_to_library<T: Serialize>(
        &self,
        topic: &Topic<T>,
        value: &T,
    ) -> Result<(), MessageError> {
        reserved(topic.name())?;
        self.post(Target::Library, topic, value, false, 0)
    }

    /// To one worker chosen at random by the master (Egg's `sendRandom`).
    ///
    /// # Errors
    /// As [`broadcast`](Messenger::broadcast).
    pub fn send_random<T: Serialize>(
        &self,
        topic: &Topic<T>,
        value: &T,
    ) -> Result<(), MessageError> {
        reserved(topic.name())?;
        self.post(Target::Random, topic, value, false, 0)
    }

    /// To the process `pid` (Egg's `sendTo`); resolves once the master has accepted it for a
    /// member of the cluster.
    ///
    /// # Errors
    /// [`MessageError::UnknownPid`] when no process of the cluster has that pid, and the errors
    /// of [`broadcast`](Messenger::broadcast).
    pub async fn send_to<T: Serialize>(
        &self,
        pid: u32,
        topic: &Topic<T>,
        value: &T,
    ) -> Result<(), MessageError> {
        reserved(topic.name())?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.acks).insert(seq, tx);
        if let Err(e) = self.post(Target::Pid(pid), topic, value, false, seq) {
            lock(&self.acks).remove(&seq);
            return Err(e);
        }
        match rx.await {
            Ok(None) => Ok(()),
            Ok(Some(reason)) if reason.starts_with("no process") => {
                Err(MessageError::UnknownPid { pid })
            }
            Ok(Some(reason)) if reason.starts_with(BEHIND) => Err(MessageError::ReceiverBehind {
                topic: topic.name().to_owned(),
                pid,
            }),
            Ok(Some(reason)) => Err(rejection(reason)),
            Err(_) => Err(MessageError::Closed),
        }
    }

    /// Publishes `value` to every worker as the topic's latest value: the master keeps it and
    /// replays it to workers that start (or restart) later, and [`subscribe`](Messenger::subscribe)
    /// yields it first. This is how the Library fans out what it holds once for the host.
    ///
    /// # Errors
    /// As [`broadcast`](Messenger::broadcast).
    pub fn publish<T: Serialize>(&self, topic: &Topic<T>, value: &T) -> Result<(), MessageError> {
        reserved(topic.name())?;
        self.post(Target::App, topic, value, true, 0)
    }

    /// [`publish`](Messenger::publish) for the runtime itself, on its reserved topics (the
    /// Library's config loader).
    pub(crate) fn publish_runtime<T: Serialize>(
        &self,
        topic: &Topic<T>,
        value: &T,
    ) -> Result<(), MessageError> {
        self.post(Target::App, topic, value, true, 0)
    }

    /// [`send_to_library`](Messenger::send_to_library) for the runtime itself, on its reserved
    /// topics (a worker's `SharedConfig::set`).
    pub(crate) fn send_to_library_runtime<T: Serialize>(
        &self,
        topic: &Topic<T>,
        value: &T,
    ) -> Result<(), MessageError> {
        self.post(Target::Library, topic, value, false, 0)
    }

    /// Sends without this process's check of reserved topics, and waits for the master's
    /// verdict (tests use it to play a worker that bypasses the API; the master refuses).
    pub(crate) async fn send_unchecked(
        &self,
        target: Target,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), MessageError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.acks).insert(seq, tx);
        let sent = self.outbox.send(&ToMaster::Send(Outgoing {
            seq,
            target,
            topic: topic.to_owned(),
            payload: ByteBuf::from(payload),
            retain,
        }));
        if sent.is_err() {
            lock(&self.acks).remove(&seq);
            return Err(MessageError::Closed);
        }
        match rx.await {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(rejection(reason)),
            Err(_) => Err(MessageError::Closed),
        }
    }

    /// Every message of `topic` from now on (and those that arrived before anyone subscribed,
    /// as far as the unclaimed budgets kept them), decoded. A message that does not decode as `T` is logged and skipped.
    pub fn on<T: DeserializeOwned>(&self, topic: &Topic<T>) -> Subscription<T> {
        self.subscription(topic, false)
    }

    /// The next message of `topic` (Egg's `once`).
    ///
    /// # Errors
    /// [`MessageError::Closed`] if the process is shutting down.
    pub async fn once<T: DeserializeOwned>(
        &self,
        topic: &Topic<T>,
    ) -> Result<Received<T>, MessageError> {
        use futures::StreamExt;
        self.on(topic).next().await.ok_or(MessageError::Closed)
    }

    /// The topic's latest published value (if any) and then every later one: a watch that
    /// survives Library restarts, since the master keeps the latest value.
    pub fn subscribe<T: DeserializeOwned>(&self, topic: &Topic<T>) -> Subscription<T> {
        self.subscription(topic, true)
    }

    /// The topic's latest published value and its version, if one has arrived.
    pub fn latest<T: DeserializeOwned>(&self, topic: &Topic<T>) -> Option<Received<T>> {
        let topics = lock(&self.topics);
        let delivery = topics.map.get(topic.name())?.latest.as_ref()?;
        let value = crate::wire::codec::decode(&delivery.payload).ok()?;
        Some(Received {
            from: delivery.from,
            version: delivery.version,
            value,
        })
    }

    /// The cluster's live processes, as last told by the master.
    pub fn members(&self) -> Members {
        self.members.borrow().clone()
    }

    /// A watch of the membership: changes whenever a process becomes ready or exits.
    pub fn watch_members(&self) -> watch::Receiver<Members> {
        self.members.subscribe()
    }

    /// This process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn post<T: Serialize>(
        &self,
        target: Target,
        topic: &Topic<T>,
        value: &T,
        retain: bool,
        seq: u64,
    ) -> Result<(), MessageError> {
        let payload = crate::wire::codec::encode(value).map_err(|e| MessageError::Encode {
            topic: topic.name().to_owned(),
            message: e.to_string(),
        })?;
        if payload.len() + topic.name().len() > MAX_MESSAGE {
            return Err(MessageError::TooLarge {
                topic: topic.name().to_owned(),
                size: payload.len(),
                limit: MAX_MESSAGE,
            });
        }
        if self.any_behind.load(Ordering::Relaxed) {
            if let Some(pid) = self.behind_receiver(target) {
                return Err(MessageError::ReceiverBehind {
                    topic: topic.name().to_owned(),
                    pid,
                });
            }
        }
        let sent = self.outbox.send(&ToMaster::Send(Outgoing {
            seq,
            target,
            topic: topic.name().to_owned(),
            payload: ByteBuf::from(payload),
            retain,
        }));
        match sent {
            Ok(()) => Ok(()),
            Err(Refused::Full { queued, budget }) => Err(MessageError::Backlog {
                topic: topic.name().to_owned(),
                queued,
                budget,
            }),
            Err(Refused::TooLarge { size }) => Err(MessageError::TooLarge {
                topic: topic.name().to_owned(),
                size,
                limit: MAX_MESSAGE,
            }),
            Err(Refused::Encode(message)) => Err(MessageError::Encode {
                topic: topic.name().to_owned(),
                message,
            }),
            Err(Refused::Closed) => Err(MessageError::Closed),
        }
    }

    /// A receiver of a message to `target` that the master says is behind, if any. A random
    /// worker is behind only when every worker is (the master picks one that is not).
    fn behind_receiver(&self, target: Target) -> Option<u32> {
        let behind = lock(&self.behind);
        let members = self.members.borrow();
        let is_behind = |pid: &u32| behind.contains(pid);
        match target {
            Target::Pid(pid) => behind.contains(&pid).then_some(pid),
            Target::Library => members.library.filter(is_behind),
            Target::App => members.workers.iter().map(|(_, p)| *p).find(is_behind),
            Target::Broadcast => members
                .library
                .filter(is_behind)
                .or_else(|| members.workers.iter().map(|(_, p)| *p).find(is_behind)),
            Target::Random => {
                let all = !members.workers.is_empty()
                    && members.workers.iter().all(|(_, p)| is_behind(p));
                all.then(|| members.workers.first().map(|(_, p)| *p))
                    .flatten()
            }
        }
    }

    /// The master's list of processes that are behind.
    fn set_behind(&self, pids: Vec<u32>) {
        let mut behind = lock(&self.behind);
        self.any_behind.store(!pids.is_empty(), Ordering::Relaxed);
        *behind = pids;
    }

    fn subscription<T: DeserializeOwned>(
        &self,
        topic: &Topic<T>,
        with_latest: bool,
    ) -> Subscription<T> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut topics = lock(&self.topics);
        // The first subscriber takes what arrived before anyone subscribed.
        let waiting = topics.claim(topic.name());
        let state = topics.map.entry(topic.name().to_owned()).or_default();
        if with_latest {
            if let Some(latest) = &state.latest {
                let _ = tx.send(Arc::clone(latest));
            }
        }
        for waiting in waiting {
            if !(with_latest
                && state
                    .latest
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(l, &waiting)))
            {
                let _ = tx.send(waiting);
            }
        }
        state.subscribers.push(tx);
        Subscription {
            topic: topic.name(),
            rx,
            ty: PhantomData,
        }
    }

    /// Takes what the master handed over in the init message: the membership and the
    /// published values.
    pub(crate) fn preload(&self, members: Members, published: Vec<Incoming>) {
        self.set_members(members);
        for incoming in published {
            self.deliver(incoming);
        }
    }

    /// Takes the master's messenger messages (deliveries, acknowledgements, membership);
    /// returns any other message for the caller to handle.
    pub(crate) fn handle(&self, msg: ToChild) -> Option<ToChild> {
        match msg {
            ToChild::Deliver(incoming) => self.deliver(incoming),
            ToChild::Sent { seq, error } => self.acknowledge(seq, error),
            ToChild::Members(members) => self.set_members(members),
            ToChild::Behind { pids } => self.set_behind(pids),
            other => return Some(other),
        }
        None
    }

    /// Hands a message from the master to this process's subscribers.
    fn deliver(&self, incoming: Incoming) {
        let delivery = Arc::new(Delivery {
            from: incoming.from,
            version: incoming.version,
            payload: incoming.payload,
        });
        let mut topics = lock(&self.topics);
        let state = topics.map.entry(incoming.topic.clone()).or_default();
        if incoming.version > 0 {
            // A replay of an older version (after a restart) never replaces a newer one.
            if state
                .latest
                .as_ref()
                .is_some_and(|l| l.version >= incoming.version)
            {
                return;
            }
            state.latest = Some(Arc::clone(&delivery));
        }
        state.subscribers.retain(|s| !s.is_closed());
        if state.subscribers.is_empty() {
            topics.hold(&incoming.topic, delivery);
            return;
        }
        for s in &state.subscribers {
            let _ = s.send(Arc::clone(&delivery));
        }
    }

    /// The master's answer to a [`send_to`](Messenger::send_to).
    fn acknowledge(&self, seq: u64, error: Option<String>) {
        if let Some(tx) = lock(&self.acks).remove(&seq) {
            let _ = tx.send(error);
        }
    }

    /// The master's new membership list.
    fn set_members(&self, members: Members) {
        self.members.send_replace(members);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (single map operations).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
