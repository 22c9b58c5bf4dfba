//! The data plane's messages: what an Agent and the Library say to each other over the Library's
//! Unix socket. Both sides frame with the same length-delimited codec and the same frame limit.

use super::framing::{framed_stream, FrameBudget, FrameMeter, FrameStream, Framing};
use crate::error::RemoteError;
#[cfg(test)]
use bincode::Options;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
#[cfg(test)]
use std::borrow::Cow;
#[cfg(test)]
use std::io;
use std::time::Duration;
#[cfg(test)]
use tarpc::ClientMessage;
use tokio::net::UnixStream;

/// Version of this protocol; an Agent and a Library of different versions refuse each other.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// Bytes of a frame not available to a call's payload: the tarpc envelope (request id, context,
/// service and method names) takes at most this much.
pub(crate) const FRAME_OVERHEAD: usize = 1024;

/// The longest service or method name a request may carry.
pub(crate) const MAX_NAME_LEN: usize = 256;

/// The largest first frame the Library reads from a peer that has not authenticated yet. A
/// [`Hello`] is a few dozen bytes; a length prefix over this is refused as soon as it is read, so
/// an unauthenticated peer can never make the Library buffer a large frame.
pub(crate) const MAX_HELLO_FRAME: usize = 4096;

/// The furthest deadline the Library accepts on a call. tarpc keeps a call's deadline in a timer
/// wheel that panics past about two years (and `Instant` arithmetic panics past its range), so a
/// later deadline is lowered to this one when the request is decoded; a call that must run for a
/// year has no deadline in practice.
pub(crate) const MAX_DEADLINE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

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
    Accepted(crate::service::Manifest),
    /// Refused, with the reason: retrying cannot help.
    Refused(String),
    /// Not now: the Library serves as many connections as it may. Worth retrying.
    Busy(String),
}

/// One call: `service.method(args)`, owned (tests build frames with it; the runtime writes and
/// reads the same layout borrowed, as `RequestRef`).
#[cfg(test)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CallRequest {
    /// The service's wire name.
    pub(crate) service: String,
    /// The method's name.
    pub(crate) method: String,
    /// The bincode-encoded argument tuple.
    pub(crate) args: ByteBuf,
    /// The caller's `dispatch::call` span, when the worker traces its calls (one byte when it
    /// does not). tarpc's own `Context::trace_context` is not enough: its client and server
    /// both replace the span id with one of their own unless an OpenTelemetry layer is
    /// installed, so only the trace id would survive.
    pub(crate) trace: Option<TraceParent>,
}

/// Where a call sits in a trace: the trace and the caller's span (its id becomes the parent of
/// the Library's span of the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TraceParent {
    /// The trace's id (never 0).
    pub(crate) trace_id: u128,
    /// The caller's span id (never 0).
    pub(crate) span_id: u64,
    /// Whether the caller's trace is sampled (OpenTelemetry).
    pub(crate) sampled: bool,
}

#[cfg(test)]
impl tarpc::RequestName for CallRequest {
    fn name(&self) -> &str {
        "call"
    }
}

/// The answer to a call: the encoded return value, or why there is none.
pub(crate) type CallResponse = Result<ByteBuf, RemoteError>;

/// A framed Unix stream for the Library's side of a handshake: its frame limit is
/// [`MAX_HELLO_FRAME`] until the peer has authenticated (then raise it with
/// [`raise_frame_limit`]). Its partial frames count against `budget` for the connection's whole
/// life.
pub(crate) fn handshake_framed(
    stream: UnixStream,
    budget: &std::sync::Arc<FrameBudget>,
) -> Framing {
    let meter = FrameMeter::new(std::sync::Arc::clone(budget), MAX_HELLO_FRAME);
    framed_stream(FrameStream::metered(stream, meter), MAX_HELLO_FRAME)
}

/// Raises the frame limit of an authenticated connection to `max_frame`: the codec's, and the
/// meter's, so it counts what the codec will now buffer.
pub(crate) fn raise_frame_limit(framed: &mut Framing, max_frame: usize) {
    framed.codec_mut().set_max_frame_length(max_frame);
    framed.get_mut().set_max_frame(max_frame);
}

/// Decodes one request frame with tarpc's own types (tests check the envelope against them;
/// never panics, whatever the bytes), and how long the request had left when it was sent (`None` for
/// a cancellation): zero for a request sent past its deadline (tarpc sends the deadline
/// relative to the sender's clock, never below zero).
#[cfg(test)]
pub(crate) fn decode_request(
    frame: &[u8],
) -> Result<(ClientMessage<CallRequest>, Option<Duration>), io::Error> {
    let (frame, left) = clamp_deadline(frame);
    let message = bincode::DefaultOptions::new()
        .deserialize(&frame)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((message, left))
}

/// A request frame whose deadline is at most [`MAX_DEADLINE`] away: the frame itself when it
/// already is (or is not a request at all, or is too short to tell: decoding will say why),
/// else a copy with the deadline lowered; and the request's deadline as sent, relative.
///
/// tarpc encodes `ClientMessage::Request` as variant 0 followed by the context, whose first field
/// is the deadline as a `Duration` relative to the sender's clock (seconds, nanoseconds).
#[cfg(test)]
pub(crate) fn clamp_deadline(frame: &[u8]) -> (Cow<'_, [u8]>, Option<Duration>) {
    let options = bincode::DefaultOptions::new().allow_trailing_bytes();
    let mut rest = frame;
    let Ok((variant, secs, nanos)) = options.deserialize_from::<_, (u32, u64, u32)>(&mut rest)
    else {
        return (Cow::Borrowed(frame), None);
    };
    if variant != 0 {
        return (Cow::Borrowed(frame), None);
    }
    let deadline = Duration::from_secs(secs).checked_add(Duration::from_nanos(u64::from(nanos)));
    if let Some(left) = deadline.filter(|d| *d <= MAX_DEADLINE) {
        return (Cow::Borrowed(frame), Some(left));
    }
    let Ok(fixed) = options.serialize(&(variant, MAX_DEADLINE.as_secs(), 0_u32)) else {
        return (Cow::Borrowed(frame), None);
    };
    let mut out = Vec::with_capacity(fixed.len() + rest.len());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(rest);
    (Cow::Owned(out), Some(MAX_DEADLINE))
}
