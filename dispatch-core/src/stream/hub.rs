//! The Library's fan-out of streams: one feed per distinct key, shared by its subscribers, and
//! one bounded buffer per subscriber.
//!
//! A [`Topic`] is one running feed (one per distinct `(service, method, args)` for a keyed
//! subscription; one per call for a plain streaming method). Its pump task reads the feed,
//! keeps the last value (keyed), and pushes each value into every subscriber's [`SubQueue`].
//! A subscriber's queue holds at most `buffer` values and `buffer_bytes` bytes. When it is full
//! the pump waits for room up to the method's `slow_after` (a subscriber that is merely slow
//! loses nothing and slows the publisher a little); past that the subscriber is *lagging*: its
//! overflow policy applies at once, without waiting, until it has drained half its buffer. So
//! a stopped subscriber holds the others up once, for `slow_after`, and holds at most its
//! buffer in the Library's memory.

use super::frames::StreamEnd;
use crate::service::{OpenFuture, Overflow, RawFeed, StreamSpec};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a subscriber's connection writes next for it.
#[derive(Debug)]
pub(crate) enum Out {
    /// The stream is open.
    Opened,
    /// A value.
    Item(Bytes),
    /// Values dropped here.
    Gap(u64),
    /// The end.
    End(Option<StreamEnd>),
}

/// One subscriber's bounded buffer in the Library.
#[derive(Debug)]
pub(crate) struct SubQueue {
    /// The stream's id on its connection.
    pub(crate) id: u64,
    spec: StreamSpec,
    state: Mutex<QState>,
    /// Signalled when the connection's writer takes values out.
    space: Notify,
    /// The connection's writer, woken when there is something to write.
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct QState {
    opened: bool,
    items: VecDeque<Bytes>,
    bytes: usize,
    missed: u64,
    lagging: bool,
    end: Option<Option<StreamEnd>>,
    /// `End` was queued: nothing more is accepted.
    done: bool,
}

impl QState {
    fn fits(&self, spec: &StreamSpec, len: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < spec.buffer.max(1) && self.bytes + len <= spec.buffer_bytes)
    }

    fn push(&mut self, item: Bytes) {
        self.bytes += item.len();
        self.items.push_back(item);
    }

    fn drop_front(&mut self) {
        if let Some(old) = self.items.pop_front() {
            self.bytes -= old.len();
            self.missed += 1;
        }
    }
}

impl SubQueue {
    /// A subscriber's queue, with `Opened` waiting in it.
    pub(crate) fn new(id: u64, spec: StreamSpec, wake: Arc<Notify>) -> Arc<SubQueue> {
        let queue = SubQueue {
            id,
            spec,
            state: Mutex::new(QState {
                opened: true,
                ..QState::default()
            }),
            space: Notify::new(),
            wake,
        };
        queue.wake.notify_one();
        Arc::new(queue)
    }

    /// Queues the end (once; anything after it is ignored).
    pub(crate) fn end(&self, end: Option<StreamEnd>) {
        let mut st = lock(&self.state);
        if !st.done {
            st.done = true;
            st.end = Some(end);
            drop(st);
            self.wake.notify_one();
            self.space.notify_one();
        }
    }

    /// Queues the replayed last value of a key (the queue is new: it fits).
    fn push_now(&self, item: Bytes) {
        lock(&self.state).push(item);
        self.wake.notify_one();
    }

    /// Queues one value, waiting up to `slow_after` for room; then applies the overflow
    /// policy. `false`: the subscriber is gone or was closed for lagging (remove it).
    async fn push_item(&self, item: Bytes) -> bool {
        let mut waited = false;
        loop {
            let space = self.space.notified();
            {
                let mut st = lock(&self.state);
                if st.done {
                    return false;
                }
                if st.fits(&self.spec, item.len()) {
                    st.push(item);
                    drop(st);
                    self.wake.notify_one();
                    return true;
                }
                if st.lagging || waited {
                    st.lagging = true;
                    let open = self.overflow(&mut st, item);
                    drop(st);
                    self.wake.notify_one();
                    return open;
                }
            }
            if tokio::time::timeout(self.spec.slow_after, space)
                .await
                .is_err()
            {
                waited = true;
            }
        }
    }

