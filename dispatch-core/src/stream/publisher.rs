//! [`Publisher`]: a service's handle to push values per key into the feeds it returned.

use crate::service::Feed;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// Values waiting between [`Publisher::publish`] and the Library's fan-out, per feed; past it
/// `publish` waits (the fan-out itself never waits on a slow subscriber for long: see
/// `#[subscription]`).
const FEED_CHANNEL: usize = 64;

type Feeds<K, T> = Arc<Mutex<HashMap<K, Vec<mpsc::Sender<T>>>>>;

/// Pushes values per key into the [`Feed`]s a service returned: the upstream side of a keyed
/// subscription. Keep one in the service; return [`Publisher::feed`] from the subscription
/// method, and call [`Publisher::publish`] from the code that hears from upstream.
///
/// ```no_run
/// use dispatch::prelude::*;
/// use dispatch::{Feed, Publisher};
///
/// #[derive(Default)]
/// pub struct Registry {
///     addresses: Publisher<String, Vec<String>>,
/// }
///
/// #[library_service]
/// impl Registry {
///     /// Runs once per service name, whatever the number of workers watching it.
///     #[subscription(buffer = 16, policy = keep_latest)]
///     pub fn watch(&self, name: String) -> Feed<Vec<String>> {
///         // Open the upstream watch of `name` here.
///         self.addresses.feed(name).on_close(|| { /* close the upstream watch */ })
///     }
///
///     /// Upstream's news, pushed to every worker watching `name`.
///     pub async fn announce(&self, name: String, addresses: Vec<String>) -> usize {
///         self.addresses.publish(&name, addresses).await
///     }
/// }
/// ```
pub struct Publisher<K, T> {
    feeds: Feeds<K, T>,
}

impl<K, T> fmt::Debug for Publisher<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Publisher").field("keys", &keys).finish()
    }
}

impl<K, T> Default for Publisher<K, T> {
    fn default() -> Self {
        Publisher {
            feeds: Arc::default(),
        }
    }
}

impl<K, T> Clone for Publisher<K, T> {
    fn clone(&self) -> Self {
        Publisher {
            feeds: Arc::clone(&self.feeds),
        }
    }
}

impl<K, T> Publisher<K, T>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Clone + Send + 'static,
{
    /// A publisher with no feed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A feed of the values published for `key` from now on. It is removed from the publisher
    /// when the Library drops it.
    pub fn feed(&self, key: K) -> Feed<T> {
        let (tx, mut rx) = mpsc::channel(FEED_CHANNEL);
        self.lock().entry(key.clone()).or_default().push(tx);
        let feeds = Arc::clone(&self.feeds);
        let items = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Feed::new(items).on_close(move || {
            let mut feeds = feeds.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(senders) = feeds.get_mut(&key) {
                senders.retain(|s| !s.is_closed());
                if senders.is_empty() {
                    feeds.remove(&key);
                }
            }
        })
    }

    /// Sends `value` to every feed of `key`, in order with the values published before; waits
    /// while a feed's channel to the Library's fan-out is full. Returns the feeds reached (0:
    /// nobody subscribes to `key` now).
    pub async fn publish(&self, key: &K, value: T) -> usize {
        let senders: Vec<mpsc::Sender<T>> = match self.lock().get(key) {
            Some(senders) => senders.clone(),
            None => return 0,
        };
        let mut reached = 0;
        for tx in senders {
            if tx.send(value.clone()).await.is_ok() {
                reached += 1;
            }
        }
        reached
    }

    /// The keys with at least one feed now.
    pub fn keys(&self) -> Vec<K> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Vec<mpsc::Sender<T>>>> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
