//! Bytes on sockets, and nothing else: how every message of the cluster is encoded and framed.
//!
//! - [`codec`]: the one encoding (bincode 1.x, tarpc's options) of payloads and messages.
//! - [`framing`]: the one length-delimited framing, with a limit, of every socket.
//! - `data`: the data plane, Agent ⇄ Library: the handshake, then tarpc calls in an envelope.
//! - `envelope`: tarpc's call envelope, byte for byte, written and read without its clock reads.
//! - `control`, `control_channel`, `control_writer`: the control plane, master ⇄ child.
//!
//! This module knows no process and no role: it is used by all of them.

pub(crate) mod codec;
mod control;
mod control_channel;
mod control_writer;
mod data;
mod envelope;
pub(crate) mod framing;
#[cfg(test)]
mod tests;

pub(crate) use control::Served;
pub(crate) use control::{
    decode_first, ChildInit, Incoming, Outgoing, Target, TaskOrder, TaskReport, ToChild, ToMaster,
    BEHIND, CONTROL_PROTOCOL, MAX_BUSY_METHODS, MAX_CONTROL_FRAME, MAX_MESSAGE,
};
pub(crate) use control_channel::{ControlChannel, ControlReceiver, ControlSender};
pub(crate) use control_writer::{ControlWriter, Refused};
#[cfg(test)]
pub(crate) use data::decode_request;
#[cfg(test)]
pub(crate) use data::CallRequest;
#[cfg(test)]
pub(crate) use data::MAX_HELLO_FRAME;
pub(crate) use data::{
    handshake_framed, payload_limit, raise_frame_limit, CallResponse, Hello, TraceParent, Welcome,
    MAX_DEADLINE, MAX_NAME_LEN, PROTOCOL_VERSION,
};
pub(crate) use envelope::{
    decode_reply, decode_to_library, put_cancel, put_frame, put_request, RequestRef, ToLibrary,
};
pub(crate) use framing::{framed, FrameBudget, Framing};
