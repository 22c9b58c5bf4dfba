//! The runtime behind `dispatch`. Applications depend on the `dispatch` crate, which re-exports
//! what they need from this one; this crate's docs are for the people who work on it.
//!
//! # Theory of operation
//!
//! A cluster is one binary in three roles: the **master** (supervisor and message router; runs
//! no application code), one **Library** (hosts every `#[library_service]` once for the host)
//! and N **workers** (run the application; each has an [`Agent`] with one connection to the
//! Library). `Cluster::run` at the top of `main` plays the role this process was started in:
//! the process a user starts is the master, and it re-executes its own binary
//! (`/proc/self/exe`) with `DISPATCH_ROLE=library` or `worker` for each child. Everything in
//! `main` before `Cluster::run` therefore runs in every process.
//!
//! ```text
//!                    ┌──────────────┐
//!                    │    master    │  supervisor; runs no user code
//!                    └──┬────────┬──┘
//!       control socket  │        │  control socket (one per child)
//!           ┌───────────┘        └──────────────┐
//!    ┌──────┴──────┐      data plane      ┌──────┴───────┐
//!    │   library   │◄─── tarpc over ──────┤  app worker  │ × N   (an Agent inside each)
//!    │  (services) │     Unix socket      └──────────────┘
//!    └─────────────┘
//! ```
//!
//! 1. **Start.** The master creates a private runtime dir (0700) and a random cluster token,
//!    binds the shared listeners, and starts the Library. Each child gets its end of a private
//!    socket pair at descriptor 3 (the *control plane*); the first message on it is the init
//!    message: the token, where the Library listens, and the cluster's settings as the master
//!    holds them.
//! 2. **Library ready.** The Library runs the application's `library_setup` steps, constructs
//!    every service (`Default` or its `init`), binds `library.sock`, and only then reports ready
//!    with its manifest. A failure or a missed deadline aborts the start; no worker ever starts
//!    against a Library that is not there.
//! 3. **Workers ready.** The master starts the workers. Each one's Agent connects to the Library
//!    (the *data plane*: tarpc over a Unix socket), proves the token, checks the manifest, runs
//!    the `worker_setup` steps and reports ready (or the application does, with
//!    `explicit_ready`). When every worker is ready, the cluster is ready.
//! 4. **Running.** The master routes messenger messages between processes and answers
//!    operators on `admin.sock`. A process that exits non-zero or is killed is restarted (at once,
//!    then with backoff); too many crashes in a window stop the cluster. When the Library is
//!    restarted, every Agent reconnects by itself; a call that was in flight fails with
//!    `LibraryRestarted`, a call made meanwhile waits up to its deadline.
//!    A streaming method (`Feed<T>`, `#[subscription]`) travels on a second connection per
//!    worker; the Library runs one feed per distinct key and fans it out into one bounded
//!    buffer per subscriber, and after a Library restart every Agent re-opens its streams.
//!    A `#[oneway]` method's caller does not wait for it (the Library acknowledges the call and
//!    runs it detached, within the connection's in-flight budget); inside the Library, services
//!    call each other in-process through [`Library`], with no socket.
//!    The master also keeps the schedules' clock (`schedule/`): it names each tick, sends it
//!    once to the Library, one worker or every worker over the control socket, and records how
//!    it went; with a fleet (hosts sharing a Redis) each tick of a fleet-wide schedule is
//!    claimed in Redis by one master, and a fleet singleton service is served by the one
//!    Library holding its lease.
//! 5. **Reload.** SIGHUP replaces one worker at a time: the new one must be ready before the
//!    old one is asked to stop. Listeners stay open throughout. A **Library handover**
//!    (`dispatchctl reload --library`, [`ClusterHandle::reload_library`], Library recycling)
//!    replaces the Library without failing a call: a new Library starts beside the old one on
//!    its own socket (`library-<n>.sock`); once it is ready, each Agent sends new calls to it
//!    while its calls in flight finish on the old one; then the old Library's services with
//!    [`Handover`] hooks take snapshots, the new one restores them before it admits the calls
//!    it held for them, and the old Library runs its close hooks and exits
//!    (`master/handover.rs`, `worker/switch.rs`, `library/handover.rs`).
//!    A worker past a `Recycle` limit (memory, requests, age) is replaced the same way, one at
//!    a time; `dispatchctl scale` starts more workers or stops the highest ones gracefully.
//! 6. **Shutdown.** SIGTERM (or SIGINT, SIGQUIT) asks the workers to stop (the application
//!    drains through `Worker::shutdown`), kills stragglers after the grace period, then stops
//!    the Library last, after its services' close hooks. A child whose master dies dies with it
//!    (`PR_SET_PDEATHSIG`).
//! 7. **Upgrade.** SIGUSR2 (or `dispatchctl upgrade`) starts the build now on disk at the path
//!    the master was started from as a new master, handing it the listeners and the worker
//!    count over an *upgrade link* (a socket pair at its descriptor 3, versioned hello). It
//!    starts its own Library and workers; once they are ready the old master stops its own
//!    processes (they drain) and exits. A new build that fails leaves the old cluster serving.
//!    Under systemd (`Type=notify`) the master reports READY/RELOADING/STOPPING/MAINPID and
//!    pings the watchdog, and adopts listening sockets passed with `LISTEN_FDS`.
//!
//! # Where things are
//!
//! Each folder is one role or one plane; imports only point down this list
//! (`tests/architecture.rs` in the workspace checks it):
//!
//! | module | what |
//! |---|---|
//! | `cluster` | the [`Cluster`] builder and `run`: the only module that knows every role; [`testing`]: a cluster run from a `#[test]` |
//! | `master/`, `library/`, `worker/`, `config/` | the three roles, and the host's shared configuration |
//! | `admin/` | the operator's side: requests, replies, finding a running cluster |
//! | `process/` | being an OS process of the cluster: role, spawn, descriptors, runtime dir, logs, exit, the child's link to its master |
//! | `schedule/` | schedules: their builder, clock (interval, cron), a child's runs, and (feature `redis`) the fleet's claims and leases |
//! | `messenger/` | one-way typed messages between processes |
//! | `stream/` | streaming methods and keyed subscriptions: the stream connection's frames, the Library's fan-out, [`Publisher`] |
//! | `wire/` | bytes on sockets: the codec, the framing, the data and control planes |
//! | `service/`, `topic`, `metrics`, `error`, `cluster_error` | the contract with the macro, and the leaves every layer uses |
//! | `settings` | one settings type, from the builder to every child |

