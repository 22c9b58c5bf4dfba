//! The Agent: a worker's one multiplexed connection to the Library.

use crate::client::ServiceClient;
use crate::cluster_error::ClusterError;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::wire::{self, CallRequest, CallResponse, Hello, Welcome};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use once_cell::sync::OnceCell;
use serde_bytes::ByteBuf;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tarpc::client::RpcError;

static AGENT: OnceCell<Agent> = OnceCell::new();

/// A worker's connection to the Library. Every generated stub calls through it:
/// `Agent::get().demo().get_name().await`.
///
/// One Agent exists per worker process, connected before the worker's code runs. All calls of the
/// process share its one connection; they run concurrently and each has a deadline.
#[derive(Debug)]
pub struct Agent {
    client: tarpc::client::Channel<CallRequest, CallResponse>,
    worker_id: u32,
    /// The default deadline in microseconds; changeable at run time.
    default_timeout_us: AtomicU64,
    payload_limit: usize,
    manifest: Manifest,
}

/// What an Agent needs to connect.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) socket: PathBuf,
    pub(crate) token: String,
    pub(crate) worker_id: u32,
    pub(crate) max_frame: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
}

impl Agent {
    /// The Agent of this worker.
    ///
    /// # Panics
    /// Outside a worker process of a running cluster (in the master, in the Library, in a plain
    /// test): there is no Library to call there. Use [`Agent::try_get`] to check.
    pub fn get() -> &'static Agent {
        match AGENT.get() {
            Some(agent) => agent,
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

    /// The Library's manifest, as received in the handshake.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Sends one call and waits for its reply or its deadline (`timeout`, or the Agent's default).
    pub(crate) async fn call_raw(
        &self,
        service: &str,
        method: &str,
        args: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
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
        let timeout = timeout.unwrap_or_else(|| self.default_timeout());
        let mut ctx = tarpc::context::current();
        ctx.deadline = Instant::now() + timeout;
        let request = CallRequest {
            service: service.to_owned(),
            method: method.to_owned(),
            args: ByteBuf::from(args),
        };
        match self.client.call(ctx, request).await {
            Ok(Ok(reply)) => Ok(reply.into_vec()),
            Ok(Err(remote)) => Err(remote.into()),
            Err(RpcError::DeadlineExceeded) => Err(Error::DeadlineExceeded { timeout }),
            Err(e) => Err(Error::Unavailable {
                reason: e.to_string(),
            }),
        }
    }

    /// Connects to the Library, completes the handshake and checks the manifest.
    pub(crate) async fn connect(config: &AgentConfig) -> Result<Agent, ClusterError> {
        let stream = tokio::net::UnixStream::connect(&config.socket)
            .await
            .map_err(|e| {
                ClusterError::io(
                    format!(
                        "cannot connect to the library at {}",
                        config.socket.display()
                    ),
                    e,
                )
            })?;
        let mut framed = wire::framed(stream, config.max_frame);
        let hello = Hello {
            protocol: wire::PROTOCOL_VERSION,
            token: config.token.clone(),
            worker_id: config.worker_id,
        };
        let hello = crate::codec::encode(&hello).map_err(|e| ClusterError::Protocol {
            message: format!("cannot encode the hello: {e}"),
        })?;
        let exchange = async {
            framed.send(Bytes::from(hello)).await?;
            framed.next().await.transpose()
        };
        let frame = tokio::time::timeout(config.handshake_timeout, exchange)
            .await
            .map_err(|_| ClusterError::Handshake {
                message: format!(
                    "the library did not answer within {:?}",
                    config.handshake_timeout
                ),
            })?
            .map_err(|e| ClusterError::io("handshake with the library", e))?
            .ok_or_else(|| ClusterError::Handshake {
                message: "the library closed the connection (wrong token?)".into(),
            })?;
        let welcome: Welcome =
            crate::codec::decode(&frame).map_err(|e| ClusterError::Handshake {
                message: format!("undecodable answer: {e}"),
            })?;
        let manifest = match welcome {
            Welcome::Accepted(m) => m,
            Welcome::Refused(reason) => return Err(ClusterError::Handshake { message: reason }),
        };
        let local = Manifest::local();
        if manifest.fingerprint() != local.fingerprint() {
            // The Library may host more than this worker knows of; what this worker calls must
            // be there with the same signature.
            manifest
                .check_serves(&local)
                .map_err(|e| ClusterError::Handshake {
                    message: e.to_string(),
                })?;
        }
        let mut client_config = tarpc::client::Config::default();
        client_config.max_in_flight_requests = 100_000;
        client_config.pending_request_buffer = 1024;
        let client = tarpc::client::new(client_config, wire::transport(framed)).spawn();
        Ok(Agent {
            client,
            worker_id: config.worker_id,
            default_timeout_us: AtomicU64::new(
                u64::try_from(config.call_timeout.as_micros()).unwrap_or(u64::MAX),
            ),
            payload_limit: wire::payload_limit(config.max_frame),
            manifest,
        })
    }

    /// Makes `self` the process's Agent.
    pub(crate) fn install(self) -> &'static Agent {
        AGENT.get_or_init(|| self)
    }
}
