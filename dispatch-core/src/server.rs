//! The Library's data socket: admits Agents, authenticates them, and serves each connection's
//! calls concurrently with a cap on calls in flight.
//!
//! Any local process can try to connect, so every step is bounded (SECURITY.md tells the whole
//! threat model):
//!
//! - **Who.** A peer running as another user (`SO_PEERCRED`) is closed on accept, before a byte
//!   of it is read.
//! - **How many.** At most [`ServeConfig::max_handshakes`] peers wait for their hello at once.
//!   When one more arrives, the *oldest* waiting peer is dropped: a flood of idle connections can
//!   never lock out a worker, which sends its hello as soon as it connects. At most
//!   [`ServeConfig::max_connections`] authenticated connections are served; past that a peer is
//!   refused with a reason. Both caps fit within half of the process's descriptor limit.
//! - **How fast.** The whole handshake (hello in, welcome out) has one deadline, the handshake
//!   timeout (1 s by default): a silent or dripping peer is dropped when it passes.
//! - **What.** The first frame may not exceed [`wire::MAX_HELLO_FRAME`] bytes (a longer length
//!   prefix is refused as soon as it is read, nothing is buffered), must decode as a [`Hello`],
//!   and carry the protocol version and the cluster token. Nothing an unauthenticated peer sends
//!   is decoded as anything but a hello: it never reaches a service.
//! - **After.** An authenticated connection gets the cluster's frame limit and the in-flight cap.
//!   A frame that does not decode closes that connection only.
//! - **Logs.** Each refused or dropped peer is logged once, with its pid and uid; more events in
//!   the same second are counted and summed up in one line, so a flood cannot flood the log.
//! - **Accept errors** (out of descriptors) pause the accept loop briefly instead of spinning;
//!   connections already served are not touched.

use crate::control::ChildInit;
use crate::manifest::Manifest;
use crate::services::Services;
use crate::wire::{self, CallRequest, Hello, Welcome};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, Stream, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tarpc::server::{self, Channel};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Most authenticated connections served at once, before the descriptor limit lowers it. A
/// cluster needs one per worker.
const MAX_CONNECTIONS: usize = 1024;
/// Most connections waiting for their hello at once, before the descriptor limit lowers it.
const MAX_HANDSHAKES: usize = 128;
/// The period over which refusals are counted and summed up.
const LOG_WINDOW: Duration = Duration::from_secs(1);
/// Events logged one by one in a window; the rest are counted.
const LOG_LINES_PER_WINDOW: usize = 8;
/// Distinct peers counted one by one in a window's summary; the rest are counted together.
const LOG_PEERS_PER_WINDOW: usize = 64;
/// The pause after `accept` failed for lack of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The pause after any other `accept` failure.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The settings every connection is served with.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    /// The cluster's secret, which a peer's hello must carry.
    pub(crate) token: String,
    /// The frame limit of an authenticated connection.
    pub(crate) max_frame: usize,
    /// How long a peer has from accept to the end of its handshake.
    pub(crate) handshake_timeout: Duration,
    /// The per-connection cap on calls in flight.
    pub(crate) max_in_flight: usize,
    /// The cap on authenticated connections served at once.
    pub(crate) max_connections: usize,
    /// The cap on connections waiting for their hello; past it the oldest is dropped.
    pub(crate) max_handshakes: usize,
}

impl ServeConfig {
    /// The Library's settings, from what the master sent; the connection caps are this module's
    /// defaults, lowered to fit the process's descriptor limit.
    pub(crate) fn from_init(init: &ChildInit) -> Self {
        let (max_connections, max_handshakes) = socket_caps(open_files_limit());
        ServeConfig {
            token: init.token.clone(),
            max_frame: usize::try_from(init.max_frame).unwrap_or(usize::MAX),
            handshake_timeout: Duration::from_millis(init.handshake_timeout_ms),
            max_in_flight: (init.max_in_flight as usize).max(1),
            max_connections,
            max_handshakes,
        }
    }
}

/// `(max_connections, max_handshakes)` for a soft descriptor limit of `nofile` (`None`: no
/// limit). Sockets get at most half of the descriptors; the other half stays for the services'
/// own files and connections.
fn socket_caps(nofile: Option<u64>) -> (usize, usize) {
    let budget = nofile.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    let handshakes = MAX_HANDSHAKES.min(budget / 4).max(1);
    let connections = MAX_CONNECTIONS
        .min(budget.saturating_sub(handshakes))
        .max(1);
    (connections, handshakes)
}

