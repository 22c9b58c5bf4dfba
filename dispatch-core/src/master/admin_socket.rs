//! The master's side: accepts admin connections from processes of the same user and hands
//! each request to the master's event loop.

use super::command::Command;
use crate::admin::{Request, Response, MAX_ADMIN_FRAME, NAME_FILE, SOCKET};
use crate::cluster_error::ClusterError;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Admin connections served at once (an operator's tool opens one). When all are taken, the
/// oldest connection still waiting for its request is dropped to make room, so idle
/// connections can never lock out a real client (issue 12); only when all of them are being
/// answered is the new one closed.
const MAX_CONNECTIONS: usize = 16;
/// How long a client has to send its request after connecting (`dispatchctl` sends it at once).
const REQUEST_DEADLINE: Duration = Duration::from_secs(1);
/// How long the master has to send its answer.
const IO_DEADLINE: Duration = Duration::from_secs(5);
/// How long the accept loop waits for an evicted connection's slot to be given back.
const EVICTION_WAIT: Duration = Duration::from_millis(500);

/// The admin connections waiting for their request, oldest first; dropping one's sender tells
/// it to give up.
#[derive(Debug, Default)]
struct Idle {
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

fn lock(idle: &Mutex<Idle>) -> std::sync::MutexGuard<'_, Idle> {
    // Every critical section is one map operation.
    idle.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Binds `admin.sock` (0600) in `dir`, writes the cluster's name next to it, and serves.
pub(crate) fn start(
    dir: &Path,
    name: &str,
    commands: mpsc::UnboundedSender<Command>,
) -> Result<(), ClusterError> {
    let path = dir.join(SOCKET);
    let listener = UnixListener::bind(&path).map_err(|e| {
        ClusterError::io(
            format!("cannot bind the admin socket {}", path.display()),
            e,
        )
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ClusterError::io("cannot restrict the admin socket to its owner", e))?;
    std::fs::write(dir.join(NAME_FILE), name)
        .map_err(|e| ClusterError::io("cannot write the cluster's name", e))?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let idle = Arc::new(Mutex::new(Idle::default()));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Some(slot) = take_slot(&slots, &idle).await else {
                        tracing::warn!(
                            "closed an admin connection: {MAX_CONNECTIONS} are being answered"
                        );
                        continue;
                    };
                    let (tx, evicted) = oneshot::channel();
                    let id = {
                        let mut idle = lock(&idle);
                        let id = idle.next;
                        idle.next += 1;
                        idle.waiting.insert(id, tx);
                        id
                    };
                    let commands = commands.clone();
                    let idle = Arc::clone(&idle);
                    tokio::spawn(async move {
                        serve(stream, commands, evicted, || {
                            lock(&idle).waiting.remove(&id);
                        })
                        .await;
                        lock(&idle).waiting.remove(&id);
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed on the admin socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

/// A slot for a new connection: a free one, or the one of the oldest connection still waiting
/// for its request, which is told to give up. `None` when every connection is being answered.
async fn take_slot(slots: &Arc<Semaphore>, idle: &Mutex<Idle>) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
        return Some(slot);
    }
    // Dropping its sender wakes the oldest idle connection, which gives its slot back.
    drop(lock(idle).waiting.pop_first()?);
    tracing::debug!(
        "dropped the oldest idle admin connection: {MAX_CONNECTIONS} were open, none had sent a request"
    );
    tokio::time::timeout(EVICTION_WAIT, Arc::clone(slots).acquire_owned())
        .await
        .ok()?
        .ok()
}

async fn serve(
    stream: UnixStream,
    commands: mpsc::UnboundedSender<Command>,
    mut evicted: oneshot::Receiver<()>,
    busy: impl FnOnce(),
) {
    let uid = nix::unistd::getuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == uid => {}
        Ok(cred) => {
            tracing::warn!(peer_pid = ?cred.pid(), peer_uid = cred.uid(), "refused an admin connection from another user");
            return;
        }
        Err(e) => {
            tracing::warn!("refused an admin connection: cannot read its credentials: {e}");
            return;
        }
    }
    let mut framed = crate::wire::framed(stream, MAX_ADMIN_FRAME);
    let read = tokio::select! {
        read = tokio::time::timeout(REQUEST_DEADLINE, framed.next()) => read,
        _ = &mut evicted => {
            tracing::debug!("dropped an idle admin connection to make room for a new one");
            return;
        }
    };
    let Ok(Some(Ok(frame))) = read else {
        tracing::debug!("closed an admin connection: no request within {REQUEST_DEADLINE:?}");
        return;
    };
    // Being answered: no longer idle, never evicted.
    busy();
    let response = match crate::wire::codec::decode::<Request>(&frame) {
        Ok(request) => answer(request, &commands).await,
        Err(e) => Response::Refused(format!("undecodable request: {e}")),
    };
    if let Ok(bytes) = crate::wire::codec::encode(&response) {
        let _ = tokio::time::timeout(IO_DEADLINE, framed.send(Bytes::from(bytes))).await;
    }
}

async fn answer(request: Request, commands: &mpsc::UnboundedSender<Command>) -> Response {
    match request {
        Request::Status { methods } => {
            let (tx, rx) = oneshot::channel();
            if commands
                .send(Command::Status { methods, reply: tx })
                .is_err()
            {
                return Response::Refused("the cluster is stopping".into());
            }
            match rx.await {
                Ok(status) => Response::Status(status),
                Err(_) => Response::Refused("the cluster is stopping".into()),
            }
        }
        Request::Reload => {
            tracing::info!("reload requested through the admin socket");
            match commands.send(Command::Reload) {
                Ok(()) => Response::Done("rolling reload started".into()),
                Err(_) => Response::Refused("the cluster is stopping".into()),
            }
        }
        Request::Upgrade => {
            tracing::info!("upgrade requested through the admin socket");
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Upgrade { reply: Some(tx) }).is_err() {
                return Response::Refused("the cluster is stopping".into());
            }
            match rx.await {
                Ok(Ok(pid)) => Response::Done(format!("upgraded: new master pid {pid}")),
                Ok(Err(why)) => Response::Refused(format!("upgrade failed: {why}")),
                Err(_) => Response::Refused("the cluster stopped during the upgrade".into()),
            }
        }
        Request::ReloadLibrary => {
            tracing::info!("library handover requested through the admin socket");
            let (tx, rx) = oneshot::channel();
            if commands
                .send(Command::ReloadLibrary { reply: Some(tx) })
                .is_err()
            {
                return Response::Refused("the cluster is stopping".into());
            }
            match rx.await {
                Ok(Ok(done)) => Response::Done(done),
                Ok(Err(why)) => Response::Refused(why),
                Err(_) => Response::Refused("the cluster is stopping".into()),
            }
        }
        Request::Scale(change) => {
            tracing::info!("scale {change} requested through the admin socket");
            let (tx, rx) = oneshot::channel();
            let command = Command::Scale {
                change,
                reply: Some(tx),
            };
            if commands.send(command).is_err() {
                return Response::Refused("the cluster is stopping".into());
            }
            match rx.await {
                Ok(Ok(done)) => Response::Done(done),
                Ok(Err(refused)) => Response::Refused(refused.to_string()),
                Err(_) => Response::Refused("the cluster is stopping".into()),
            }
        }
        Request::Stop => {
            tracing::info!("stop requested through the admin socket");
            match commands.send(Command::Stop) {
                Ok(()) => Response::Done("graceful stop started".into()),
                Err(_) => Response::Refused("the cluster is stopping".into()),
            }
        }
    }
}
