//! Everything about being an OS process of the cluster: which role this process plays, how the
//! master starts a child (re-executing this binary with its control socket and listeners at
//! fixed descriptors), the private runtime dir, logs, how a child ends, a child's link to its
//! master, talking to systemd (`systemd`: `sd_notify`, the watchdog), the allocator's
//! settings for large calls (`malloc`), and the kernel's count of out-of-memory kills (`oom`).

pub(crate) mod exit;
pub(crate) mod fds;
pub(crate) mod hooks;
pub(crate) mod link;
pub(crate) mod listeners;
pub(crate) mod logging;
pub(crate) mod malloc;
pub(crate) mod oom;
pub(crate) mod role;
pub(crate) mod runtime_dir;
pub(crate) mod spawn;
pub(crate) mod systemd;

pub(crate) use hooks::{Hooks, Setup};
pub(crate) use link::{MasterLink, StopCause};
pub use role::{role, Role};
pub(crate) use role::{ChildEnv, Launch};
pub(crate) use spawn::{spawn_child, ChildKind, Spawned};
