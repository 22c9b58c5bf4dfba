//! The admission state shared by the accept loop and every connection: who the peer is, why a
//! peer is refused, the caps on waiting and served connections, and the counters tests read.

use super::accept::ServeConfig;
use super::peer_log::{error_chain, PeerLog};
use crate::wire::FrameBudget;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Who is on the other end, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Peer {
    /// Its pid, when the kernel told.
    pub(super) pid: Option<i32>,
    /// Its uid.
    pub(super) uid: u32,
}

impl Peer {
    /// A peer whose credentials could not be read.
    pub(super) const UNKNOWN: Peer = Peer {
        pid: None,
        uid: u32::MAX,
    };
}

/// A pid for a log field: the number, or `unknown`.
pub(super) struct PidField(pub(super) Option<i32>);

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
pub(super) enum Refusal {
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
    /// The peer's process already holds as many connections as one process may.
    #[error(
        "process {pid} already holds {limit} connections to the library, the most one process \
         may hold (Cluster::connections_per_process); it claims to be worker {worker_id}"
    )]
    PerProcess {
        /// The peer's pid.
        pid: i32,
        /// The cap.
        limit: usize,
        /// The worker id its hello claims.
        worker_id: u32,
    },
    /// The welcome could not be sent.
    #[error("cannot send the welcome: {0}")]
    Welcome(#[source] io::Error),
}

/// The admission state shared by the accept loop and every connection: the caps, the peers
/// waiting for their hello, the rate-limited log, and counters.
pub(super) struct Gate {
    /// One permit per authenticated connection.
    pub(super) connections: Arc<Semaphore>,
    /// The number of those permits.
    pub(super) max_connections: usize,
    /// Peers waiting for their hello, oldest first.
    pub(super) pending: Mutex<PendingSet>,
    /// The most peers that may wait.
    pub(super) max_handshakes: usize,
    /// Where refusals and drops are logged, rate-limited.
    pub(super) log: Mutex<PeerLog>,
    /// Connections accepted.
    pub(super) accepted: AtomicU64,
    /// Connections closed before they were served.
    pub(super) refused: AtomicU64,
    /// Of those, connections dropped to make room for newer ones.
    pub(super) evicted: AtomicU64,
    /// Connections that completed their handshake.
    pub(super) authenticated: AtomicU64,
    /// Authenticated connections closed because of what their peer sent.
    pub(super) dropped: AtomicU64,
    /// Failed accepts.
    pub(super) accept_errors: AtomicU64,
    /// The most connections ever waiting for their hello at once.
    pub(super) pending_high_water: AtomicUsize,
    /// Connection tasks that ran to their end, refused or served (a task that panicked would
    /// not be counted: tests compare this with what they opened).
    pub(super) finished: AtomicU64,
    /// The bytes of partial frames, over every connection (issue 12).
    pub(super) frames: Arc<FrameBudget>,
    /// Authenticated connections per peer pid.
    pub(super) per_process: Arc<Mutex<HashMap<i32, usize>>>,
    /// The most authenticated connections one pid may hold.
    pub(super) max_per_process: usize,
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
pub(super) struct PendingSet {
    /// The id of the next peer.
    pub(super) next_id: u64,
    /// The waiting peers' senders, by id (ids grow with time: the first is the oldest).
    pub(super) waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Gate {
    /// A gate with `config`'s caps.
    pub(super) fn new(config: &ServeConfig) -> Self {
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
            // At least one whole frame, or a worker could never send its largest call.
            frames: Arc::new(FrameBudget::new(
                config
                    .settings
                    .budgets
                    .partial_frame_bytes
                    .max(config.settings.max_frame + 4),
            )),
            per_process: Arc::default(),
            max_per_process: config.settings.budgets.connections_per_process.max(1),
        }
    }

    /// Admits one more authenticated connection: a slot under the per-process cap, then one of
    /// the connection permits. `Err` says why not.
    pub(super) fn admit(&self, peer: Peer, worker_id: u32) -> Result<Admission, Refusal> {
        let process = match peer.pid {
            Some(pid) => {
                let mut counts = lock(&self.per_process);
                let count = counts.entry(pid).or_insert(0);
                if *count >= self.max_per_process {
                    return Err(Refusal::PerProcess {
                        pid,
                        limit: self.max_per_process,
                        worker_id,
                    });
                }
                *count += 1;
                Some(ProcessSlot {
                    pid,
                    counts: Arc::clone(&self.per_process),
                })
            }
            None => None,
        };
        let permit = Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| Refusal::Full {
                limit: self.max_connections,
            })?;
        Ok(Admission {
            _permit: permit,
            _process: process,
        })
    }

    /// How many connections are waiting for their hello now.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        lock(&self.pending).waiting.len()
    }

    /// How many authenticated connections are served now.
    #[cfg(test)]
    pub(super) fn served(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }

    /// The rate-limited log, locked.
    pub(super) fn log(&self) -> MutexGuard<'_, PeerLog> {
        lock(&self.log)
    }

    /// Registers a peer that is about to handshake; when the set is full, the oldest waiting
    /// peer is told to give up first.
    pub(super) fn enter_handshake(self: &Arc<Self>) -> HandshakeSlot {
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
    pub(super) fn refuse(&self, peer: Peer, refusal: &Refusal) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if matches!(refusal, Refusal::Evicted { .. }) {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        self.log()
            .event(peer, format_args!("refused a connection: {refusal}"));
    }

    /// Counts and logs (rate-limited) an authenticated connection closed because of what its
    /// peer sent.
    pub(super) fn drop_connection(
        &self,
        peer: Peer,
        worker_id: u32,
        error: &dyn std::error::Error,
    ) {
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

/// An authenticated connection's place: its connection permit and its count against its
/// process's cap, both given back on drop.
#[derive(Debug)]
pub(super) struct Admission {
    _permit: OwnedSemaphorePermit,
    _process: Option<ProcessSlot>,
}

/// One connection counted against its process's cap.
#[derive(Debug)]
struct ProcessSlot {
    pid: i32,
    counts: Arc<Mutex<HashMap<i32, usize>>>,
}

impl Drop for ProcessSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(&self.pid) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.pid);
            }
        }
    }
}

/// Locks `m`, even if a panic poisoned it: every critical section here leaves the data valid.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A peer's place among those waiting for their hello; leaving it (drop) frees the place.
pub(super) struct HandshakeSlot {
    /// The peer's id in the [`PendingSet`].
    pub(super) id: u64,
    /// Resolves (with an error) when the gate drops this peer's sender.
    pub(super) evicted: oneshot::Receiver<()>,
    /// The gate to leave on drop.
    pub(super) gate: Arc<Gate>,
}

impl HandshakeSlot {
    /// Resolves when a newer peer pushed this one out.
    pub(super) async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        lock(&self.gate.pending).waiting.remove(&self.id);
    }
}
