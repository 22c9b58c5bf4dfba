//! The Agent: a worker's one multiplexed connection to the Library, kept up across Library
//! restarts.

use super::call_client::{CallError, Due};
use super::link::{keep_connected, open_link, Link, LinkError};
use super::service_client::ServiceClient;
use super::switch::Move;
use crate::call_trace;
use crate::cluster_error::ClusterError;
use crate::error::Error;
use crate::service::Manifest;
use crate::settings::Settings;
use crate::wire;
use once_cell::sync::OnceCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tracing::Instrument;

static AGENT: OnceCell<Agent> = OnceCell::new();

/// A worker's connection to the Library. Every generated stub calls through it:
/// `Agent::get().demo().get_name().await`.
///
/// One Agent exists per worker process, connected before the worker's code runs. All calls of
/// the process share its one connection; they run concurrently and each has a deadline.
///
/// If the Library dies, the Agent reconnects by itself as soon as the master has restarted it.
/// A call that was in flight fails at once with [`Error::LibraryRestarted`]; a call made while
/// the Library is down waits for it, up to the call's deadline, and then fails with
/// [`Error::Unavailable`] (it was not delivered). A Library *handover* (the Library replaced
/// on purpose) fails no call: new calls go to the new Library, calls in flight finish on the
/// old one.
#[derive(Debug)]
pub struct Agent {
    link: watch::Receiver<Option<Arc<Link>>>,
    reconnect: Arc<Notify>,
    worker_id: u32,
    /// The default deadline in microseconds; changeable at run time.
    default_timeout_us: AtomicU64,
    payload_limit: usize,
    manifest: Manifest,
    calls: AtomicU64,
    in_flight: AtomicU64,
    /// Places for one-way calls waiting for the Library's acknowledgement.
    oneway: Arc<Semaphore>,
    /// How many places `oneway` has (the Library's in-flight cap per connection).
    oneway_places: usize,
    /// One-way calls sent and not yet acknowledged.
    oneway_in_flight: Arc<AtomicU64>,
    /// Where and how it connected, for [`Agent::extra_connection`].
    connect: Connect,
    /// To the link task: move to another Library (a handover).
    moves: mpsc::UnboundedSender<Move>,
    /// The socket of the Library serving this worker now: a handover changes it, and every
    /// other connection to the Library (streams, extra connections) follows it.
    socket: watch::Sender<PathBuf>,
}

/// An [`AgentConfig`] whose `Debug` does not show the token.
struct Connect(AgentConfig);

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("socket", &self.0.socket)
            .field("worker_id", &self.0.worker_id)
            .finish_non_exhaustive()
    }
}

/// What an Agent needs to connect: where, with which token, as which worker, with the
/// cluster's settings (frame limit, call and handshake timeouts).
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) socket: PathBuf,
    pub(crate) token: String,
    pub(crate) worker_id: u32,
    pub(crate) settings: Settings,
}