/// The soft limit on this process's open descriptors, or `None` when there is none.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit only writes the `rlimit` it is given, which is valid and exclusively
    // borrowed for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Where connections come from: the Library's listener, or a test's stand-in that fails on
/// demand.
trait Accept {
    /// Polls for the next connection.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<UnixStream>>;
}

impl Accept for UnixListener {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<UnixStream>> {
        UnixListener::poll_accept(self, cx).map_ok(|(stream, _)| stream)
    }
}

/// Accepts connections forever, each served on its own task.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    services: Arc<Services>,
    config: Arc<ServeConfig>,
) {
    let gate = Arc::new(Gate::new(&config));
    serve_listener(listener, services, config, gate).await;
}

/// The accept loop over any [`Accept`], with its [`Gate`] given (tests read its counters).
async fn serve_listener<L: Accept>(
    mut listener: L,
    services: Arc<Services>,
    config: Arc<ServeConfig>,
    gate: Arc<Gate>,
) {
    let own_uid = nix::unistd::getuid().as_raw();
    let mut flush = tokio::time::interval(LOG_WINDOW);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            accepted = futures::future::poll_fn(|cx| listener.poll_accept(cx)) => accepted,
            _ = flush.tick() => {
                gate.log().flush();
                continue;
            }
        };
        match accepted {
            Ok(stream) => {
                gate.accepted.fetch_add(1, Ordering::Relaxed);
                admit(stream, own_uid, &services, &config, &gate);
                // Let the connections just admitted read their hello before the next accept: a
                // worker's hello is then read long before a flood could push it out.
                tokio::task::yield_now().await;
            }
            Err(e) => {
                let pause = if is_resource_exhaustion(&e) {
                    ACCEPT_BACKOFF
                } else {
                    ACCEPT_RETRY
                };
                gate.accept_errors.fetch_add(1, Ordering::Relaxed);
                gate.log().accept_failed(&e, pause);
                // The failed connection stays in the backlog and the listener stays readable:
                // without a pause this loop would spin.
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Whether an accept failed for lack of descriptors or memory (it will fail again at once).
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Checks the peer's user and starts its handshake, or closes it.
fn admit(
    stream: UnixStream,
    own_uid: u32,
    services: &Arc<Services>,
    config: &Arc<ServeConfig>,
    gate: &Arc<Gate>,
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            pid: cred.pid(),
            uid: cred.uid(),
        },
        Err(e) => {
            gate.refuse(Peer::UNKNOWN, &Refusal::Credentials(e));
            return;
        }
    };
    if let Err(refusal) = check_user(peer.uid, own_uid) {
        gate.refuse(peer, &refusal);
        return;
    }
    let slot = gate.enter_handshake();
    tokio::spawn(serve_connection(
        stream,
        peer,
        slot,
        Arc::clone(services),
        Arc::clone(config),
        Arc::clone(gate),
    ));
}

/// A peer may connect only if it runs as the Library's own user.
fn check_user(peer_uid: u32, own_uid: u32) -> Result<(), Refusal> {
    if peer_uid == own_uid {
        Ok(())
    } else {
        Err(Refusal::OtherUser)
    }
}

/// Who is on the other end, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Peer {
    /// Its pid, when the kernel told.
    pid: Option<i32>,
    /// Its uid.
    uid: u32,
}

impl Peer {
    /// A peer whose credentials could not be read.
    const UNKNOWN: Peer = Peer {
        pid: None,
        uid: u32::MAX,
    };
}

/// A pid for a log field: the number, or `unknown`.
struct PidField(Option<i32>);

impl fmt::Display for PidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} uid {}", PidField(self.pid), self.uid)
    }
}

