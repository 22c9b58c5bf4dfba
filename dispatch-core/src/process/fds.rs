//! Descriptors a process hands down or inherits: the master moves its ends out of the way of
//! the fixed numbers a child expects; a child takes ownership of what it inherited, once.
//!
//! With [`spawn`](super::spawn), the only `unsafe` of the runtime: taking ownership of a raw
//! descriptor.

use crate::cluster_error::ClusterError;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use tokio::net::UnixStream;

/// The lowest number of a descriptor the master hands down; the targets in the child (3, 4, …)
/// are below it.
pub(crate) const FD_FLOOR: RawFd = 64;

/// A close-on-exec copy of `fd` numbered [`FD_FLOOR`] or above.
pub(crate) fn dup_high(fd: &impl AsFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FD_FLOOR))?;
    #[allow(unsafe_code)]
    // SAFETY: fcntl just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// In a child: takes the inherited control socket, after checking that the master that set up
/// this environment is still our parent and that the descriptor really is a socket.
pub(crate) fn inherited_control(fd: RawFd, master_pid: u32) -> Result<UnixStream, ClusterError> {
    let parent = nix::unistd::getppid().as_raw();
    if i64::from(parent) != i64::from(master_pid) {
        return Err(ClusterError::Protocol {
            message: format!(
                "this process was started as a cluster child of master {master_pid}, but its parent is {parent}"
            ),
        });
    }
    let stream = std::os::unix::net::UnixStream::from(take_inherited_socket(fd, "control socket")?);
    into_tokio(stream).map_err(|e| ClusterError::io("cannot register the control socket", e))
}

/// Takes ownership of inherited socket `fd` (checked to be an open socket) and marks it
/// close-on-exec, so this process's own children do not inherit it.
pub(crate) fn take_inherited_socket(fd: RawFd, what: &str) -> Result<OwnedFd, ClusterError> {
    let stat = nix::sys::stat::fstat(fd_ref(fd)?).map_err(|e| {
        ClusterError::io(
            format!("the {what} (descriptor {fd}) is not open"),
            e.into(),
        )
    })?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(ClusterError::Protocol {
            message: format!("descriptor {fd} is not the {what}"),
        });
    }
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is open and is a socket (checked above); the master handed it to
    // this process and nothing else here owns it, so taking ownership once is sound.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| ClusterError::io(format!("cannot set close-on-exec on the {what}"), e.into()))?;
    Ok(owned)
}

fn fd_ref(fd: RawFd) -> Result<std::os::fd::BorrowedFd<'static>, ClusterError> {
    if fd < 0 {
        return Err(ClusterError::Protocol {
            message: format!("descriptor {fd} is invalid"),
        });
    }
    #[allow(unsafe_code)]
    // SAFETY: only used for fstat right away; fstat on a closed descriptor returns EBADF.
    Ok(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}

pub(super) fn into_tokio(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}
