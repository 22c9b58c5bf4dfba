//! Starting a child: re-execute this binary with a role, its control socket at a fixed
//! descriptor, and a parent-death signal so it never outlives the master.
//!
//! With [`fds`](super::fds), the only `unsafe` of the runtime: the `pre_exec` hook (between
//! `fork` and `exec`, where only async-signal-safe calls are allowed).

use super::fds::{dup_high, into_tokio};
use super::role::{self, CONTROL_FD, LISTEN_FD_START};
use crate::cluster_error::ClusterError;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;
use tokio::net::UnixStream;

/// Which child to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ChildKind {
    /// The Library.
    Library,
    /// App worker `id`.
    Worker(u32),
}

impl ChildKind {
    /// `library` or `worker 3`, for logs and errors.
    pub(crate) fn label(self) -> String {
        match self {
            ChildKind::Library => "library".to_owned(),
            ChildKind::Worker(id) => format!("worker {id}"),
        }
    }
}

/// A started child and the master's end of its control socket.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) control: UnixStream,
}

/// Starts `kind` by re-executing `/proc/self/exe` (which survives the binary being replaced on
/// disk) with this process's arguments, or with `args` when given (after the same `argv[0]`):
/// `dispatch::testing` makes the test binary run only the test that started the cluster.
///
/// Must be called from a thread that outlives the child: the parent-death signal fires when the
/// *thread* that forked exits. The master calls it from the thread that runs the cluster.
///
/// A worker also inherits `listeners` (descriptors the master keeps open, numbered from
/// [`FD_FLOOR`] up) at descriptors 4, 5, …
pub(crate) fn spawn_child(
    kind: ChildKind,
    runtime_dir: &Path,
    listeners: &[RawFd],
    args: Option<&[OsString]>,
    log_file: Option<&Path>,
) -> Result<Spawned, ClusterError> {
    let label = kind.label();
    let (master_end, child_end) = std::os::unix::net::UnixStream::pair().map_err(|e| {
        ClusterError::io(
            format!("cannot create the control socket of the {label}"),
            e,
        )
    })?;
    // Numbered above every target descriptor, so the dup2 calls in the child never overwrite
    // a source they still need.
    let child_end = dup_high(&child_end).map_err(|e| {
        ClusterError::io(
            format!("cannot prepare the control socket of the {label}"),
            e,
        )
    })?;
    let child_fd = child_end.as_raw_fd();
    let listeners: Vec<RawFd> = match kind {
        ChildKind::Worker(_) => listeners.to_vec(),
        ChildKind::Library => Vec::new(),
    };
    let master_pid = nix::unistd::getpid().as_raw();

    let mut own = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = own.next() {
        cmd.arg0(arg0);
    }
    match args {
        Some(args) => cmd.args(args),
        None => cmd.args(own),
    };
    if let Some(path) = log_file {
        // One file per process slot, appended to across restarts and reloads; O_APPEND keeps
        // each write whole even when an old and a new process of the slot overlap.
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        };
        let cannot =
            |e| ClusterError::io(format!("cannot open the log file {}", path.display()), e);
        cmd.stdout(open().map_err(cannot)?)
            .stderr(open().map_err(cannot)?);
    }
    cmd.stdin(Stdio::null())
        .env(
            role::ENV_ROLE,
            match kind {
                ChildKind::Library => "library",
                ChildKind::Worker(_) => "worker",
            },
        )
        .env(role::ENV_RUNTIME_DIR, runtime_dir)
        .env(role::ENV_CONTROL_FD, CONTROL_FD.to_string())
        .env(role::ENV_MASTER_PID, master_pid.to_string())
        // systemd talks to the master only.
        .env_remove(super::systemd::ENV_NOTIFY_SOCKET)
        .env_remove(super::systemd::ENV_WATCHDOG_USEC)
        .env_remove(super::systemd::ENV_WATCHDOG_PID);
    if let ChildKind::Worker(id) = kind {
        cmd.env(role::ENV_WORKER_ID, id.to_string())
            .env(role::ENV_LISTEN_FDS, listeners.len().to_string());
    }
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // calls (prctl, getppid, fcntl, dup2, signal); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || prepare_child(child_fd, &listeners, master_pid));
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| ClusterError::io(format!("cannot start the {label}"), e))?;
    drop(child_end);
    let pid = child.id().unwrap_or(0);
    let control = into_tokio(master_end).map_err(|e| {
        ClusterError::io(
            format!("cannot register the control socket of the {label}"),
            e,
        )
    })?;
    Ok(Spawned {
        child,
        pid,
        control,
    })
}

/// In the forked child, before exec.
#[allow(unsafe_code)]
fn prepare_child(child_fd: RawFd, listeners: &[RawFd], master_pid: i32) -> io::Result<()> {
    // SAFETY (whole function): plain libc calls on integers; all async-signal-safe.
    unsafe {
        // Die with the master (checked against the expected parent to close the race where
        // the master died before this line).
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != master_pid {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // The control socket at its fixed number; dup2 clears close-on-exec on the copy.
        // Every source is at FD_FLOOR or above, every target below it.
        if libc::dup2(child_fd, CONTROL_FD) < 0 {
            return Err(io::Error::last_os_error());
        }
        for (i, fd) in listeners.iter().enumerate() {
            if libc::dup2(*fd, LISTEN_FD_START + i as RawFd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // Terminal signals (Ctrl-C, Ctrl-\) go to the whole process group; only the master
        // acts on them and stops the children in order.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        // An upgrade signal sent to every process of a unit (`systemctl kill -s USR2`) is the
        // master's to act on; its default action would kill a child.
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
    }
    Ok(())
}

/// Starts `exe` (the binary at the path this master was started from, as it is on disk now)
/// as a new master that takes over from this one (an upgrade): the same arguments, its end of
/// the upgrade link at descriptor 3 and `listeners` at 4, 5, … (`env` names them).
///
/// Unlike a child it does not die with this master (no parent-death signal: it is meant to
/// outlive it) and stays in its process group. The caller waits for it (it is reaped when it
/// exits first) but never depends on it.
pub(crate) fn spawn_master(
    exe: &Path,
    link: &impl AsFd,
    listeners: &[RawFd],
    env: &[(&str, String)],
    remove_env: &[&str],
) -> Result<tokio::process::Child, ClusterError> {
    let link = dup_high(link)
        .map_err(|e| ClusterError::io("cannot prepare the upgrade link of the new master", e))?;
    let link_fd = link.as_raw_fd();
    let listeners = listeners.to_vec();
    let mut own = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = own.next() {
        cmd.arg0(arg0);
    }
    cmd.args(own).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in remove_env {
        cmd.env_remove(k);
    }
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // calls (dup2); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || prepare_master(link_fd, &listeners));
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| {
        ClusterError::io(format!("cannot start the new master {}", exe.display()), e)
    })?;
    drop(link);
    Ok(child)
}

/// In the forked new master, before exec.
#[allow(unsafe_code)]
fn prepare_master(link_fd: RawFd, listeners: &[RawFd]) -> io::Result<()> {
    // SAFETY (whole function): plain libc calls on integers; all async-signal-safe. Every
    // source is at FD_FLOOR or above, every target below it.
    unsafe {
        if libc::dup2(link_fd, super::listeners::UPGRADE_LINK_FD) < 0 {
            return Err(io::Error::last_os_error());
        }
        for (i, fd) in listeners.iter().enumerate() {
            if libc::dup2(*fd, super::listeners::UPGRADE_LISTEN_FD_START + i as RawFd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
