//! The Library's data socket: accepts and admits Agents, authenticates them, and serves each connection's
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

use super::connection::serve_connection;
use super::gate::{Gate, Peer, Refusal};
use crate::settings::Settings;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

use super::hosted::Services;
/// Most authenticated connections served at once, before the descriptor limit lowers it. A
/// cluster needs one per worker.
pub(super) const MAX_CONNECTIONS: usize = 1024;
/// Most connections waiting for their hello at once, before the descriptor limit lowers it.
pub(super) const MAX_HANDSHAKES: usize = 128;
/// The period over which refusals are counted and summed up.
pub(super) const LOG_WINDOW: Duration = Duration::from_secs(1);
/// Events logged one by one in a window; the rest are counted.
pub(super) const LOG_LINES_PER_WINDOW: usize = 8;
/// Distinct peers counted one by one in a window's summary; the rest are counted together.
pub(super) const LOG_PEERS_PER_WINDOW: usize = 64;
/// The pause after `accept` failed for lack of descriptors or memory.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The pause after any other `accept` failure.
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// What every connection is served with: the cluster's token and settings, and the connection
/// caps of this process.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    /// The cluster's secret, which a peer's hello must carry.
    pub(crate) token: String,
    /// The cluster's settings (frame limit, handshake timeout, in-flight cap).
    pub(crate) settings: Settings,
    /// The cap on authenticated connections served at once.
    pub(crate) max_connections: usize,
    /// The cap on connections waiting for their hello; past it the oldest is dropped.
    pub(crate) max_handshakes: usize,
}

impl ServeConfig {
    /// The Library's serving settings: the connection caps are this module's defaults, lowered
    /// to fit the process's descriptor limit.
    pub(crate) fn new(token: String, settings: Settings) -> Self {
        let (max_connections, max_handshakes) = socket_caps(open_files_limit());
        ServeConfig {
            token,
            settings,
            max_connections,
            max_handshakes,
        }
    }

    /// The per-connection cap on calls in flight (at least 1).
    pub(crate) fn max_in_flight(&self) -> usize {
        (self.settings.max_in_flight as usize).max(1)
    }
}

/// `(max_connections, max_handshakes)` for a soft descriptor limit of `nofile` (`None`: no
/// limit). Sockets get at most half of the descriptors; the other half stays for the services'
/// own files and connections.
pub(super) fn socket_caps(nofile: Option<u64>) -> (usize, usize) {
    let budget = nofile.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    let handshakes = MAX_HANDSHAKES.min(budget / 4).max(1);
    let connections = MAX_CONNECTIONS
        .min(budget.saturating_sub(handshakes))
        .max(1);
    (connections, handshakes)
}

/// The soft limit on this process's open descriptors, or `None` when there is none.
pub(super) fn open_files_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => Some(soft),
        _ => None,
    }
}

/// Where connections come from: the Library's listener, or a test's stand-in that fails on
/// demand.
pub(super) trait Accept {
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
pub(super) async fn serve_listener<L: Accept>(
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
pub(super) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Checks the peer's user and starts its handshake, or closes it.
pub(super) fn admit(
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
pub(super) fn check_user(peer_uid: u32, own_uid: u32) -> Result<(), Refusal> {
    if peer_uid == own_uid {
        Ok(())
    } else {
        Err(Refusal::OtherUser)
    }
}
