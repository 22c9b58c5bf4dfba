//! The Agent's stream connection: a second connection to the Library (its hello carries
//! `STREAM_CONNECTION`), opened at the first stream, multiplexing every stream of the worker;
//! and [`RemoteStream`], the caller's end of one stream.
//!
//! The Agent keeps every open stream (service, method, arguments). When the connection breaks
//! (the Library was killed, restarted, or replaced) it reconnects by itself and
//! [`resubscribe`]s them all: each stream goes on after an `Err(Error::StreamResumed)` notice,
//! without application code.

use super::agent::{Agent, AgentConfig};
use super::service_client::ServiceClient;
use crate::error::Error;
use crate::stream::frames::{Down, StreamEnd, Up, STREAM_CONNECTION};
use crate::wire::{self, Framing, Hello, Welcome};
use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use once_cell::sync::OnceCell;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Values waiting per stream in the worker for the caller to read. A caller that does not read
/// holds up its worker's other streams (the connection is not read), not other workers': the
/// Library's buffer of this subscriber fills and its overflow policy applies.
const STREAM_CHANNEL: usize = 256;

static STREAMS: OnceCell<Arc<Streams>> = OnceCell::new();

/// The open streams of this worker.
struct Streams {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
    /// Opens and cancels for the connection's writer. Unbounded, and bounded by construction:
    /// at most one `Open` and one `Cancel` per stream, and the writer drains it.
    up: mpsc::UnboundedSender<Up>,
}

/// One open stream, as the Agent re-opens it after a reconnect.
struct Entry {
    service: String,
    method: String,
    args: ByteBuf,
    tx: mpsc::Sender<Event>,
    /// The caller waiting for `Opened` (the first open only).
    opened: Option<oneshot::Sender<Result<(), Error>>>,
    /// Re-sent after a reconnect: its next `Opened` is a resumption.
    resuming: bool,
}

/// What the connection hands a stream's caller.
enum Event {
    Item(ByteBuf),
    Gap(u64),
    Resumed,
    End(Option<Error>),
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// This worker's streams, and the task that keeps their connection up (started at the first).
fn streams(agent: &Agent) -> &'static Arc<Streams> {
    STREAMS.get_or_init(|| {
        let (up, rx) = mpsc::unbounded_channel();
        let streams = Arc::new(Streams {
            next_id: AtomicU64::new(1),
            open: Mutex::default(),
            up,
        });
        tokio::spawn(keep_streams(
            agent.config(),
            agent.library_socket(),
            Arc::clone(&streams),
            rx,
        ));
        streams
    })
}

