//! Streams and keyed subscriptions (issue 15): what a streaming method's values cross, and how
//! the Library fans them out.
//!
//! - `frames`: the messages of a *stream connection*, an Agent's second connection to the
//!   Library (its hello says so), multiplexing every stream of the worker. Unary calls stay on
//!   tarpc on the first connection: a subscriber that does not read holds up only its own
//!   stream connection, never a call (measured in `examples/bench.rs --workload stream`).
//! - `hub`: the Library's side: one feed per distinct key shared by its subscribers, the last
//!   value replayed to a late one, one bounded buffer per subscriber with its overflow policy.
//! - [`Publisher`]: a service's handle to push values per key into the feeds it returned.
//!
//! The Library's serving of a stream connection is `library/streams.rs`; the Agent's link and
//! the caller's `RemoteStream` are `worker/streams.rs`.

pub(crate) mod frames;
pub(crate) mod hub;
mod publisher;

pub use publisher::Publisher;