    /// The policy of a full queue.
    fn overflow(&self, st: &mut QState, item: Bytes) -> bool {
        match self.spec.overflow {
            Overflow::KeepLatest => {
                while !st.items.is_empty() {
                    st.drop_front();
                }
                st.push(item);
                true
            }
            Overflow::DropOldest => {
                while !st.fits(&self.spec, item.len()) {
                    st.drop_front();
                }
                st.push(item);
                true
            }
            Overflow::Close => {
                st.items.clear();
                st.bytes = 0;
                st.done = true;
                st.end = Some(Some(StreamEnd::Lagged {
                    buffer: self.spec.buffer as u64,
                }));
                false
            }
        }
    }

    /// Moves up to `max` frames into `out`, in order. `true` when the `End` was taken: the
    /// stream is over on this connection.
    pub(crate) fn pop(&self, out: &mut Vec<Out>, max: usize) -> bool {
        let mut st = lock(&self.state);
        let mut taken = 0;
        if std::mem::take(&mut st.opened) {
            out.push(Out::Opened);
            taken += 1;
        }
        if st.missed > 0 {
            out.push(Out::Gap(std::mem::take(&mut st.missed)));
            taken += 1;
        }
        while taken < max {
            let Some(item) = st.items.pop_front() else {
                break;
            };
            st.bytes -= item.len();
            out.push(Out::Item(item));
            taken += 1;
        }
        if st.lagging && st.items.len() <= self.spec.buffer / 2 {
            st.lagging = false;
        }
        let ended = st.items.is_empty() && st.missed == 0;
        let end = if ended { st.end.take() } else { None };
        drop(st);
        if taken > 0 {
            self.space.notify_one();
        }
        match end {
            Some(end) => {
                out.push(Out::End(end));
                true
            }
            None => false,
        }
    }
}

/// A stream's key: service, method, encoded arguments, and 0 for a keyed subscription or a
/// number of its own for a plain stream.
type Key = (String, String, Vec<u8>, u64);

/// One running feed and its subscribers.
#[derive(Debug)]
pub(crate) struct Topic {
    key: Key,
    keyed: bool,
    state: Mutex<TopicState>,
}

#[derive(Debug, Default)]
struct TopicState {
    subs: Vec<Arc<SubQueue>>,
    last: Option<Bytes>,
    ended: bool,
    pump: Option<AbortHandle>,
}

/// Every running feed of the Library.
#[derive(Debug)]
pub(crate) struct Hub {
    topics: Mutex<HashMap<Key, Arc<Topic>>>,
    next_plain: AtomicU64,
    /// The largest value a frame can carry.
    payload_limit: usize,
}

impl Hub {
    /// A hub whose values may be up to `payload_limit` bytes.
    pub(crate) fn new(payload_limit: usize) -> Hub {
        Hub {
            topics: Mutex::default(),
            next_plain: AtomicU64::new(1),
            payload_limit,
        }
    }

    /// Feeds running now, and their subscribers.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let topics = lock(&self.topics);
        let subs = topics.values().map(|t| lock(&t.state).subs.len()).sum();
        (topics.len(), subs)
    }

    /// Subscribes `sub` to `service.method(args)`: joins the feed of that key if one runs (its
    /// last value queued first), else starts one with `open`.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        (service, method, args): (String, String, Vec<u8>),
        keyed: bool,
        sub: Arc<SubQueue>,
        open: impl FnOnce(Vec<u8>) -> OpenFuture,
    ) -> Arc<Topic> {
        let nonce = if keyed {
            0
        } else {
            self.next_plain.fetch_add(1, Ordering::Relaxed)
        };
        let key = (service, method, args, nonce);
        let mut topics = lock(&self.topics);
        if let Some(topic) = topics.get(&key) {
            let mut st = lock(&topic.state);
            if !st.ended {
                if let Some(last) = &st.last {
                    sub.push_now(last.clone());
                }
                st.subs.push(sub);
                return Arc::clone(topic);
            }
        }
        let topic = Arc::new(Topic {
            key: key.clone(),
            keyed,
            state: Mutex::new(TopicState {
                subs: vec![sub],
                ..TopicState::default()
            }),
        });
        topics.insert(key.clone(), Arc::clone(&topic));
        drop(topics);
        let opening = open(key.2);
        let task = tokio::spawn(pump(Arc::clone(self), Arc::clone(&topic), opening));
        let mut st = lock(&topic.state);
        if st.ended {
            task.abort();
        } else {
            st.pump = Some(task.abort_handle());
        }
        drop(st);
        topic
    }

    /// Removes `sub` from `topic`; the last subscriber's leaving stops the feed (its close
    /// code runs).
    pub(crate) fn unsubscribe(&self, topic: &Arc<Topic>, sub: &Arc<SubQueue>) {
        let mut topics = lock(&self.topics);
        let mut st = lock(&topic.state);
        st.subs.retain(|s| !Arc::ptr_eq(s, sub));
        if st.subs.is_empty() && !st.ended {
            st.ended = true;
            if let Some(pump) = st.pump.take() {
                pump.abort();
            }
            if topics
                .get(&topic.key)
                .is_some_and(|t| Arc::ptr_eq(t, topic))
            {
                topics.remove(&topic.key);
            }
        }
    }

    /// The feed of `topic` ended (`end`: why, if not by itself): every subscriber gets the end.
    fn finish(&self, topic: &Arc<Topic>, end: Option<StreamEnd>) {
        let mut topics = lock(&self.topics);
        let mut st = lock(&topic.state);
        st.ended = true;
        st.pump = None;
        if topics
            .get(&topic.key)
            .is_some_and(|t| Arc::ptr_eq(t, topic))
        {
            topics.remove(&topic.key);
        }
        for sub in st.subs.drain(..) {
            sub.end(end.clone());
        }
    }
}