/// Why a connection was closed before it was served.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// The kernel did not say who the peer is.
    #[error("cannot read its credentials: {0}")]
    Credentials(#[source] io::Error),
    /// The peer runs as another user.
    #[error("it runs as another user")]
    OtherUser,
    /// Too many peers were waiting for their hello; this one was the oldest.
    #[error("dropped to make room: {waiting} connections were waiting for their hello")]
    Evicted {
        /// The cap on waiting connections.
        waiting: usize,
    },
    /// The handshake did not complete in time.
    #[error("no complete handshake within {0:?}")]
    Timeout(Duration),
    /// The peer closed before sending a whole hello.
    #[error("closed before its hello")]
    Closed,
    /// The first frame could not be read: its length prefix is over the limit, or the socket
    /// failed.
    #[error("unreadable first frame: {0}")]
    BadFrame(#[source] io::Error),
    /// The first frame is not a hello.
    #[error("undecodable hello: {0}")]
    Undecodable(#[source] bincode::Error),
    /// The peer speaks another version of the protocol.
    #[error("protocol version {theirs} (the library speaks {ours})")]
    Protocol {
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// The hello does not carry the cluster token.
    #[error("wrong cluster token")]
    WrongToken,
    /// The Library already serves as many connections as it may.
    #[error("the library already serves its maximum of {limit} connections")]
    Full {
        /// The cap.
        limit: usize,
    },
    /// The welcome could not be sent.
    #[error("cannot send the welcome: {0}")]
    Welcome(#[source] io::Error),
}

/// The admission state shared by the accept loop and every connection: the caps, the peers
/// waiting for their hello, the rate-limited log, and counters.
struct Gate {
    /// One permit per authenticated connection.
    connections: Arc<Semaphore>,
    /// The number of those permits.
    max_connections: usize,
    /// Peers waiting for their hello, oldest first.
    pending: Mutex<PendingSet>,
    /// The most peers that may wait.
    max_handshakes: usize,
    /// Where refusals and drops are logged, rate-limited.
    log: Mutex<PeerLog>,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Connections closed before they were served.
    refused: AtomicU64,
    /// Of those, connections dropped to make room for newer ones.
    evicted: AtomicU64,
    /// Connections that completed their handshake.
    authenticated: AtomicU64,
    /// Authenticated connections closed because of what their peer sent.
    dropped: AtomicU64,
    /// Failed accepts.
    accept_errors: AtomicU64,
    /// The most connections ever waiting for their hello at once.
    pending_high_water: AtomicUsize,
    /// Connection tasks that ran to their end, refused or served (a task that panicked would
    /// not be counted: tests compare this with what they opened).
    finished: AtomicU64,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("max_connections", &self.max_connections)
            .field("max_handshakes", &self.max_handshakes)
            .field("accepted", &self.accepted)
            .field("refused", &self.refused)
            .field("evicted", &self.evicted)
            .field("authenticated", &self.authenticated)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

/// The peers waiting for their hello. Dropping a peer's sender tells its task to give up.
#[derive(Debug, Default)]
struct PendingSet {
    /// The id of the next peer.
    next_id: u64,
    /// The waiting peers' senders, by id (ids grow with time: the first is the oldest).
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Gate {
    /// A gate with `config`'s caps.
    fn new(config: &ServeConfig) -> Self {
        Gate {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            pending: Mutex::new(PendingSet::default()),
            max_handshakes: config.max_handshakes.max(1),
            log: Mutex::new(PeerLog::new()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            authenticated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            pending_high_water: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
        }
    }

    /// How many connections are waiting for their hello now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        lock(&self.pending).waiting.len()
    }

    /// How many authenticated connections are served now.
    #[cfg(test)]
    fn served(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }

    /// The rate-limited log, locked.
    fn log(&self) -> MutexGuard<'_, PeerLog> {
        lock(&self.log)
    }

    /// Registers a peer that is about to handshake; when the set is full, the oldest waiting
    /// peer is told to give up first.
    fn enter_handshake(self: &Arc<Self>) -> HandshakeSlot {
        let (tx, rx) = oneshot::channel();
        let mut pending = lock(&self.pending);
        if pending.waiting.len() >= self.max_handshakes {
            // Dropping its sender wakes the oldest peer's task, which logs its own refusal.
            pending.waiting.pop_first();
        }
        let id = pending.next_id;
        pending.next_id += 1;
        pending.waiting.insert(id, tx);
        self.pending_high_water
            .fetch_max(pending.waiting.len(), Ordering::Relaxed);
        HandshakeSlot {
            id,
            evicted: rx,
            gate: Arc::clone(self),
        }
    }

    /// Counts and logs (rate-limited) a connection closed before it was served.
    fn refuse(&self, peer: Peer, refusal: &Refusal) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if matches!(refusal, Refusal::Evicted { .. }) {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        self.log()
            .event(peer, format_args!("refused a connection: {refusal}"));
    }

    /// Counts and logs (rate-limited) an authenticated connection closed because of what its
    /// peer sent.
    fn drop_connection(&self, peer: Peer, worker_id: u32, error: &dyn std::error::Error) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.log().event(
            peer,
            format_args!(
                "closed the connection of worker {worker_id}: {}",
                error_chain(error)
            ),
        );
    }
}

/// Locks `m`, even if a panic poisoned it: every critical section here leaves the data valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A peer's place among those waiting for their hello; leaving it (drop) frees the place.
struct HandshakeSlot {
    /// The peer's id in the [`PendingSet`].
    id: u64,
    /// Resolves (with an error) when the gate drops this peer's sender.
    evicted: oneshot::Receiver<()>,
    /// The gate to leave on drop.
    gate: Arc<Gate>,
}

impl HandshakeSlot {
    /// Resolves when a newer peer pushed this one out.
    async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        lock(&self.gate.pending).waiting.remove(&self.id);
    }
}

/// The rate-limited log of refused and dropped peers: each peer's first event of a window gets
/// its own line (up to [`LOG_LINES_PER_WINDOW`] lines); the others are counted, per peer, and
/// summed up in one line when the window ends.
#[derive(Debug)]
struct PeerLog {
    /// When the current window began.
    window_start: Instant,
    /// Lines logged this window.
    lines: usize,
    /// Events not logged this window, per peer (a peer that got its line counts from 0).
    peers: HashMap<Peer, u64>,
    /// Events not logged this window.
    suppressed: u64,
    /// Accept failures this window (the first one was logged).
    accept_failures: u64,
}

impl PeerLog {
    /// An empty log whose first window starts now.
    fn new() -> Self {
        PeerLog {
            window_start: Instant::now(),
            lines: 0,
            peers: HashMap::new(),
            suppressed: 0,
            accept_failures: 0,
        }
    }

    /// Logs `what` about `peer`, or counts it.
    fn event(&mut self, peer: Peer, what: fmt::Arguments<'_>) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.flush();
        }
        let room = self.peers.len() < LOG_PEERS_PER_WINDOW;
        let first = !self.peers.contains_key(&peer);
        if first && room && self.lines < LOG_LINES_PER_WINDOW {
            self.lines += 1;
            self.peers.insert(peer, 0);
            tracing::warn!(peer_pid = %PidField(peer.pid), peer_uid = peer.uid, "{what}");
            return;
        }
        self.suppressed += 1;
        if let Some(count) = self.peers.get_mut(&peer) {
            *count += 1;
        } else if room {
            self.peers.insert(peer, 1);
        }
    }

    /// Logs the first accept failure of the window; counts the others.
    fn accept_failed(&mut self, e: &io::Error, pause: Duration) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.flush();
        }
        self.accept_failures += 1;
        if self.accept_failures == 1 {
            tracing::warn!("accept failed on the library socket: {e}; pausing {pause:?}");
        }
    }

    /// Ends the window: sums up what was not logged, and starts a new one.
    fn flush(&mut self) {
        let elapsed = self.window_start.elapsed();
        if self.suppressed > 0 {
            let mut busiest: Vec<(Peer, u64)> = self
                .peers
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(p, n)| (*p, *n))
                .collect();
            busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<String> = busiest
                .iter()
                .take(4)
                .map(|(p, n)| format!("{n} from {p}"))
                .collect();
            tracing::warn!(
                suppressed = self.suppressed,
                "refused or dropped {} more connections in the last {:.1} s without a line each \
                 (peers with most events: {})",
                self.suppressed,
                elapsed.as_secs_f64(),
                top.join(", ")
            );
        }
        if self.accept_failures > 1 {
            tracing::warn!(
                "accept failed {} more times in the last {:.1} s",
                self.accept_failures - 1,
                elapsed.as_secs_f64()
            );
        }
        self.window_start = Instant::now();
        self.lines = 0;
        self.peers.clear();
        self.suppressed = 0;
        self.accept_failures = 0;
    }
}

