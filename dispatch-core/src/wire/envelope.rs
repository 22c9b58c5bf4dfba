//! tarpc's call envelope, byte for byte, without tarpc's clock reads and copies: what an Agent
//! writes and the Library reads on an authenticated data connection.
//!
//! tarpc 0.38 encodes `ClientMessage::Request(Request { context, id, message })` as variant 0,
//! then the context (the deadline as a `Duration` *relative* to the sender's clock, then the
//! trace context), the id and the message; `ClientMessage::Cancel { trace_context, request_id }`
//! as variant 1 and its fields. Its own types turn the relative deadline into an `Instant` on
//! both sides, a clock read per call each way; these mirror types carry the relative deadline
//! as it is on the wire, and borrow the names and the arguments when writing. The replies are
//! tarpc's `Response` itself. Tests (`wire/tests.rs`) check both directions against tarpc's
//! own types.

use super::data::{TraceParent, MAX_DEADLINE};
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};
use std::io;
use std::time::Duration;

/// A message to the Library, as it decodes it (borrowing the frame's bytes).
#[derive(Debug, Deserialize)]
pub(crate) enum ToLibrary<'a> {
    /// A call: `ClientMessage::Request`.
    Request {
        /// Its deadline, relative, and trace context.
        context: WireContext,
        /// The request id, unique on the connection while the call runs.
        id: u64,
        /// The call.
        #[serde(borrow)]
        message: RequestRef<'a>,
    },
    /// `ClientMessage::Cancel`: the caller gave up on request `request_id`.
    Cancel {
        /// The caller's trace context (decoded to step over its bytes; unused).
        #[allow(dead_code)]
        trace_context: tarpc::trace::Context,
        /// The request to cancel.
        request_id: u64,
    },
}

/// tarpc's `Context` as it is on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WireContext {
    /// How long the call had left when it was sent: never above [`MAX_DEADLINE`] once decoded
    /// (a larger or out-of-range value is lowered to it, never an error).
    #[serde(deserialize_with = "lenient_deadline")]
    pub(crate) deadline: Duration,
    /// The caller's trace context.
    pub(crate) trace_context: tarpc::trace::Context,
}

/// A deadline as (seconds, nanoseconds), lowered to [`MAX_DEADLINE`] when past it or past
/// what a `Duration` holds (where tarpc's own types would refuse the frame or panic later).
fn lenient_deadline<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let (secs, nanos) = <(u64, u32)>::deserialize(deserializer)?;
    Ok(Duration::from_secs(secs)
        .checked_add(Duration::from_nanos(u64::from(nanos)))
        .map_or(MAX_DEADLINE, |d| d.min(MAX_DEADLINE)))
}

/// A message from an Agent, as it encodes it (names and arguments borrowed).
#[derive(Serialize)]
enum FromAgent<'a> {
    Request {
        context: WireContext,
        id: u64,
        message: RequestRef<'a>,
    },
    Cancel {
        trace_context: tarpc::trace::Context,
        request_id: u64,
    },
}

/// A call with the layout of the owned `CallRequest`, borrowed: an Agent writes it from its
/// arguments, the Library reads it from the frame, neither copying the names or the arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestRef<'a> {
    /// The service's wire name.
    pub(crate) service: &'a str,
    /// The method's name.
    pub(crate) method: &'a str,
    /// The bincode-encoded argument tuple.
    #[serde(borrow)]
    pub(crate) args: &'a serde_bytes::Bytes,
    /// The caller's span, when it traces its calls.
    pub(crate) trace: Option<TraceParent>,
}

/// A reply as an Agent reads it: tarpc's `Response`, its payload borrowed from the frame.
pub(crate) type ReplyRef<'a> =
    tarpc::Response<Result<&'a serde_bytes::Bytes, crate::error::RemoteError>>;

/// Decodes one reply frame of the Library's: never panics, whatever the bytes.
pub(crate) fn decode_reply(frame: &[u8]) -> io::Result<ReplyRef<'_>> {
    use bincode::Options as _;
    bincode::DefaultOptions::new()
        .with_limit(frame.len() as u64)
        .deserialize(frame)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decodes one frame an Agent sent: never panics, whatever the bytes.
pub(crate) fn decode_to_library(frame: &[u8]) -> io::Result<ToLibrary<'_>> {
    use bincode::Options as _;
    bincode::DefaultOptions::new()
        .with_limit(frame.len() as u64)
        .deserialize(frame)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Appends the frame of a call `service.method(args)` with request id `id`, due `left` from
/// now, to `out`.
///
/// # Errors
/// When it cannot be encoded or framed (`out` is left as it was).
pub(crate) fn put_request(
    out: &mut BytesMut,
    id: u64,
    left: Duration,
    (service, method, args, trace): (&str, &str, &[u8], Option<TraceParent>),
) -> Result<(), String> {
    // Room for the whole frame at once: the envelope's fixed fields take under 64 bytes.
    out.reserve(64 + service.len() + method.len() + args.len());
    let message = FromAgent::Request {
        context: WireContext {
            deadline: left,
            trace_context: tarpc::trace::Context::default(),
        },
        id,
        message: RequestRef {
            service,
            method,
            args: serde_bytes::Bytes::new(args),
            trace,
        },
    };
    put_frame(out, &message)
}

/// Appends the frame of tarpc's `Cancel` of request `id` to `out`.
///
/// # Errors
/// When it cannot be encoded (never, in practice).
pub(crate) fn put_cancel(out: &mut BytesMut, id: u64) -> Result<(), String> {
    let message = FromAgent::Cancel {
        trace_context: tarpc::trace::Context::default(),
        request_id: id,
    };
    put_frame(out, &message)
}

/// Appends `message` to `out` as one frame: its 4-byte big-endian length, then its bincode,
/// written in place (no intermediate buffer, one pass: the length is filled in after).
///
/// # Errors
/// When it cannot be encoded or is over 4 GiB (`out` is left as it was).
pub(crate) fn put_frame<T: Serialize + ?Sized>(
    out: &mut BytesMut,
    message: &T,
) -> Result<(), String> {
    use bincode::Options as _;
    let start = out.len();
    out.put_u32(0);
    if let Err(e) = bincode::DefaultOptions::new().serialize_into(Append(out), message) {
        out.truncate(start);
        return Err(e.to_string());
    }
    let Ok(len) = u32::try_from(out.len() - start - 4) else {
        let size = out.len() - start - 4;
        out.truncate(start);
        return Err(format!(
            "a frame of {size} bytes cannot be framed (over 4 GiB)"
        ));
    };
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// `out` as bincode's writer: each of its many small writes (a varint, a name) one inlined
/// append, instead of `BufMut`'s generic `Writer` (10 % of a worker's CPU per call went to
/// encoding the request through it).
struct Append<'a>(&'a mut BytesMut);

impl std::io::Write for Append<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.extend_from_slice(buf);
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