/// Runs one feed: opens it, and pushes each value to every subscriber until it ends or its
/// last subscriber leaves (then this task is aborted, and dropping the feed runs its close
/// code).
async fn pump(hub: Arc<Hub>, topic: Arc<Topic>, opening: OpenFuture) {
    let RawFeed { mut items, guard } = match AssertUnwindSafe(opening).catch_unwind().await {
        Ok(Ok(feed)) => feed,
        Ok(Err(e)) => {
            hub.finish(&topic, Some(StreamEnd::Remote(e)));
            return;
        }
        Err(panic) => {
            hub.finish(&topic, Some(panicked(&*panic)));
            return;
        }
    };
    let mut end = None;
    loop {
        let item = match AssertUnwindSafe(items.next()).catch_unwind().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(panic) => {
                end = Some(panicked(&*panic));
                break;
            }
        };
        let bytes = match item {
            Ok(bytes) if bytes.len() <= hub.payload_limit => Bytes::from(bytes),
            Ok(bytes) => {
                end = Some(StreamEnd::Remote(crate::error::RemoteError::TooLarge {
                    size: bytes.len() as u64,
                    limit: hub.payload_limit as u64,
                }));
                break;
            }
            Err(e) => {
                end = Some(StreamEnd::Remote(e));
                break;
            }
        };
        let subs = {
            let mut st = lock(&topic.state);
            if topic.keyed {
                st.last = Some(bytes.clone());
            }
            st.subs.clone()
        };
        for sub in subs {
            if !sub.push_item(bytes.clone()).await {
                hub.unsubscribe(&topic, &sub);
            }
        }
    }
    hub.finish(&topic, end);
    drop(items);
    drop(guard);
}

/// The end of a feed whose method or stream panicked.
fn panicked(panic: &(dyn std::any::Any + Send)) -> StreamEnd {
    StreamEnd::Remote(crate::error::RemoteError::Panicked {
        method: String::new(),
        message: crate::service::panic_message(panic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(overflow: Overflow) -> StreamSpec {
        StreamSpec {
            buffer: 4,
            slow_after: Duration::from_millis(10),
            overflow,
            ..StreamSpec::STREAM
        }
    }

    fn items(out: &[Out]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Out::Opened => "opened".to_owned(),
                Out::Item(b) => format!("{}", b[0]),
                Out::Gap(n) => format!("gap{n}"),
                Out::End(e) => format!("end{e:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn each_policy_bounds_a_queue_nobody_reads() {
        for (overflow, want) in [
            (
                Overflow::DropOldest,
                vec!["opened", "gap6", "6", "7", "8", "9"],
            ),
            (Overflow::KeepLatest, vec!["opened", "gap8", "8", "9"]),
            (
                Overflow::Close,
                vec!["opened", "endSome(Lagged { buffer: 4 })"],
            ),
        ] {
            let q = SubQueue::new(1, spec(overflow), Arc::new(Notify::new()));
            for n in 0..10_u8 {
                q.push_item(Bytes::from(vec![n])).await;
            }
            let mut out = Vec::new();
            q.pop(&mut out, 100);
            assert_eq!(items(&out), want, "{overflow:?}");
        }
    }
}
