//! Shared listening sockets: bound once by the master before any worker starts, handed to every
//! worker (as gunicorn and systemd's `LISTEN_FDS` do), never closed by restarts or reloads. The
//! kernel spreads incoming connections over the workers that accept.

use super::fds::{dup_high, take_inherited_socket};
use super::role::LISTEN_FD_START;
use crate::cluster_error::ClusterError;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The master's listening sockets.
#[derive(Debug, Default)]
pub(crate) struct SharedListeners {
    sockets: Vec<(String, OwnedFd)>,
}

impl SharedListeners {
    /// Binds every address (`127.0.0.1:8080`, `[::1]:0`, …).
    pub(crate) fn bind(addrs: &[String]) -> Result<Self, ClusterError> {
        let mut sockets = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let listener = std::net::TcpListener::bind(addr.as_str())
                .map_err(|e| ClusterError::io(format!("cannot listen on {addr}"), e))?;
            let local = listener
                .local_addr()
                .map_or_else(|_| addr.clone(), |a| a.to_string());
            let fd = dup_high(&listener).map_err(|e| {
                ClusterError::io(format!("cannot prepare the listener on {addr}"), e)
            })?;
            tracing::info!("listening on {local}");
            sockets.push((local, fd));
        }
        Ok(SharedListeners { sockets })
    }

    /// The descriptors to hand to each worker, in order.
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect()
    }

    /// The bound addresses (with the port the kernel chose for `:0`).
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.sockets.iter().map(|(a, _)| a.clone()).collect()
    }
}

/// In a worker: takes the `count` inherited listeners.
pub(crate) fn inherited(count: usize) -> Result<Vec<std::net::TcpListener>, ClusterError> {
    (0..count)
        .map(|i| {
            let fd = LISTEN_FD_START + i as RawFd;
            let owned = take_inherited_socket(fd, "shared listener")?;
            let listener = std::net::TcpListener::from(owned);
            listener
                .set_nonblocking(true)
                .map_err(|e| ClusterError::io("cannot make a shared listener non-blocking", e))?;
            Ok(listener)
        })
        .collect()
}
