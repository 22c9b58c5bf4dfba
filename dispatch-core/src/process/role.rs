//! Which role this process plays, read from the environment the master set when it re-executed
//! the binary. Operators and tools look for these exact names and values.

use crate::cluster_error::ClusterError;
use once_cell::sync::OnceCell;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// `library` or `worker`; absent in the master.
pub(crate) const ENV_ROLE: &str = "DISPATCH_ROLE";
/// The worker's id (workers only).
pub(crate) const ENV_WORKER_ID: &str = "DISPATCH_WORKER_ID";
/// The master's private runtime directory.
pub(crate) const ENV_RUNTIME_DIR: &str = "DISPATCH_RUNTIME_DIR";
/// The inherited descriptor of the child's end of its control socket.
pub(crate) const ENV_CONTROL_FD: &str = "DISPATCH_CONTROL_FD";
/// The master's pid, checked against the parent pid at start.
pub(crate) const ENV_MASTER_PID: &str = "DISPATCH_MASTER_PID";

/// How many shared listening sockets a worker inherits, from descriptor 4 up (workers only).
pub(crate) const ENV_LISTEN_FDS: &str = "DISPATCH_LISTEN_FDS";

/// The descriptor number a child finds its control socket at.
pub(crate) const CONTROL_FD: RawFd = 3;
/// The descriptor number of a worker's first shared listener.
pub(crate) const LISTEN_FD_START: RawFd = 4;

/// The role this process plays in its cluster: see [`role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process the user started: the supervisor. Also any process outside a cluster.
    Master,
    /// The Library process.
    Library,
    /// An app worker.
    Worker {
        /// The worker's id, from 0.
        id: u32,
    },
}

impl Role {
    /// Whether this is the master (or a process outside any cluster).
    pub fn is_master(self) -> bool {
        self == Role::Master
    }
}

/// The role of this process, as `Cluster::run` will play it (or plays it).
static ROLE: OnceCell<Role> = OnceCell::new();

/// The role this process plays in its cluster, for code that must run once: the code in `main`
/// before `Cluster::run` runs in **every** process (the master re-executes the binary for the
/// Library and for each worker, and again for every restart).
///
/// Works before `Cluster::run` (it reads the environment the master set) and after it.
///
/// ```no_run
/// if dispatch::role().is_master() {
///     println!("starting the cluster"); // printed once, not once per process
/// }
/// ```
pub fn role() -> Role {
    if let Some(role) = ROLE.get() {
        return *role;
    }
    match std::env::var(ENV_ROLE).as_deref() {
        Ok("library") => Role::Library,
        Ok("worker") => Role::Worker {
            id: std::env::var(ENV_WORKER_ID)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
        _ => Role::Master,
    }
}

/// How this process was launched: its role, with what a child learned from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Launch {
    /// Not started by a master: this process is the master.
    Master,
    /// The Library process.
    Library(ChildEnv),
    /// An app worker.
    Worker(ChildEnv),
}

/// What a child learns from its environment. The cluster token is not here: it comes over the
/// control socket, so it never shows in `/proc/<pid>/environ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildEnv {
    pub(crate) worker_id: u32,
    pub(crate) runtime_dir: PathBuf,
    pub(crate) control_fd: RawFd,
    pub(crate) master_pid: u32,
    /// Shared listeners inherited from descriptor [`LISTEN_FD_START`] up.
    pub(crate) listen_fds: usize,
}

impl Launch {
    /// Reads the role from the environment and, in a child, removes the variables, so that
    /// processes this one starts (a worker's own child processes) are not mistaken for cluster members.
    pub(crate) fn take_from_env() -> Result<Launch, ClusterError> {
        let role = std::env::var(ENV_ROLE).ok();
        let vars = [
            ENV_ROLE,
            ENV_WORKER_ID,
            ENV_RUNTIME_DIR,
            ENV_CONTROL_FD,
            ENV_MASTER_PID,
            ENV_LISTEN_FDS,
        ];
        let read = |name: &str| std::env::var(name).ok();
        let result = match role.as_deref() {
            None => Ok(Launch::Master),
            Some(kind @ ("library" | "worker")) => {
                let env = ChildEnv::parse(read)?;
                Ok(if kind == "library" {
                    Launch::Library(env)
                } else {
                    Launch::Worker(env)
                })
            }
            Some(other) => Err(ClusterError::Protocol {
                message: format!(
                    "{ENV_ROLE}={other:?} is not a role (expected `library` or `worker`)"
                ),
            }),
        };
        // A master (no role set) leaves its environment alone: it may be one of several test
        // masters in threads of one process (`dispatch::testing`), where changing the
        // environment races with the other threads.
        if role.is_some() {
            for name in vars {
                std::env::remove_var(name);
            }
        }
        if let Ok(launch) = &result {
            let _ = ROLE.set(launch.role());
        }
        result
    }

    /// The public face of this launch.
    pub(crate) fn role(&self) -> Role {
        match self {
            Launch::Master => Role::Master,
            Launch::Library(_) => Role::Library,
            Launch::Worker(env) => Role::Worker { id: env.worker_id },
        }
    }

    /// `master`, `library` or `worker`, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Launch::Master => "master",
            Launch::Library(_) => "library",
            Launch::Worker(_) => "worker",
        }
    }
}

/// Gives a child the name of the binary in `ps` and `top` (the kernel would show `exe`, the
/// name of the link it was started through).
pub(crate) fn name_child_process() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let base = std::path::Path::new(&arg0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let truncated: String = base.chars().filter(|c| *c != '\0').take(15).collect();
    if let Ok(name) = std::ffi::CString::new(truncated) {
        // Best effort: a failure only leaves the name `exe`.
        let _ = nix::sys::prctl::set_name(&name);
    }
}

impl ChildEnv {
    fn parse(read: impl Fn(&str) -> Option<String>) -> Result<ChildEnv, ClusterError> {
        fn number<T: std::str::FromStr>(
            read: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<T, ClusterError> {
            read(name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ClusterError::Protocol {
                    message: format!("{name} is missing or not a number in a child's environment"),
                })
        }
        Ok(ChildEnv {
            worker_id: read(ENV_WORKER_ID)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            runtime_dir: read(ENV_RUNTIME_DIR).map(PathBuf::from).ok_or_else(|| {
                ClusterError::Protocol {
                    message: format!("{ENV_RUNTIME_DIR} is missing in a child's environment"),
                }
            })?,
            control_fd: number(&read, ENV_CONTROL_FD)?,
            master_pid: number(&read, ENV_MASTER_PID)?,
            listen_fds: read(ENV_LISTEN_FDS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_a_child_environment() {
        let vars: HashMap<&str, &str> = [
            (ENV_WORKER_ID, "3"),
            (ENV_RUNTIME_DIR, "/tmp/x"),
            (ENV_CONTROL_FD, "3"),
            (ENV_MASTER_PID, "42"),
        ]
        .into();
        let env = ChildEnv::parse(|k| vars.get(k).map(|v| (*v).to_owned())).expect("parse");
        assert_eq!(env.worker_id, 3);
        assert_eq!(env.master_pid, 42);
    }

    #[test]
    fn missing_fd_is_a_clear_error() {
        let err = ChildEnv::parse(|k| (k == ENV_RUNTIME_DIR).then(|| "/tmp".to_owned()))
            .expect_err("must fail");
        assert!(err.to_string().contains(ENV_CONTROL_FD), "{err}");
    }
}
