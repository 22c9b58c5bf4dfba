//! The control plane: what the master and each child say to each other over the child's private
//! socket pair. The child's end is inherited at a fixed descriptor, so no other process can reach
//! it; end-of-file on it means the other side is gone.

use crate::cluster_error::ClusterError;
use crate::topic::Members;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::path::PathBuf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The largest control message.
pub(crate) const MAX_CONTROL_FRAME: usize = 1 << 20;
/// The largest message payload: a control frame less room for the envelope.
pub(crate) const MAX_MESSAGE: usize = MAX_CONTROL_FRAME - 4096;

/// Master → child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ToChild {
    /// The first message: what the child needs to join the cluster.
    Init(ChildInit),
    /// Every process of the cluster is ready.
    ClusterReady,
    /// The Library was restarted and is ready again: reconnect now.
    LibraryRestarted,
    /// Stop: a worker lets its app drain, the Library closes its services.
    Shutdown,
    /// A message for this process.
    Deliver(Incoming),
    /// The outcome of a send that asked for one.
    Sent {
        /// The send's sequence number.
        seq: u64,
        /// Why it could not be delivered, if it could not.
        error: Option<String>,
    },
    /// The cluster's live processes changed.
    Members(Members),
    /// Report your call counts (and, from the Library, per-method metrics).
    StatsRequest {
        /// Echoed in the answer.
        id: u64,
    },
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Target {
    /// The Library and every worker, the sender included.
    Broadcast,
    /// Every worker.
    App,
    /// The Library.
    Library,
    /// One worker, chosen by the master.
    Random,
    /// One process.
    Pid(u32),
}

/// A message on its way to the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outgoing {
    /// Non-zero when the sender waits for a [`ToChild::Sent`] answer.
    pub(crate) seq: u64,
    pub(crate) target: Target,
    pub(crate) topic: String,
    pub(crate) payload: ByteBuf,
    /// Kept by the master as the topic's latest value, replayed to processes that start later.
    pub(crate) retain: bool,
}

/// A message delivered to a process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Incoming {
    /// The sender's pid (0: the master itself).
    pub(crate) from: u32,
    pub(crate) topic: String,
    pub(crate) payload: ByteBuf,
    /// The version of a published (retained) value, numbered by the master per topic from 1;
    /// 0 for an ordinary message.
    pub(crate) version: u64,
}

/// The cluster settings a child needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildInit {
    /// The cluster's secret: an Agent proves membership with it.
    pub(crate) token: String,
    /// Where the Library listens.
    pub(crate) library_socket: PathBuf,
    /// The frame limit on the data plane, the same on both sides.
    pub(crate) max_frame: u64,
    /// The deadline of a call that sets none, in milliseconds.
    pub(crate) call_timeout_ms: u64,
    /// How long a peer has to complete its handshake, in milliseconds.
    pub(crate) handshake_timeout_ms: u64,
    /// The Library's per-connection cap on calls in flight.
    pub(crate) max_in_flight: u32,
    /// How long a worker may take to become ready, in milliseconds.
    pub(crate) worker_ready_timeout_ms: u64,
    /// Whether the Library keeps per-method metrics.
    pub(crate) method_metrics: bool,
    /// The latest value of every published topic, so the child has them before any of its
    /// setup runs: a restarted Library resumes from them, a worker starts with them.
    pub(crate) published: Vec<Incoming>,
    /// The cluster's live processes when the child was started: a restarted Library knows every
    /// worker before it serves its first call (egg#1743).
    pub(crate) members: Members,
}

/// Child → master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ToMaster {
    /// The child is ready: the Library has initialised its services and listens; a worker's
    /// Agent is connected and has checked the manifest.
    Ready {
        /// The Library's services (`demo (2 methods), …`); empty for a worker.
        services: String,
    },
    /// The child could not start, and says why before it exits.
    Failed {
        /// The reason, naming the service or step that failed.
        reason: String,
    },
    /// A message to route.
    Send(Outgoing),
    /// The answer to a [`ToChild::StatsRequest`].
    Stats {
        /// The request's id.
        id: u64,
        /// Calls served (the Library) or made (a worker).
        calls: u64,
        /// Calls running or waiting now.
        in_flight: u64,
        /// The Library's per-method metrics; empty from workers.
        methods: Vec<crate::metrics::MethodStats>,
    },
}

type Framing = Framed<UnixStream, LengthDelimitedCodec>;

/// One end of a control socket.
#[derive(Debug)]
pub(crate) struct ControlChannel {
    framed: Framing,
}

