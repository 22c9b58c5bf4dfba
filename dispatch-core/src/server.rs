//! The Library's data socket: accepts Agents, authenticates them, and serves each connection's
//! calls concurrently with a cap on calls in flight.

use crate::control::ChildInit;
use crate::services::Services;
use crate::wire::{self, CallRequest, CallResponse, Hello, Welcome};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tarpc::server::{self, Channel};
use tarpc::{ClientMessage, Response};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// The settings every connection is served with.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) token: String,
    pub(crate) max_frame: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_in_flight: usize,
}

impl ServeConfig {
    pub(crate) fn from_init(init: &ChildInit) -> Self {
        ServeConfig {
            token: init.token.clone(),
            max_frame: usize::try_from(init.max_frame).unwrap_or(usize::MAX),
            handshake_timeout: Duration::from_millis(init.handshake_timeout_ms),
            max_in_flight: (init.max_in_flight as usize).max(1),
        }
    }
}

/// Accepts connections forever, each served on its own task.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    services: Arc<Services>,
    config: Arc<ServeConfig>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(
                    stream,
                    Arc::clone(&services),
                    Arc::clone(&config),
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; existing connections go on.
                tracing::warn!("accept failed on the library socket: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Who is on the other end, for logs.
#[derive(Debug, Clone, Copy)]
struct Peer {
    pid: Option<i32>,
    uid: u32,
}

async fn serve_connection(stream: UnixStream, services: Arc<Services>, config: Arc<ServeConfig>) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            pid: cred.pid(),
            uid: cred.uid(),
        },
        Err(e) => {
            tracing::warn!("refused a connection: cannot read its credentials: {e}");
            return;
        }
    };
    let own_uid = nix::unistd::getuid().as_raw();
    if peer.uid != own_uid {
        tracing::warn!(peer_pid = ?peer.pid, peer_uid = peer.uid, "refused a connection from another user");
        return;
    }
    let mut framed = wire::framed(stream, config.max_frame);
    let worker_id = match handshake(&mut framed, &services, &config).await {
        Ok(id) => id,
        Err(reason) => {
            tracing::warn!(peer_pid = ?peer.pid, peer_uid = peer.uid, "refused a connection: {reason}");
            return;
        }
    };
    tracing::debug!(peer_pid = ?peer.pid, worker_id, "agent connected");
    serve_calls(framed, services, &config).await;
    tracing::debug!(peer_pid = ?peer.pid, worker_id, "agent disconnected");
}

