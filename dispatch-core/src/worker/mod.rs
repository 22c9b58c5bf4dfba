//! The worker process: runs the application's code, with an [`Agent`] connected to the Library.
//!
//! - `run`: the process's life (join the master, connect, set up, report ready, run the app).
//! - `handle`: the [`Worker`] the application's function is given.
//! - `agent`: the [`Agent`], every generated stub's way to the Library.
//! - `link`: the Agent's connection, kept up across Library restarts.
//! - `call_client`: the calls on it: tarpc's wire messages, multiplexed (issue 18).
//! - `switch`: a Library handover: the move to the new Library's socket.
//! - `service_client`: [`ServiceClient`], what a generated stub wraps.
//! - `streams`: the Agent's stream connection (re-opening every stream after a reconnect) and
//!   the caller's [`RemoteStream`].

mod agent;
mod call_client;
#[cfg(test)]
mod call_client_tests;
mod handle;
mod link;
mod run;
mod service_client;
mod streams;
mod switch;

pub use agent::Agent;
#[cfg(test)]
pub(crate) use agent::AgentConfig;
pub use handle::Worker;
pub(crate) use run::run;
pub use service_client::ServiceClient;
pub use streams::RemoteStream;