impl ControlChannel {
    pub(crate) fn new(stream: UnixStream) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_CONTROL_FRAME)
            .new_codec();
        ControlChannel {
            framed: Framed::new(stream, codec),
        }
    }

    /// Sends one message.
    #[cfg(test)]
    pub(crate) async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ClusterError> {
        send(&mut self.framed, msg).await
    }

    /// The next message, or `None` at end-of-file.
    pub(crate) async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClusterError> {
        recv(&mut self.framed).await
    }

    /// Separates the two directions, so one task can read while another writes.
    pub(crate) fn split(self) -> (ControlSender, ControlReceiver) {
        let (sink, stream) = self.framed.split();
        (ControlSender { sink }, ControlReceiver { stream })
    }
}

/// The writing half of a [`ControlChannel`].
#[derive(Debug)]
pub(crate) struct ControlSender {
    sink: SplitSink<Framing, Bytes>,
}

impl ControlSender {
    /// Sends one message.
    pub(crate) async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ClusterError> {
        send(&mut self.sink, msg).await
    }
}

/// In a child: takes the control socket the master handed down and reads the master's init
/// message, the first thing it sends.
pub(crate) async fn join_master(
    env: &crate::role::ChildEnv,
) -> Result<(ControlChannel, ChildInit), ClusterError> {
    let stream = crate::spawn::inherited_control(env.control_fd, env.master_pid)?;
    let mut control = ControlChannel::new(stream);
    match control.recv::<ToChild>().await? {
        Some(ToChild::Init(init)) => Ok((control, init)),
        other => Err(ClusterError::Protocol {
            message: format!("expected the init message from the master, got {other:?}"),
        }),
    }
}

/// A child's queue of messages to the master, written by one task in order; sending never
/// blocks the caller.
#[derive(Debug, Clone)]
pub(crate) struct ControlWriter {
    tx: mpsc::UnboundedSender<Outbound>,
}

#[derive(Debug)]
enum Outbound {
    Message(ToMaster),
    Flush(oneshot::Sender<()>),
}

impl ControlWriter {
    /// Starts the task that writes to `sender`.
    pub(crate) fn spawn(mut sender: ControlSender) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Outbound::Message(msg) => {
                        if sender.send(&msg).await.is_err() {
                            break;
                        }
                    }
                    Outbound::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        ControlWriter { tx }
    }

    /// Queues `msg`; `false` if the writer is gone.
    pub(crate) fn send(&self, msg: ToMaster) -> bool {
        self.tx.send(Outbound::Message(msg)).is_ok()
    }

    /// Resolves once everything queued before has been written.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Outbound::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The reading half of a [`ControlChannel`].
#[derive(Debug)]
pub(crate) struct ControlReceiver {
    stream: SplitStream<Framing>,
}

impl ControlReceiver {
    /// The next message, or `None` at end-of-file.
    pub(crate) async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClusterError> {
        recv(&mut self.stream).await
    }
}

async fn send<S, T>(sink: &mut S, msg: &T) -> Result<(), ClusterError>
where
    S: futures::Sink<Bytes, Error = std::io::Error> + Unpin,
    T: Serialize,
{
    let bytes = crate::codec::encode(msg).map_err(|e| ClusterError::Protocol {
        message: format!("cannot encode a control message: {e}"),
    })?;
    sink.send(Bytes::from(bytes))
        .await
        .map_err(|e| ClusterError::io("cannot write to the control socket", e))
}

async fn recv<S, T>(stream: &mut S) -> Result<Option<T>, ClusterError>
where
    S: futures::Stream<Item = std::io::Result<bytes::BytesMut>> + Unpin,
    T: DeserializeOwned,
{
    match stream.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(ClusterError::io("cannot read the control socket", e)),
        Some(Ok(frame)) => {
            crate::codec::decode(&frame)
                .map(Some)
                .map_err(|e| ClusterError::Protocol {
                    message: format!("undecodable control message: {e}"),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (mut a, mut b) = (ControlChannel::new(a), ControlChannel::new(b));
        a.send(&ToChild::ClusterReady).await.expect("send");
        let got: Option<ToChild> = b.recv().await.expect("recv");
        assert!(matches!(got, Some(ToChild::ClusterReady)));
        b.send(&ToMaster::Failed { reason: "x".into() })
            .await
            .expect("send");
        let got: Option<ToMaster> = a.recv().await.expect("recv");
        assert!(matches!(got, Some(ToMaster::Failed { reason }) if reason == "x"));
        drop(a);
        assert!(b.recv::<ToChild>().await.expect("eof").is_none());
    }
}
