//! Property tests of every decoder that reads bytes from another process: the handshake
//! ([`Hello`], [`Welcome`]), the call envelope (the Library's [`wire::decode_client_message`] and
//! the Agent's tarpc response decoder), the control messages ([`ToChild`], [`ToMaster`]) and the
//! length-delimited framing under all of them.
//!
//! One concept despite its length: one seed corpus of real frames and one mutation strategy,
//! applied to every decoder of the wire.
//!
//! Each decoder gets arbitrary bytes and mutations of real frames (bits flipped, bytes set,
//! inserted or removed, length tags forced to their widest forms, frames cut short). Whatever the
//! input, a decoder returns (a value or an error) within a time bound: it never panics and never
//! hangs. Each test runs a few hundred cases in well under a second, and writes no regression
//! files.
//!
//! The sockets' own behaviour on such input (the whole handshake, a served connection) is tested
//! in `server_tests.rs`.

use super::codec;
use super::control::{ToChild, ToMaster};
use super::data::{self as wire, CallRequest, CallResponse, Hello, Welcome};
use super::envelope::ToLibrary;
use crate::error::RemoteError;
use crate::service::Manifest;
use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tarpc::tokio_serde::Deserializer as _;
use tarpc::{ClientMessage, Response};
use tokio_util::codec::{Decoder as _, LengthDelimitedCodec};

/// How long one case may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(5);

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 10_000,
        ..Config::default()
    }
}

/// Runs `f` on its own thread and fails the case if it does not return within [`HANG`]. A panic
/// in `f` fails the case with its message.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG) {
        Ok(value) => {
            let _ = thread.join();
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not return within {HANG:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => panic!(
                "{what} panicked: {}",
                crate::service::panic::message(&*panic)
            ),
            Ok(()) => unreachable!("the thread returned without sending"),
        },
    }
}

/// The Agent's decoder of the Library's replies: tarpc's own bincode format, as the Agent's
/// transport uses it (no size limit but the frame's).
fn agent_decode(bytes: &[u8]) -> Result<Response<CallResponse>, std::io::Error> {
    let mut format = tarpc::tokio_serde::formats::Bincode::<
        Response<CallResponse>,
        ClientMessage<CallRequest>,
    >::default();
    Pin::new(&mut format).deserialize(&BytesMut::from(bytes))
}

/// Every decoder of a frame's payload, on `bytes`; how many accepted it (for the sanity checks).
fn decode_everything(bytes: &[u8]) -> usize {
    let mut accepted = 0;
    accepted += usize::from(codec::decode::<Hello>(bytes).is_ok());
    accepted += usize::from(codec::decode::<Welcome>(bytes).is_ok());
    accepted += usize::from(codec::decode::<ToChild>(bytes).is_ok());
    accepted += usize::from(codec::decode::<ToMaster>(bytes).is_ok());
    accepted += usize::from(codec::decode::<CallRequest>(bytes).is_ok());
    accepted += usize::from(codec::decode::<CallResponse>(bytes).is_ok());
    accepted += usize::from(codec::decode::<Manifest>(bytes).is_ok());
    accepted += usize::from(codec::decode::<RemoteError>(bytes).is_ok());
    accepted += usize::from(agent_decode(bytes).is_ok());
    if let Ok(message) = super::envelope::decode_to_library(bytes) {
        accepted += 1;
        if let ToLibrary::Request { context, .. } = message {
            // Whatever deadline the peer wrote, the Library's timers can hold it.
            assert!(
                context.deadline <= wire::MAX_DEADLINE,
                "deadline not lowered"
            );
        }
    }
    accepted
}

/// The length-delimited framing on `bytes` arriving in chunks of `chunk`: frames come out, or
/// an error, never a panic; and never a frame over the limit.
fn frame_everything(bytes: &[u8], chunk: usize, max: usize) {
    let mut codec = LengthDelimitedCodec::builder()
        .max_frame_length(max)
        .new_codec();
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= max),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
}

/// `payload` with its length prefix.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(payload);
    out
}

/// Bytes encoded as `serde_bytes` encodes them (a length, then the bytes).
struct Bytes<'a>(&'a [u8]);

impl serde::Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Which type a seed is an encoding of.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Hello,
    Welcome,
    ToChild,
    ToMaster,
    Request,
    Response,
}

