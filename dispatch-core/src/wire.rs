//! The data plane's messages: what an Agent and the Library say to each other over the Library's
//! Unix socket. Both sides frame with the same length-delimited codec and the same frame limit.

use crate::error::RemoteError;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Version of this protocol; an Agent and a Library of different versions refuse each other.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Bytes of a frame not available to a call's payload: the tarpc envelope (request id, context,
/// service and method names) takes at most this much.
pub(crate) const FRAME_OVERHEAD: usize = 1024;

/// The longest service or method name a request may carry.
pub(crate) const MAX_NAME_LEN: usize = 256;

/// The largest argument or reply payload for a frame limit of `max_frame` bytes.
pub(crate) fn payload_limit(max_frame: usize) -> usize {
    max_frame.saturating_sub(FRAME_OVERHEAD)
}

/// The first frame an Agent sends: who it is and the proof that it belongs to the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`PROTOCOL_VERSION`] of the Agent.
    pub(crate) protocol: u32,
    /// The cluster token the master gave the worker.
    pub(crate) token: String,
    /// The worker's id, for the Library's logs.
    pub(crate) worker_id: u32,
}

/// The Library's answer to a [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Welcome {
    /// Accepted: from now on the connection carries tarpc frames. The manifest lets the Agent
    /// check that it was built with the same services.
    Accepted(crate::manifest::Manifest),
    /// Refused, with the reason.
    Refused(String),
}

/// One call: `service.method(args)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CallRequest {
    /// The service's wire name.
    pub(crate) service: String,
    /// The method's name.
    pub(crate) method: String,
    /// The bincode-encoded argument tuple.
    pub(crate) args: ByteBuf,
}

impl tarpc::RequestName for CallRequest {
    fn name(&self) -> &str {
        "call"
    }
}

/// The answer to a [`CallRequest`]: the encoded return value, or why there is none.
pub(crate) type CallResponse = Result<ByteBuf, RemoteError>;

/// A framed Unix stream with the cluster's frame limit.
pub(crate) fn framed(
    stream: UnixStream,
    max_frame: usize,
) -> Framed<UnixStream, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec();
    Framed::new(stream, codec)
}

/// The tarpc transport over an already handshaken framed stream.
pub(crate) fn transport<In, Out>(
    framed: Framed<UnixStream, LengthDelimitedCodec>,
) -> tarpc::serde_transport::Transport<
    UnixStream,
    In,
    Out,
    tarpc::tokio_serde::formats::Bincode<In, Out>,
>
where
    In: for<'de> Deserialize<'de>,
    Out: Serialize,
{
    tarpc::serde_transport::new(framed, tarpc::tokio_serde::formats::Bincode::default())
}