/// Reads the [`Hello`] (within the handshake timeout), checks protocol and token, answers with
/// the manifest. Returns the worker id, or why the peer was refused.
async fn handshake(
    framed: &mut tokio_util::codec::Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>,
    services: &Services,
    config: &ServeConfig,
) -> Result<u32, String> {
    let frame = match tokio::time::timeout(config.handshake_timeout, framed.next()).await {
        Err(_) => return Err(format!("no hello within {:?}", config.handshake_timeout)),
        Ok(None) => return Err("closed before its hello".into()),
        Ok(Some(Err(e))) => return Err(format!("bad first frame: {e}")),
        Ok(Some(Ok(frame))) => frame,
    };
    let hello: Hello =
        crate::codec::decode(&frame).map_err(|e| format!("undecodable hello: {e}"))?;
    let refusal = if hello.protocol != wire::PROTOCOL_VERSION {
        Some(format!(
            "protocol version {} (the library speaks {})",
            hello.protocol,
            wire::PROTOCOL_VERSION
        ))
    } else if !same_secret(hello.token.as_bytes(), config.token.as_bytes()) {
        Some("wrong cluster token".to_owned())
    } else {
        None
    };
    let welcome = match &refusal {
        Some(reason) => Welcome::Refused(reason.clone()),
        None => Welcome::Accepted(services.manifest().clone()),
    };
    let bytes =
        crate::codec::encode(&welcome).map_err(|e| format!("cannot encode the welcome: {e}"))?;
    let sent =
        tokio::time::timeout(config.handshake_timeout, framed.send(Bytes::from(bytes))).await;
    if let Some(reason) = refusal {
        return Err(reason);
    }
    match sent {
        Ok(Ok(())) => Ok(hello.worker_id),
        Ok(Err(e)) => Err(format!("cannot send the welcome: {e}")),
        Err(_) => Err("the welcome could not be sent in time".into()),
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the calls of one authenticated connection until it closes. At most `max_in_flight`
/// calls run at once; past that the connection is not read (backpressure), so a flood from one
/// worker cannot exhaust the Library.
async fn serve_calls(
    framed: tokio_util::codec::Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>,
    services: Arc<Services>,
    config: &ServeConfig,
) {
    let transport = wire::transport::<ClientMessage<CallRequest>, Response<CallResponse>>(framed);
    // Room for every in-flight call's response, so a finished call never waits for the writer
    // while holding its permit.
    let server_config = server::Config {
        pending_response_buffer: config.max_in_flight,
    };
    let channel = server::BaseChannel::new(server_config, transport);
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let serve = server::serve(move |_ctx, request: CallRequest| {
        let services = Arc::clone(&services);
        async move { Ok(services.call(request).await) }
    });
    channel
        .execute(serve)
        .for_each(|call| {
            let permits = Arc::clone(&permits);
            async move {
                let Ok(permit) = permits.acquire_owned().await else {
                    return;
                };
                tokio::spawn(async move {
                    call.await;
                    drop(permit);
                });
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Agent, AgentConfig};
    use crate::service::{CallFuture, ErasedService, MethodInfo, ServiceRegistration};

    /// A hand-written service, as the macro would generate it.
    struct Echo;

    impl ErasedService for Echo {
        fn call(self: Arc<Self>, method: &str, args: Vec<u8>) -> CallFuture {
            match method {
                "echo" => Box::pin(async move { Ok(args) }),
                _ => crate::__private::unknown_method("echo", method),
            }
        }
    }

    inventory::submit! {
        ServiceRegistration {
            name: "echo",
            type_name: "Echo",
            methods: &[MethodInfo { name: "echo", signature: "fn echo(&self, s: String) -> String" }],
            init: || Box::pin(async { Ok(Arc::new(Echo) as Arc<dyn ErasedService>) }),
        }
    }

    async fn library(token: &str) -> (tempdir::Dir, AgentConfig) {
        let dir = tempdir::Dir::new();
        let socket = dir.0.join("lib.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let services = Arc::new(Services::start(1 << 16).await.expect("services"));
        let config = Arc::new(ServeConfig {
            token: "right".into(),
            max_frame: 1 << 17,
            handshake_timeout: Duration::from_secs(1),
            max_in_flight: 8,
        });
        tokio::spawn(accept_loop(listener, services, config));
        let agent = AgentConfig {
            socket,
            token: token.into(),
            worker_id: 0,
            max_frame: 1 << 17,
            call_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
        };
        (dir, agent)
    }

    mod tempdir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Self {
                let hex = crate::runtime_dir::random_hex(6).expect("random");
                let path = std::env::temp_dir().join(format!("dispatch-unit-{hex}"));
                std::fs::create_dir(&path).expect("mkdir");
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn the_right_token_gets_the_manifest_and_calls_go_through() {
        let (_dir, config) = library("right").await;
        let agent = Agent::connect(&config).await.expect("connect");
        assert_eq!(agent.manifest().services[0].name, "echo");
        let reply = agent
            .call_raw("echo", "echo", b"hi".to_vec(), None)
            .await
            .expect("echo");
        assert_eq!(reply, b"hi");
        let err = agent
            .call_raw("echo", "nope", vec![], None)
            .await
            .expect_err("unknown");
        assert!(err.is_unknown(), "{err}");
        let err = agent
            .call_raw("missing", "x", vec![], None)
            .await
            .expect_err("unknown service");
        assert!(matches!(err, crate::Error::UnknownService { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_wrong_token_is_refused_with_a_clear_error() {
        let (_dir, config) = library("wrong").await;
        let err = Agent::connect(&config).await.expect_err("refused");
        assert!(err.to_string().contains("wrong cluster token"), "{err}");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