/// Real encodings of every message, as the processes send them.
fn seeds() -> Vec<(Kind, Vec<u8>)> {
    fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
        codec::encode(value).expect("encode a seed")
    }
    let request = CallRequest {
        service: "demo".into(),
        method: "add".into(),
        args: serde_bytes::ByteBuf::from(codec::encode(&(40_i64, 2_i64)).expect("args")),
        trace: None,
    };
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + Duration::from_secs(3);
    let call = ClientMessage::Request(tarpc::Request {
        context,
        id: 7,
        message: request,
    });
    let cancel: ClientMessage<CallRequest> = ClientMessage::Cancel {
        trace_context: tarpc::trace::Context::default(),
        request_id: 7,
    };
    vec![
        (
            Kind::Hello,
            enc(&Hello {
                protocol: wire::PROTOCOL_VERSION,
                token: "0123456789abcdef0123456789abcdef".into(),
                worker_id: 3,
            }),
        ),
        (Kind::Welcome, enc(&Welcome::Accepted(Manifest::local()))),
        (
            Kind::Welcome,
            enc(&Welcome::Refused("wrong cluster token".into())),
        ),
        (
            Kind::Welcome,
            enc(&Welcome::Busy(
                "the library already serves its maximum of 2 connections".into(),
            )),
        ),
        // The control messages change as the cluster learns new tricks, so they are written
        // field by field, with each variant's index: a change of layout does not break the
        // build of this test, and `seeds_are_real_frames` says which seed to update.
        //
        // ToChild::Init(ChildInit { protocol, token, library_socket, settings (the cluster's `Settings`,
        // as the master holds them), published: the number of Deliver messages that follow,
        // members: Members { library, workers }, handover }).
        (
            Kind::ToChild,
            enc(&(
                0_u32,
                crate::wire::CONTROL_PROTOCOL,
                "0123456789abcdef0123456789abcdef",
                "/run/user/1000/dispatch-42-0123456789ab/library.sock",
                crate::settings::Settings::default(),
                1_u32,
                (Some(100_u32), vec![(0_u32, 101_u32), (1, 102)]),
                false,
            )),
        ),
        (Kind::ToChild, enc(&ToChild::ClusterReady)),
        (Kind::ToChild, enc(&ToChild::LibraryRestarted)),
        (Kind::ToChild, enc(&ToChild::Shutdown)),
        // ToChild::Deliver(Incoming { from, topic, payload, version }).
        (
            Kind::ToChild,
            enc(&(4_u32, 4242_u32, "config", Bytes(&[1, 2, 3, 4]), 7_u64)),
        ),
        // ToChild::Sent { seq, error }.
        (Kind::ToChild, enc(&(5_u32, 9_u64, Some("no process 77")))),
        // ToChild::Members(Members { library, workers }).
        (
            Kind::ToChild,
            enc(&(6_u32, Some(100_u32), vec![(0_u32, 101_u32), (1, 102)])),
        ),
        // ToChild::Behind { pids }.
        (Kind::ToChild, enc(&(8_u32, vec![101_u32]))),
        // ToMaster::Ready { services }.
        (
            Kind::ToMaster,
            enc(&(0_u32, "demo (7 methods), counter (1 method)")),
        ),
        // ToMaster::Failed { reason }.
        (
            Kind::ToMaster,
            enc(&(1_u32, "service `registry` failed to initialise")),
        ),
        // ToMaster::Send(Outgoing { seq, target: Target::Pid(101), topic, payload, retain }).
        (
            Kind::ToMaster,
            enc(&(
                2_u32,
                3_u64,
                (4_u32, 101_u32),
                "config",
                Bytes(&[9; 32]),
                false,
            )),
        ),
        (Kind::Request, enc(&call)),
        (Kind::Request, enc(&cancel)),
        (
            Kind::Response,
            enc(&Response::<CallResponse> {
                request_id: 7,
                message: Ok(Ok(serde_bytes::ByteBuf::from(vec![84]))),
            }),
        ),
        (
            Kind::Response,
            enc(&Response::<CallResponse> {
                request_id: 8,
                message: Ok(Err(RemoteError::Panicked {
                    method: "demo.boom".into(),
                    message: "boom".into(),
                })),
            }),
        ),
    ]
}

/// Decodes `bytes` as `kind`: whether it decoded.
fn decode_as(kind: Kind, bytes: &[u8]) -> bool {
    match kind {
        Kind::Hello => codec::decode::<Hello>(bytes).is_ok(),
        Kind::Welcome => codec::decode::<Welcome>(bytes).is_ok(),
        Kind::ToChild => codec::decode::<ToChild>(bytes).is_ok(),
        Kind::ToMaster => codec::decode::<ToMaster>(bytes).is_ok(),
        Kind::Request => super::envelope::decode_to_library(bytes).is_ok(),
        Kind::Response => agent_decode(bytes).is_ok(),
    }
}