impl Agent {
    /// The Agent of this worker.
    ///
    /// # Panics
    /// Outside a worker process of a running cluster (in the master, in the Library, in a plain
    /// test): there is no Library to call there. Use [`Agent::try_get`] to check. In the
    /// Library, a service reaches another in-process with `Library::get().<service>()`, as the
    /// message says.
    pub fn get() -> &'static Agent {
        match AGENT.get() {
            Some(agent) => agent,
            None if crate::process::role() == crate::process::Role::Library => panic!(
                "Agent::get() called in the Library: a service reaches another service \
                 in-process, with no socket, through dispatch::Library::get().<service>() \
                 (the same methods as the Agent's client; bring the service's `…LibraryExt` \
                 trait into scope). The Agent exists only in workers"
            ),
            None => panic!(
                "Agent::get() called outside a cluster worker: the Agent exists only in worker \
                 processes started by Cluster::run, after they connected to the Library \
                 (use Agent::try_get() to check)"
            ),
        }
    }

    /// The Agent of this worker, or `None` outside a worker (or before it connected).
    pub fn try_get() -> Option<&'static Agent> {
        AGENT.get()
    }

    /// A handle on a service by name, for calls without a generated stub.
    pub fn service<'a>(&'a self, name: &'a str) -> ServiceClient<'a> {
        ServiceClient::new(self, name)
    }

    /// This worker's id (0-based).
    pub fn worker_id(&self) -> u32 {
        self.worker_id
    }

    /// The deadline given to a call that sets none (the cluster's `call_timeout` until
    /// [`set_default_timeout`](Agent::set_default_timeout) changes it).
    pub fn default_timeout(&self) -> Duration {
        Duration::from_micros(self.default_timeout_us.load(Ordering::Relaxed))
    }

    /// Changes the deadline of every later call of this worker that sets none. A single call
    /// sets its own with `with_timeout` on the stub.
    pub fn set_default_timeout(&self, timeout: Duration) {
        let us = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        self.default_timeout_us.store(us, Ordering::Relaxed);
    }

    /// The largest argument or reply payload a call can carry.
    pub fn payload_limit(&self) -> usize {
        self.payload_limit
    }

    /// The Library's manifest, as received in the first handshake.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether the Agent is connected to the Library right now.
    pub fn is_connected(&self) -> bool {
        self.link.borrow().is_some()
    }

    /// Calls this worker has made, and calls in flight now (one-way calls count until the
    /// Library acknowledges them).
    pub fn call_counts(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed) + self.oneway_in_flight.load(Ordering::Relaxed),
        )
    }

    /// Tells the Agent the Library is back, so it reconnects now instead of at its next retry.
    pub(crate) fn reconnect_now(&self) {
        self.reconnect.notify_one();
    }

    /// Moves to the Library at `path` (a handover): new calls go there; the receiver fires
    /// once the calls in flight on the old Library finished.
    pub(crate) fn move_to(&self, path: PathBuf) -> oneshot::Receiver<()> {
        let (done, finished) = oneshot::channel();
        // The link task lives as long as the process.
        self.socket.send_replace(path.clone());
        let _ = self.moves.send(Move { path, done });
        finished
    }

    /// Sends one call and waits for its reply or its deadline (`timeout`, or the Agent's default).
    ///
    /// When a subscriber wants `dispatch::call` spans, the call runs in a `call` span whose ids
    /// travel with it, so the Library's span of the call joins the same trace; otherwise nothing
    /// of the kind is done.
    pub(crate) async fn call_raw(
        &self,
        service: &str,
        method: &str,
        args: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<bytes::Bytes, Error> {
        traced(service, method, |trace| {
            self.send_call(service, method, args, timeout, trace)
        })
        .await
    }

    /// Sends a one-way call: returns once the request is queued, in order, on the connection
    /// (its first poll hands it to the connection's writer), without waiting for the method.
    /// The Library's acknowledgement (sent before the method runs) is awaited by a task of its
    /// own; at most `max_in_flight` one-way calls wait for theirs, past that this call waits
    /// for a place up to its deadline (backpressure: the Library is behind).
    pub(crate) async fn send_oneway(
        &self,
        service: &str,
        method: &str,
        args: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        // The caller's span ends when the call is queued; the Library's span of the call (its
        // child) when the method ends.
        traced(service, method, |trace| {
            self.queue_oneway(service, method, args, timeout, trace)
        })
        .await
    }

    /// [`send_oneway`](Agent::send_oneway), in the caller's span if it has one.
    async fn queue_oneway(
        &self,
        service: &str,
        method: &str,
        args: Vec<u8>,
        timeout: Option<Duration>,
        trace: Option<wire::TraceParent>,
    ) -> Result<(), Error> {
        self.check_request(service, method, &args)?;
        let timeout = timeout
            .unwrap_or_else(|| self.default_timeout())
            .min(wire::MAX_DEADLINE);
        let deadline = Instant::now() + timeout;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let link = self.current_link(Some(deadline), timeout).await?;
        let place =
            match tokio::time::timeout_at(deadline.into(), self.oneway.clone().acquire_owned())
                .await
            {
                Ok(Ok(place)) => place,
                Ok(Err(_)) => {
                    return Err(Error::Unavailable {
                        reason: "the agent stopped".into(),
                    })
                }
                Err(_) => {
                    return Err(Error::Unavailable {
                        reason: format!(
                            "the library is behind: {} one-way calls of this worker are not yet \
                             acknowledged, and none was within the call's deadline of {timeout:?}",
                            self.oneway_places
                        ),
                    })
                }
            };
        // The deadline bounded the sending; once queued, the call is the Library's: it must
        // not be dropped at a deadline while it waits for a place there (the caller was told
        // it is sent). Waiting is bounded by the places, not by time.
        let (service, method) = (service.to_owned(), method.to_owned());
        let in_flight = Arc::clone(&self.oneway_in_flight);
        let mut send = Box::pin(async move {
            let _place = place;
            let _running = crate::metrics::InFlight::start(&in_flight);
            let due = Due::after(wire::MAX_DEADLINE);
            let call = link.client.call(&service, &method, &args, trace, due);
            match call.await {
                Ok(_) => {}
                // The Library logs the method's own failures; this is about the request.
                Err(e) => tracing::debug!("a one-way call was not acknowledged: {e:?}"),
            }
        });
        // The first poll queues the request on the connection, ahead of any later call of
        // this task; the task spawned below then waits for the acknowledgement.
        if futures::poll!(send.as_mut()).is_pending() {
            tokio::spawn(send);
        }
        Ok(())
    }

    /// Refuses, before anything is sent, a request the Library would refuse.
    fn check_request(&self, service: &str, method: &str, args: &[u8]) -> Result<(), Error> {
        if args.len() > self.payload_limit {
            return Err(Error::TooLarge {
                what: "request",
                size: args.len(),
                limit: self.payload_limit,
            });
        }
        if service.len() > wire::MAX_NAME_LEN || method.len() > wire::MAX_NAME_LEN {
            return Err(Error::Codec {
                message: format!(
                    "service and method names are limited to {} bytes",
                    wire::MAX_NAME_LEN
                ),
            });
        }
        Ok(())
    }

    /// The body of [`Agent::call_raw`]: `trace` is sent with the call.
    async fn send_call(
        &self,
        service: &str,
        method: &str,
        args: Vec<u8>,
        timeout: Option<Duration>,
        trace: Option<wire::TraceParent>,
    ) -> Result<bytes::Bytes, Error> {
        self.check_request(service, method, &args)?;
        // tarpc panics on deadlines beyond its timer wheel (about 795 days): cap them.
        let timeout = timeout
            .unwrap_or_else(|| self.default_timeout())
            .min(wire::MAX_DEADLINE);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let _running = crate::metrics::InFlight::start(&self.in_flight);
        let link = self.current_link(None, timeout).await?;
        match link
            .client
            .call(
                service,
                method,
                &args,
                trace,
                // No clock read here: the connection stamps the deadline (see `Due`).
                Due::after(timeout),
            )
            .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(remote)) => Err(remote.into()),
            Err(CallError::DeadlineExceeded) => Err(Error::DeadlineExceeded { timeout }),
            Err(CallError::Server(reason)) => Err(Error::Unavailable { reason }),
            Err(CallError::Encode(message)) => Err(Error::Codec { message }),
            // The connection broke with the call on it: the Library died (and is being
            // restarted). The call may have run; it is not retried.
            Err(CallError::Broken) => Err(Error::LibraryRestarted),
        }
    }

    /// The live connection, waiting for the Library to come back up to `deadline`.
    /// (`deadline`: the call's, if the caller read the clock already; else `timeout` from
    /// now, read only if the link is down.)
    async fn current_link(
        &self,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<Arc<Link>, Error> {
        if let Some(link) = self.link.borrow().as_ref() {
            return Ok(Arc::clone(link));
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + timeout);
        let mut rx = self.link.clone();
        let waited = tokio::time::timeout_at(deadline.into(), async {
            rx.wait_for(Option::is_some).await.map(|link| link.clone())
        })
        .await;
        match waited {
            Ok(Ok(Some(link))) => Ok(link),
            Ok(Ok(None)) => Err(Error::Unavailable {
                reason: "the connection was lost again".into(),
            }),
            Ok(Err(_)) => Err(Error::Unavailable {
                reason: "the agent stopped".into(),
            }),
            Err(_) => Err(Error::Unavailable {
                reason: format!(
                    "the library did not come back within the call's deadline of {timeout:?}"
                ),
            }),
        }
    }

    /// Connects to the Library once (see [`Agent::connect_within`]).
    #[cfg(test)]
    pub(crate) async fn connect(config: &AgentConfig) -> Result<Agent, ClusterError> {
        Self::connect_within(config, Duration::ZERO).await
    }

    /// Connects to the Library (retrying for up to `patience` while it is not there yet: a
    /// worker restarted while the Library restarts too), completes the handshake, checks the
    /// manifest, and starts the task that keeps the connection up.
    pub(crate) async fn connect_within(
        config: &AgentConfig,
        patience: Duration,
    ) -> Result<Agent, ClusterError> {
        let give_up = Instant::now() + patience;
        let mut wait = Duration::from_millis(5);
        let (client, dispatch, manifest) = loop {
            match open_link(config).await {
                Ok(opened) => break opened,
                Err(LinkError::Fatal(e)) => return Err(e),
                Err(LinkError::Transient(e)) if Instant::now() + wait >= give_up => return Err(e),
                Err(LinkError::Transient(e)) => {
                    tracing::debug!("cannot connect to the library yet: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(200));
                }
            }
        };
        let (link_tx, link) = watch::channel(Some(Arc::new(Link { client })));
        let oneway_places = usize::try_from(config.settings.max_in_flight.max(1)).unwrap_or(1024);
        let reconnect = Arc::new(Notify::new());
        let (moves, moves_rx) = mpsc::unbounded_channel();
        tokio::spawn(keep_connected(
            config.clone(),
            dispatch,
            link_tx,
            Arc::clone(&reconnect),
            moves_rx,
        ));
        Ok(Agent {
            link,
            reconnect,
            worker_id: config.worker_id,
            default_timeout_us: AtomicU64::new(
                u64::try_from(config.settings.call_timeout.as_micros()).unwrap_or(u64::MAX),
            ),
            payload_limit: wire::payload_limit(config.settings.max_frame),
            manifest,
            calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            socket: watch::Sender::new(config.socket.clone()),
            oneway: Arc::new(Semaphore::new(oneway_places)),
            oneway_places,
            oneway_in_flight: Arc::new(AtomicU64::new(0)),
            connect: Connect(config.clone()),
            moves,
        })
    }

    /// One more authenticated connection to the Library, as this Agent opens its own, handed
    /// over raw right after the Library's welcome (for tests that play a misbehaving worker).
    /// `Err` says why the Library refused it, or why it could not connect.
    pub(crate) async fn extra_connection(&self) -> Result<tokio::net::UnixStream, String> {
        let config = &self.config();
        let stream = tokio::net::UnixStream::connect(&config.socket)
            .await
            .map_err(|e| format!("cannot connect to the library: {e}"))?;
        let mut framed = wire::framed(stream, config.settings.max_frame);
        let hello = wire::Hello {
            protocol: wire::PROTOCOL_VERSION,
            token: config.token.clone(),
            worker_id: config.worker_id,
        };
        let hello = wire::codec::encode(&hello).map_err(|e| e.to_string())?;
        use futures::{SinkExt, StreamExt};
        let exchange = async {
            framed.send(bytes::Bytes::from(hello)).await?;
            framed.next().await.transpose()
        };
        let frame = match tokio::time::timeout(config.settings.handshake_timeout, exchange).await {
            Err(_) => return Err("the library did not answer the hello in time".into()),
            Ok(Err(e)) => return Err(format!("handshake: {e}")),
            Ok(Ok(None)) => return Err("the library closed the connection".into()),
            Ok(Ok(Some(frame))) => frame,
        };
        match wire::codec::decode::<wire::Welcome>(&frame) {
            Ok(wire::Welcome::Accepted(_)) => Ok(framed.into_inner().into_inner()),
            Ok(wire::Welcome::Refused(reason) | wire::Welcome::Busy(reason)) => Err(reason),
            Err(e) => Err(format!("undecodable welcome: {e}")),
        }
    }

    /// Where and how this Agent connects (for its stream connection, `worker/streams.rs`).
    pub(super) fn config(&self) -> AgentConfig {
        let mut config = self.connect.0.clone();
        config.socket = self.socket.borrow().clone();
        config
    }

    /// The socket of the Library serving this worker, changing with each handover.
    pub(super) fn library_socket(&self) -> watch::Receiver<PathBuf> {
        self.socket.subscribe()
    }

    /// Makes `self` the process's Agent.
    pub(crate) fn install(self) -> &'static Agent {
        AGENT.get_or_init(|| self)
    }
}

/// Runs `send` (a call's sending, given the trace ids to carry) in a `dispatch::call` span when a
/// subscriber wants one, recording its outcome; with none, just runs it (no span, no ids).
async fn traced<T, F>(
    service: &str,
    method: &str,
    send: impl FnOnce(Option<wire::TraceParent>) -> F,
) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    if !call_trace::enabled() {
        return send(None).await;
    }
    let (span, parent) = call_trace::caller_span(service, method);
    let result = send(Some(parent)).instrument(span.clone()).await;
    call_trace::finished(&span, result.as_ref().err().map(|e| e as _));
    result
}
