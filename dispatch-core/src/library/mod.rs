//! The Library process: hosts every `#[library_service]` once for the host and serves the
//! workers' Agents on its data socket.
//!
//! - `run`: the process's life (join the master, construct services, listen, stop).
//! - `hosted`: the live service instances and how a call reaches one.
//! - `accept`, `gate`, `peer_log`: who may connect, how many, and the log of who was refused.
//! - `connection`: one authenticated connection's handshake.
//! - `calls`: its calls: tarpc's wire messages served by one loop (issue 18).
//! - `local`: [`Library`], services calling services in-process.
//! - `slow_poll`: naming the method whose poll held up the Library.
//! - `streams`: one stream connection: streaming methods and keyed subscriptions (issue 15).

mod accept;
mod calls;
#[cfg(test)]
mod calls_tests;
mod connection;
mod fleet;
mod gate;
mod handover;
mod hosted;
mod local;
mod peer_log;
mod run;
mod slow_poll;
mod streams;
#[cfg(test)]
mod tests;

pub use local::Library;
pub(crate) use run::run;