/// An error with its sources, `outer: inner: …`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// One connection's life: handshake (bounded by the deadline and by eviction), then its calls.
async fn serve_connection(
    stream: UnixStream,
    peer: Peer,
    slot: HandshakeSlot,
    services: Arc<Services>,
    config: Arc<ServeConfig>,
    gate: Arc<Gate>,
) {
    connection(stream, peer, slot, services, config, &gate).await;
    gate.finished.fetch_add(1, Ordering::Relaxed);
}

/// The body of [`serve_connection`]: every way out of it is a normal end.
async fn connection(
    stream: UnixStream,
    peer: Peer,
    mut slot: HandshakeSlot,
    services: Arc<Services>,
    config: Arc<ServeConfig>,
    gate: &Gate,
) {
    let mut framed = wire::handshake_framed(stream);
    let deadline = Instant::now() + config.handshake_timeout;
    let outcome = tokio::select! {
        outcome = tokio::time::timeout_at(
            deadline,
            handshake(&mut framed, services.manifest(), &config, &gate.connections),
        ) => outcome.unwrap_or(Err(Refusal::Timeout(config.handshake_timeout))),
        () = slot.evicted() => Err(Refusal::Evicted { waiting: gate.max_handshakes }),
    };
    drop(slot);
    let (worker_id, permit) = match outcome {
        Ok(accepted) => accepted,
        Err(refusal) => {
            gate.refuse(peer, &refusal);
            return;
        }
    };
    gate.authenticated.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer_pid = %PidField(peer.pid), worker_id, "agent connected");
    let result = serve_calls(framed, services, config.max_in_flight).await;
    drop(permit);
    match result {
        Ok(()) => tracing::debug!(peer_pid = %PidField(peer.pid), worker_id, "agent disconnected"),
        Err(e) => gate.drop_connection(peer, worker_id, &e),
    }
}

