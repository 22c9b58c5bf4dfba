//! The contract of streaming methods: what a service method returns ([`Feed`]), how the macro
//! declares it ([`StreamSpec`], [`Overflow`]), and the type-erased feed the Library runs
//! ([`RawFeed`]).

use crate::error::RemoteError;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::fmt;
use std::time::Duration;

/// What a subscriber's buffer does when it is full and its subscriber still has not read
/// (after the stall window, see [`StreamSpec`]). Chosen per method:
/// `#[subscription(policy = keep_latest)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop every value waiting and keep the newest only: for state (the latest list of a
    /// registry key). The subscriber sees `Err(Error::StreamGap { missed })`, then the newest.
    KeepLatest,
    /// Drop the oldest waiting value for each new one: the subscriber sees
    /// `Err(Error::StreamGap { missed })` where values are missing, then the rest in order.
    DropOldest,
    /// End the subscriber's stream with `Err(Error::StreamLagged { .. })`: for streams where a
    /// missing value would be wrong. The subscriber may subscribe again.
    Close,
}

/// How the Library runs a streaming method (generated from `#[subscription(…)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    /// Subscriptions with equal arguments share one feed: the method runs once per distinct key
    /// and its feed is closed when the last subscriber leaves; the last value is replayed to a
    /// late subscriber. `false` (a plain streaming method): every call runs the method.
    pub keyed: bool,
    /// Values buffered per subscriber in the Library.
    pub buffer: usize,
    /// Bytes buffered per subscriber in the Library (a single value larger than this is still
    /// sent, alone).
    pub buffer_bytes: usize,
    /// How long the Library waits for room in a full buffer before the subscriber counts as
    /// lagging and [`overflow`](StreamSpec::overflow) applies (without waiting, until it has
    /// drained half its buffer). Meanwhile the feed's other subscribers wait too: a subscriber
    /// that is only slow loses nothing; a stopped one holds the others up once, this long.
    pub slow_after: Duration,
    /// What happens when the buffer is full.
    pub overflow: Overflow,
}

impl StreamSpec {
    /// A plain streaming method's spec: not keyed, 256 values and 1 MiB per subscriber, a
    /// subscriber lagging after 1 s without room, values then dropped oldest first (with a gap
    /// notice).
    pub const STREAM: StreamSpec = StreamSpec {
        keyed: false,
        buffer: 256,
        buffer_bytes: 1 << 20,
        slow_after: Duration::from_millis(1000),
        overflow: Overflow::DropOldest,
    };
}

/// A stream of values from a service method to its callers: what a streaming method returns.
///
/// ```no_run
/// use dispatch::prelude::*;
/// use dispatch::Feed;
///
/// #[derive(Default)]
/// pub struct Ticker;
///
/// #[library_service]
/// impl Ticker {
///     /// 0, 1, …, n - 1.
///     pub fn count(&self, n: u64) -> Feed<u64> {
///         Feed::new(futures::stream::iter(0..n)).on_close(|| println!("the caller left"))
///     }
/// }
/// ```
///
/// The caller's stub returns `Result<RemoteStream<T>, dispatch::Error>`; the stream ends when
/// this one ends, and the Library drops this one (running its [`on_close`](Feed::on_close)
/// closures) when the caller drops its stream or its worker goes away.
pub struct Feed<T> {
    items: BoxStream<'static, T>,
    on_close: Vec<Box<dyn FnOnce() + Send>>,
}

impl<T> fmt::Debug for Feed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("on_close", &self.on_close.len())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Feed<T> {
    /// A feed of the values of `stream`, in order; it ends when `stream` ends.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        Feed {
            items: stream.boxed(),
            on_close: Vec::new(),
        }
    }

    /// A feed that ends at once, without a value.
    pub fn empty() -> Self {
        Feed::new(futures::stream::empty())
    }

    /// The same feed with `first` before its values: the current state of a key, read from
    /// upstream when the subscription opens, before the changes that follow.
    #[must_use]
    pub fn starting_with(self, first: T) -> Self {
        Feed {
            items: futures::stream::once(async move { first })
                .chain(self.items)
                .boxed(),
            on_close: self.on_close,
        }
    }

    /// Runs `f` once when the Library drops the feed: its stream ended, or its last subscriber
    /// left (for a keyed subscription, the close code of the key). Closures run in the order
    /// they were added.
    #[must_use]
    pub fn on_close(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_close.push(Box::new(f));
        self
    }

    /// The feed with each value encoded by `encode`, for the Library.
    pub fn into_raw(self, encode: fn(&T) -> Result<Vec<u8>, RemoteError>) -> RawFeed {
        RawFeed {
            items: self.items.map(move |item| encode(&item)).boxed(),
            guard: CloseGuard(self.on_close),
        }
    }
}

/// A feed with its values encoded: what the Library runs and fans out.
pub struct RawFeed {
    /// The encoded values (an `Err` ends the feed with that error).
    pub items: BoxStream<'static, Result<Vec<u8>, RemoteError>>,
    /// Runs the feed's close closures when dropped (after `items`).
    pub guard: CloseGuard,
}

impl fmt::Debug for RawFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFeed").finish_non_exhaustive()
    }
}

/// Runs a feed's `on_close` closures when dropped.
pub struct CloseGuard(Vec<Box<dyn FnOnce() + Send>>);

impl fmt::Debug for CloseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CloseGuard").field(&self.0.len()).finish()
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        for f in self.0.drain(..) {
            // A panicking close closure must not take the Library's fan-out down with it.
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                tracing::error!(
                    "a feed's on_close closure panicked: {}",
                    super::panic::message(&*panic)
                );
            }
        }
    }
}

/// The future that opens a streaming method: its feed, or why it could not start.
pub type OpenFuture = BoxFuture<'static, Result<RawFeed, RemoteError>>;
