//! The master's side: accepts admin connections from processes of the same user and hands
//! each request to the master's event loop.

use super::command::Command;
use crate::admin::{Request, Response, MAX_ADMIN_FRAME, NAME_FILE, SOCKET};
use crate::cluster_error::ClusterError;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Admin connections served at once; more are closed at once (an operator's tool opens one).
const MAX_CONNECTIONS: usize = 16;
/// How long a client has to send its request, and the master to send its answer.
const IO_DEADLINE: Duration = Duration::from_secs(5);

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
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        let commands = commands.clone();
                        tokio::spawn(async move {
                            serve(stream, commands).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tracing::debug!(
                            "closed an admin connection: {MAX_CONNECTIONS} are being served"
                        );
                    }
                },
                Err(e) => {
                    tracing::warn!("accept failed on the admin socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn serve(stream: UnixStream, commands: mpsc::UnboundedSender<Command>) {
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
    let Ok(Some(Ok(frame))) = tokio::time::timeout(IO_DEADLINE, framed.next()).await else {
        return;
    };
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
        Request::Stop => {
            tracing::info!("stop requested through the admin socket");
            match commands.send(Command::Stop) {
                Ok(()) => Response::Done("graceful stop started".into()),
                Err(_) => Response::Refused("the cluster is stopping".into()),
            }
        }
    }
}