pub mod admin;
mod call_trace;
mod cluster;
mod cluster_error;
mod config;
mod error;
mod fast_hash;
mod library;
mod master;
mod messenger;
mod metrics;
mod process;
mod schedule;
mod service;
mod settings;
mod stream;
mod topic;
mod wire;
mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use admin::{ClusterStatus, ProcessStatus};
pub use cluster::{testing, Cluster};
pub use cluster_error::ClusterError;
pub use config::{ConfigError, ConfigFormat, ConfigSource, ConfigWatch, SharedConfig, Versioned};
pub use error::Error;
pub use library::Library;
pub use master::ClusterHandle;
pub use messenger::{MessageError, Messenger, Received, Subscription, UNCLAIMED_LIMIT};
pub use metrics::{MethodStats, ERROR_KINDS, LATENCY_BOUNDS_US};
pub use process::{role, Role};
pub use schedule::{Overlap, Schedule, ScheduleError, Standby, Target, TaskContext};
pub use service::{
    Feed, Handover, HandoverError, Manifest, ManifestMismatch, Overflow, ServiceManifest,
};
pub use settings::{LogFormat, Recycle, RestartPolicy, Runtime};
pub use stream::Publisher;
pub use topic::{events, Members, Topic};
pub use worker::{Agent, RemoteStream, ServiceClient, Worker};