/// One change to a frame; positions wrap around its length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Forces a varint tag: 251..=255 announce 2, 4, 8 or 16 bytes, or are invalid.
    WideTag(usize, u8),
    /// Overwrites eight bytes with a huge little-endian number (a length, a deadline).
    Huge(usize, u64),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0_u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Mutation::SetByte(p, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Mutation::Insert(p, v)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 251_u8..=255).prop_map(|(p, t)| Mutation::WideTag(p, t)),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX),
                Just(1 << 62),
                Just(u64::from(u32::MAX)),
                any::<u64>()
            ]
        )
            .prop_map(|(p, v)| Mutation::Huge(p, v)),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
    match mutation {
        Mutation::FlipBit(p, b) if !bytes.is_empty() => {
            let i = at(*p, bytes.len());
            bytes[i] ^= 1 << b;
        }
        Mutation::SetByte(p, v) | Mutation::WideTag(p, v) if !bytes.is_empty() => {
            let i = at(*p, bytes.len());
            bytes[i] = *v;
        }
        Mutation::Insert(p, v) => {
            let i = at(*p, bytes.len() + 1);
            bytes.insert(i, *v);
        }
        Mutation::Remove(p) if !bytes.is_empty() => {
            let i = at(*p, bytes.len());
            bytes.remove(i);
        }
        Mutation::Truncate(p) => {
            let len = at(*p, bytes.len() + 1);
            bytes.truncate(len);
        }
        Mutation::Huge(p, v) if !bytes.is_empty() => {
            let i = at(*p, bytes.len());
            for (j, b) in v.to_le_bytes().into_iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + j) {
                    *slot = b;
                }
            }
        }
        Mutation::Append(extra) => bytes.extend_from_slice(extra),
        _ => {}
    }
}

#[test]
fn seeds_are_real_frames() {
    for (i, (kind, bytes)) in seeds().into_iter().enumerate() {
        assert!(
            decode_as(kind, &bytes),
            "seed {i} ({kind:?}) no longer decodes: update it in `seeds()` to the message's \
             current layout"
        );
    }
}

/// A frame cut short is always an error for its own decoder (never a different, shorter
/// value).
#[test]
fn every_strict_prefix_of_a_real_frame_is_an_error() {
    for (kind, bytes) in seeds() {
        for len in 0..bytes.len() {
            assert!(
                !decode_as(kind, &bytes[..len]),
                "{kind:?}: a {len}-byte prefix of {} bytes decoded",
                bytes.len()
            );
        }
    }
}

/// A request deadline of any size is lowered to at most [`wire::MAX_DEADLINE`], and the rest of
/// the request is kept as sent.
#[test]
fn deadlines_are_lowered_whatever_their_size() {
    let mut runner = proptest::test_runner::TestRunner::new(config(256));
    let strategy = (any::<u64>(), any::<u32>(), any::<u64>(), ".{0,40}");
    runner
        .run(&strategy, |(secs, nanos, id, method)| {
            let request = (
                0_u32,
                (secs, nanos),
                ([7_u8; 16], 9_u64, 0_u32),
                id,
                CallRequest {
                    service: "demo".into(),
                    method: method.clone(),
                    args: serde_bytes::ByteBuf::from(vec![1, 2, 3]),
                    trace: None,
                },
            );
            let bytes = codec::encode(&request).expect("encode");
            let decoded = super::envelope::decode_to_library(&bytes);
            let Ok(ToLibrary::Request {
                context,
                id: got_id,
                message,
            }) = decoded
            else {
                // Never an error, never a panic, whatever the deadline.
                panic!("{decoded:?}");
            };
            let asked = Duration::from_secs(secs)
                .checked_add(Duration::from_nanos(u64::from(nanos)))
                .filter(|d| *d <= wire::MAX_DEADLINE);
            // Out of range: lowered to the cap.
            prop_assert_eq!(context.deadline, asked.unwrap_or(wire::MAX_DEADLINE));
            prop_assert_eq!(got_id, id);
            prop_assert_eq!(&message.method, &method);
            prop_assert_eq!(message.args.as_ref(), &[1_u8, 2, 3][..]);
            Ok(())
        })
        .expect("deadlines");
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes: every decoder answers, none panics or hangs.
    #[test]
    fn decoders_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        within("the decoders on arbitrary bytes", move || decode_everything(&bytes));
    }

    /// Real frames, mutated: every decoder answers, none panics or hangs.
    #[test]
    fn decoders_survive_mutated_real_frames(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let (kind, mut bytes) = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        within("the decoders on a mutated frame", move || {
            decode_everything(&bytes);
            decode_as(kind, &bytes)
        });
    }

    /// The framing under every socket: arbitrary bytes in arbitrary chunks, and real frames with
    /// their length prefix mutated, never panic, hang, or yield a frame over the limit.
    #[test]
    fn framing_survives_arbitrary_and_mutated_streams(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1_usize..512,
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 0..4),
    ) {
        let seeds = seeds();
        let mut stream = frame(&seeds[seed.index(seeds.len())].1);
        for m in &mutations {
            apply(&mut stream, m);
        }
        stream.extend_from_slice(&bytes);
        within("the framing", move || {
            frame_everything(&stream, chunk, wire::MAX_HELLO_FRAME);
            frame_everything(&stream, chunk, 1 << 20);
        });
    }
}