/// Keeps the stream connection up for the worker's life: connects, [`resubscribe`]s, serves,
/// and on a break reconnects (backoff from 5 ms to 200 ms). After a Library handover
/// (`socket` changes) it leaves the old Library and re-opens every stream on the new one.
async fn keep_streams(
    mut config: AgentConfig,
    mut socket: watch::Receiver<PathBuf>,
    streams: Arc<Streams>,
    mut rx: mpsc::UnboundedReceiver<Up>,
) {
    let mut wait = Duration::from_millis(5);
    let mut connected_once = false;
    loop {
        config.socket = socket.borrow_and_update().clone();
        match connect(&config).await {
            Ok(framed) => {
                wait = Duration::from_millis(5);
                if connected_once {
                    tracing::info!("stream connection to the library re-established");
                }
                connected_once = true;
                tokio::select! {
                    served = serve(framed, &streams, &mut rx) => {
                        if let Err(e) = served {
                            tracing::debug!("the stream connection ended: {e}");
                        }
                    }
                    // A handover: the old Library closes its feeds when this connection
                    // closes; the new one opens them again.
                    Ok(()) = socket.changed() => {
                        tracing::info!("library handover: moving the streams to the new library");
                    }
                }
                let open = mark_resuming(&streams);
                tracing::warn!(
                    open,
                    "lost the stream connection to the library; reconnecting to re-open every \
                     stream"
                );
            }
            Err(e) => {
                tracing::debug!("cannot open the stream connection yet: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// Marks every opened stream as resuming; returns how many are open.
fn mark_resuming(streams: &Streams) -> usize {
    let mut open = streams.lock();
    for entry in open.values_mut() {
        if entry.opened.is_none() {
            entry.resuming = true;
        }
    }
    open.len()
}

/// Re-sends every open stream on a new connection (the Library ignores an `Open` of an id it
/// already has, so an `Open` also waiting in `rx` does no harm). Call it on any reconnect: to
/// a restarted Library, or to a new one after a handover.
async fn resubscribe(
    sink: &mut (impl futures::Sink<Bytes, Error = std::io::Error> + Unpin),
    streams: &Streams,
    rx: &mut mpsc::UnboundedReceiver<Up>,
) -> std::io::Result<()> {
    // What waited for the old connection is stale: every open stream is re-sent below, and a
    // cancelled one is already out of the map.
    while rx.try_recv().is_ok() {}
    let opens: Vec<Up> = streams
        .lock()
        .iter()
        .map(|(id, e)| Up::Open {
            id: *id,
            service: e.service.clone(),
            method: e.method.clone(),
            args: e.args.clone(),
        })
        .collect();
    for open in &opens {
        sink.feed(encode(open)?).await?;
    }
    sink.flush().await
}

/// Serves one stream connection until it breaks.
async fn serve(
    framed: Framing,
    streams: &Streams,
    rx: &mut mpsc::UnboundedReceiver<Up>,
) -> std::io::Result<()> {
    let (mut sink, mut source) = framed.split();
    resubscribe(&mut sink, streams, rx).await?;
    let writer = async {
        while let Some(up) = rx.recv().await {
            sink.feed(encode(&up)?).await?;
            while let Ok(up) = rx.try_recv() {
                sink.feed(encode(&up)?).await?;
            }
            sink.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let reader = async {
        while let Some(frame) = source.next().await {
            let down: Down = wire::codec::decode(&frame?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            deliver(streams, down).await;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        r = writer => r,
        r = reader => r,
    }
}

/// Hands one frame to its stream's caller (waiting while the caller's channel is full).
async fn deliver(streams: &Streams, down: Down) {
    let (tx, event) = {
        let mut open = streams.lock();
        match down {
            Down::Opened { id } => {
                let Some(entry) = open.get_mut(&id) else {
                    return;
                };
                if let Some(opened) = entry.opened.take() {
                    let _ = opened.send(Ok(()));
                    return;
                }
                if !std::mem::take(&mut entry.resuming) {
                    return;
                }
                (entry.tx.clone(), Event::Resumed)
            }
            Down::Item { id, bytes } => match open.get(&id) {
                Some(entry) => (entry.tx.clone(), Event::Item(bytes)),
                None => return,
            },
            Down::Gap { id, missed } => match open.get(&id) {
                Some(entry) => (entry.tx.clone(), Event::Gap(missed)),
                None => return,
            },
            Down::End { id, error } => {
                let Some(mut entry) = open.remove(&id) else {
                    return;
                };
                let error = error.map(ended);
                if let Some(opened) = entry.opened.take() {
                    let _ = opened.send(Err(error.unwrap_or(Error::Unavailable {
                        reason: "the stream ended before it opened".into(),
                    })));
                    return;
                }
                (entry.tx, Event::End(error))
            }
        }
    };
    // The caller may have dropped its stream meanwhile: its Cancel is on its way.
    let _ = tx.send(event).await;
}

/// The caller's error for a stream's end.
fn ended(end: StreamEnd) -> Error {
    match end {
        StreamEnd::Remote(e) => e.into(),
        StreamEnd::Lagged { buffer } => Error::StreamLagged {
            buffer: usize::try_from(buffer).unwrap_or(usize::MAX),
        },
        StreamEnd::TooMany { limit } => Error::Unavailable {
            reason: format!(
                "this worker has {limit} streams open on the library, the most one worker may \
                 hold: drop streams it no longer reads"
            ),
        },
    }
}

fn encode(up: &Up) -> std::io::Result<Bytes> {
    wire::codec::encode(up)
        .map(Bytes::from)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// One connection attempt: connect and handshake as a stream connection.
async fn connect(config: &AgentConfig) -> Result<Framing, String> {
    let stream = tokio::net::UnixStream::connect(&config.socket)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", config.socket.display()))?;
    let mut framed = wire::framed(stream, config.settings.max_frame);
    let hello = Hello {
        protocol: wire::PROTOCOL_VERSION | STREAM_CONNECTION,
        token: config.token.clone(),
        worker_id: config.worker_id,
    };
    let hello = wire::codec::encode(&hello).map_err(|e| format!("cannot encode the hello: {e}"))?;
    let exchange = async {
        framed.send(Bytes::from(hello)).await?;
        framed.next().await.transpose()
    };
    let frame = match tokio::time::timeout(config.settings.handshake_timeout, exchange).await {
        Err(_) => return Err("the library did not answer the hello in time".into()),
        Ok(Err(e)) => return Err(format!("handshake: {e}")),
        Ok(Ok(None)) => return Err("the library closed the connection".into()),
        Ok(Ok(Some(frame))) => frame,
    };
    match wire::codec::decode::<Welcome>(&frame) {
        Ok(Welcome::Accepted(_)) => Ok(framed),
        Ok(Welcome::Refused(reason) | Welcome::Busy(reason)) => Err(reason),
        Err(e) => Err(format!("undecodable welcome: {e}")),
    }
}

/// The caller's end of a stream from a Library service: what a streaming method's stub returns.
///
/// It yields `Ok(value)` for each value, in order, and ends when the service's feed ends (after
/// an `Err` if it ended with an error). Two errors are *notices*, and the stream goes on after
/// them ([`Error::is_stream_notice`]):
///
/// - [`Error::StreamResumed`]: the Library restarted (or was replaced) and the Agent re-opened
///   the stream by itself; values published meanwhile may be missing. A keyed subscription
///   then gets the key's latest value first.
/// - [`Error::StreamGap`]: this subscriber read too slowly and its buffer in the Library
///   overflowed; `missed` values were dropped at this point.
///
/// Dropping it cancels the stream in the Library (for a keyed subscription: the last subscriber
/// of the key leaving closes the key's feed).
///
/// ```no_run
/// # async fn f() -> Result<(), dispatch::Error> {
/// use dispatch::{Agent, RemoteStream};
/// use futures::StreamExt;
///
/// let mut ticks: RemoteStream<u64> =
///     Agent::get().service("ticker").open_stream("count", &(10_u64,)).await?;
/// while let Some(tick) = ticks.next().await {
///     match tick {
///         Ok(n) => println!("{n}"),
///         Err(notice) if notice.is_stream_notice() => eprintln!("{notice}"),
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct RemoteStream<T> {
    id: u64,
    rx: mpsc::Receiver<Event>,
    streams: Arc<Streams>,
    label: String,
    ended: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for RemoteStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStream")
            .field("id", &self.id)
            .field("method", &self.label)
            .field("ended", &self.ended)
            .finish()
    }
}

impl<T: DeserializeOwned> Stream for RemoteStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let event = match this.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(event) => event,
        };
        Poll::Ready(match event {
            Some(Event::Item(bytes)) => {
                Some(wire::codec::decode(&bytes).map_err(|e| Error::Codec {
                    message: format!("cannot decode a value of `{}`: {e}", this.label),
                }))
            }
            Some(Event::Gap(missed)) => Some(Err(Error::StreamGap { missed })),
            Some(Event::Resumed) => Some(Err(Error::StreamResumed)),
            Some(Event::End(error)) => {
                this.ended = true;
                error.map(Err)
            }
            None => {
                this.ended = true;
                Some(Err(Error::Unavailable {
                    reason: "the agent's stream connection stopped".into(),
                }))
            }
        })
    }
}

impl<T> Drop for RemoteStream<T> {
    fn drop(&mut self) {
        if self.streams.lock().remove(&self.id).is_some() {
            let _ = self.streams.up.send(Up::Cancel { id: self.id });
        }
    }
}

impl ServiceClient<'_> {
    /// Opens the streaming method `method` with `args` (a tuple of its arguments): its stream
    /// of `T`, once the Library has opened it (within the call deadline).
    ///
    /// # Errors
    /// The Library refused to open it (unknown service or method, the method panicked), or did
    /// not confirm within the deadline; the arguments are too large or cannot be encoded.
    pub async fn open_stream<A, T>(&self, method: &str, args: &A) -> Result<RemoteStream<T>, Error>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let args = wire::codec::encode(args).map_err(|e| Error::Codec {
            message: format!(
                "cannot encode the arguments of `{}.{method}`: {e}",
                self.service
            ),
        })?;
        let agent = self.agent;
        if args.len() > agent.payload_limit() {
            return Err(Error::TooLarge {
                what: "request",
                size: args.len(),
                limit: agent.payload_limit(),
            });
        }
        if self.service.len() > wire::MAX_NAME_LEN || method.len() > wire::MAX_NAME_LEN {
            return Err(Error::Codec {
                message: format!(
                    "service and method names are limited to {} bytes",
                    wire::MAX_NAME_LEN
                ),
            });
        }
        let streams = streams(agent);
        let id = streams.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
        let (opened_tx, opened) = oneshot::channel();
        let args = ByteBuf::from(args);
        streams.lock().insert(
            id,
            Entry {
                service: self.service.to_owned(),
                method: method.to_owned(),
                args: args.clone(),
                tx,
                opened: Some(opened_tx),
                resuming: false,
            },
        );
        let mut stream = RemoteStream {
            id,
            rx,
            streams: Arc::clone(streams),
            label: format!("{}.{method}", self.service),
            ended: false,
            _item: PhantomData,
        };
        let _ = streams.up.send(Up::Open {
            id,
            service: self.service.to_owned(),
            method: method.to_owned(),
            args,
        });
        let timeout = self.timeout.unwrap_or_else(|| agent.default_timeout());
        match tokio::time::timeout(timeout, opened).await {
            Ok(Ok(Ok(()))) => Ok(stream),
            Ok(Ok(Err(e))) => {
                stream.ended = true;
                Err(e)
            }
            Ok(Err(_)) => Err(Error::Unavailable {
                reason: "the agent's stream connection stopped".into(),
            }),
            Err(_) => Err(Error::DeadlineExceeded { timeout }),
        }
    }
}