/// Reads the [`Hello`], checks protocol and token, takes a connection permit and answers with
/// the manifest. Returns the worker id and the permit, or why the peer was refused (after
/// telling it, when it got as far as a hello).
async fn handshake(
    framed: &mut Framed<UnixStream, LengthDelimitedCodec>,
    manifest: &Manifest,
    config: &ServeConfig,
    connections: &Arc<Semaphore>,
) -> Result<(u32, OwnedSemaphorePermit), Refusal> {
    let frame = match framed.next().await {
        None => return Err(Refusal::Closed),
        Some(Err(e)) => return Err(Refusal::BadFrame(e)),
        Some(Ok(frame)) => frame,
    };
    let hello: Hello = crate::codec::decode(&frame).map_err(Refusal::Undecodable)?;
    // From here on the frames are the welcome and, once accepted, calls.
    framed.codec_mut().set_max_frame_length(config.max_frame);
    let accepted = check_hello(&hello, &config.token).and_then(|()| {
        Arc::clone(connections)
            .try_acquire_owned()
            .map_err(|_| Refusal::Full {
                limit: config.max_connections,
            })
    });
    let welcome = match &accepted {
        Ok(_) => Welcome::Accepted(manifest.clone()),
        Err(refusal @ Refusal::Full { .. }) => Welcome::Busy(refusal.to_string()),
        Err(refusal) => Welcome::Refused(refusal.to_string()),
    };
    let bytes = crate::codec::encode(&welcome)
        .map_err(|e| Refusal::Welcome(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let sent = framed.send(Bytes::from(bytes)).await;
    let permit = accepted?;
    sent.map_err(Refusal::Welcome)?;
    Ok((hello.worker_id, permit))
}

/// Whether a hello may join: the same protocol version and the cluster token.
fn check_hello(hello: &Hello, token: &str) -> Result<(), Refusal> {
    if hello.protocol != wire::PROTOCOL_VERSION {
        return Err(Refusal::Protocol {
            theirs: hello.protocol,
            ours: wire::PROTOCOL_VERSION,
        });
    }
    if !same_secret(hello.token.as_bytes(), token.as_bytes()) {
        return Err(Refusal::WrongToken);
    }
    Ok(())
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the calls of one authenticated connection until it closes (`Ok`) or sends something
/// that is not a call (`Err`: the connection is closed). At most `max_in_flight` calls run at
/// once; past that the connection is not read (backpressure), so a flood from one worker cannot
/// exhaust the Library.
async fn serve_calls(
    framed: Framed<UnixStream, LengthDelimitedCodec>,
    services: Arc<Services>,
    max_in_flight: usize,
) -> Result<(), tarpc::ChannelError<io::Error>> {
    let transport = wire::server_transport(framed);
    // Room for every in-flight call's response, so a finished call never waits for the writer
    // while holding its permit.
    let server_config = server::Config {
        pending_response_buffer: max_in_flight,
    };
    let requests = server::BaseChannel::new(server_config, transport).requests();
    let serve = server::serve(move |_ctx, request: CallRequest| {
        let services = Arc::clone(&services);
        async move { Ok(services.call(request).await) }
    });
    // The calls run inside this task (no spawn per call: measured 22 % less Library CPU per
    // call under load), concurrently, at most `max_in_flight` at a time: past that the
    // connection is not read (backpressure). Every request available is read first and every
    // ready call run before yielding, so the replies of one poll go out in one write.
    let mut requests = std::pin::pin!(requests);
    let mut running = FuturesUnordered::new();
    let mut failed = None;
    futures::future::poll_fn(|cx| loop {
        while running.len() < max_in_flight {
            match requests.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(request))) => running.push(request.execute(serve.clone())),
                Poll::Ready(Some(Err(e))) => {
                    failed = Some(e);
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        let mut finished = false;
        while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {
            finished = true;
        }
        if !finished {
            return Poll::Pending;
        }
    })
    .await;
    // The peer is gone or broke the protocol: let the calls it started finish (their replies
    // go nowhere, but their effects are complete, never cut in the middle).
    while running.next().await.is_some() {}
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