/// The envelope an Agent writes is tarpc's: tarpc's own types decode it to the same call, due
/// as asked; and what tarpc's client writes, the Library decodes. Cancels both ways.
#[test]
fn the_envelope_is_tarpcs_byte_for_byte() {
    let trace = Some(wire::TraceParent {
        trace_id: 7,
        span_id: 9,
        sampled: true,
    });
    let mut out = bytes::BytesMut::new();
    let within = Duration::from_millis(2_500);
    super::envelope::put_request(
        &mut out,
        42,
        within,
        ("demo", "get_name", &[1, 2, 3], trace),
    )
    .expect("encode");
    super::envelope::put_cancel(&mut out, 42).expect("encode");
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("a length")) as usize;
        frames.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    assert_eq!(frames.len(), 2);
    let before = Instant::now();
    match wire::decode_request(frames[0]).expect("tarpc decodes the request") {
        (ClientMessage::Request(request), Some(left)) => {
            assert_eq!(left, within);
            assert_eq!(request.id, 42);
            assert_eq!(request.message.service, "demo");
            assert_eq!(request.message.method, "get_name");
            assert_eq!(request.message.args.as_ref(), &[1_u8, 2, 3][..]);
            assert_eq!(request.message.trace, trace);
            let due = request.context.deadline.duration_since(before);
            assert!(
                due <= within + Duration::from_secs(1) && due + Duration::from_secs(1) >= within,
                "{due:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    match wire::decode_request(frames[1]).expect("tarpc decodes the cancel") {
        (ClientMessage::Cancel { request_id, .. }, None) => assert_eq!(request_id, 42),
        other => panic!("{other:?}"),
    }

    // tarpc's own client messages, as the Library reads them.
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + Duration::from_secs(30);
    let theirs = ClientMessage::Request(tarpc::Request {
        context,
        id: 7,
        message: CallRequest {
            service: "demo".into(),
            method: "m".into(),
            args: serde_bytes::ByteBuf::from(vec![9]),
            trace: None,
        },
    });
    let bytes = codec::encode(&theirs).expect("encode");
    match super::envelope::decode_to_library(&bytes).expect("the library decodes tarpc's") {
        ToLibrary::Request {
            context,
            id,
            message,
        } => {
            assert_eq!(id, 7);
            assert_eq!(
                (message.service, message.method, &message.args[..]),
                ("demo", "m", &[9][..])
            );
            assert!(context.deadline <= Duration::from_secs(30));
            assert!(context.deadline + Duration::from_secs(1) >= Duration::from_secs(30));
        }
        other => panic!("{other:?}"),
    }
    let cancel: ClientMessage<CallRequest> = ClientMessage::Cancel {
        trace_context: tarpc::trace::Context::default(),
        request_id: 7,
    };
    let bytes = codec::encode(&cancel).expect("encode");
    assert!(matches!(
        super::envelope::decode_to_library(&bytes),
        Ok(ToLibrary::Cancel { request_id: 7, .. })
    ));

    // The Library's replies, framed in place, are tarpc's `Response`.
    let mut out = bytes::BytesMut::new();
    let reply: tarpc::Response<CallResponse> = tarpc::Response {
        request_id: 7,
        message: Ok(Ok(serde_bytes::ByteBuf::from(vec![5; 300]))),
    };
    super::envelope::put_frame(&mut out, &reply).expect("encode");
    let len = u32::from_be_bytes(out[..4].try_into().expect("a length")) as usize;
    assert_eq!(len, out.len() - 4);
    let back: tarpc::Response<CallResponse> = codec::decode(&out[4..]).expect("decode");
    assert_eq!(back.request_id, 7);
    assert_eq!(back.message, reply.message);
}
