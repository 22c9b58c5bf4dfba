//! Shared listening sockets: bound once by the master before any worker starts, handed to every
//! worker (as gunicorn and systemd's `LISTEN_FDS` do), never closed by restarts or reloads. The
//! kernel spreads incoming connections over the workers that accept.
//!
//! A master may also be handed its listening sockets instead of binding them: by systemd
//! (socket activation: `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, from descriptor 3) or by
//! the master it replaces in an upgrade (`DISPATCH_UPGRADE_LISTEN_FDS`, from descriptor 4; see
//! the master's `upgrade`). [`passed_to_master`] takes them; [`SharedListeners::bind`] uses
//! the one matching each declared address and binds the others.

use super::fds::{dup_high, take_inherited_socket};
use super::role::LISTEN_FD_START;
use crate::cluster_error::ClusterError;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// How many listening sockets systemd passed (socket activation), from descriptor 3.
pub(crate) const ENV_SD_LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid systemd's `LISTEN_FDS` is meant for.
pub(crate) const ENV_SD_LISTEN_PID: &str = "LISTEN_PID";
/// The names of the sockets systemd passed (`FileDescriptorName=`), `:`-separated.
pub(crate) const ENV_SD_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first descriptor systemd passes.
const SD_LISTEN_FDS_START: RawFd = 3;
/// How many listening sockets the replaced master passed in an upgrade, from descriptor
/// [`UPGRADE_LISTEN_FD_START`].
pub(crate) const ENV_UPGRADE_LISTEN_FDS: &str = "DISPATCH_UPGRADE_LISTEN_FDS";
/// The addresses those sockets were declared with (`Cluster::listen`), `,`-separated.
pub(crate) const ENV_UPGRADE_LISTEN_NAMES: &str = "DISPATCH_UPGRADE_LISTEN_NAMES";
/// The upgrade link's descriptor in a new master (see the master's `upgrade`).
pub(crate) const UPGRADE_LINK_FD: RawFd = 3;
/// The variable telling a new master that descriptor [`UPGRADE_LINK_FD`] is its upgrade link.
pub(crate) const ENV_UPGRADE_LINK: &str = "DISPATCH_UPGRADE_FD";
/// The live worker count the replaced master passes (it may differ from the built-in one).
pub(crate) const ENV_UPGRADE_WORKERS: &str = "DISPATCH_UPGRADE_WORKERS";
/// The first listening socket an upgraded master inherits (descriptor 3 is its upgrade link).
pub(crate) const UPGRADE_LISTEN_FD_START: RawFd = 4;
/// The most sockets taken from the environment (a bogus count must not loop for long).
const MAX_PASSED: usize = 1024;

/// A listening socket handed to the master, with its name (its declared address in an
/// upgrade, systemd's `FileDescriptorName=`, or empty).
#[derive(Debug)]
pub(crate) struct Passed {
    pub(crate) name: String,
    pub(crate) fd: OwnedFd,
}

/// The listening sockets handed to this master (by the master it replaces, else by systemd),
/// moved to descriptors above [`FD_FLOOR`](super::fds::FD_FLOOR) and out of the environment
/// (so that no child misreads them). Empty when none were.
///
/// Changes the environment: call it only in a master that is alone in its process (not in a
/// test's master).
pub(crate) fn passed_to_master() -> Result<Vec<Passed>, ClusterError> {
    let count = |name: &str| -> Result<Option<usize>, ClusterError> {
        match std::env::var(name) {
            Err(_) => Ok(None),
            Ok(v) => match v.parse::<usize>() {
                Ok(n) if n <= MAX_PASSED => Ok(Some(n)),
                _ => Err(ClusterError::Protocol {
                    message: format!("{name}={v:?} is not a count of sockets"),
                }),
            },
        }
    };
    let upgrade = count(ENV_UPGRADE_LISTEN_FDS)?;
    let names_of = |var: &str, sep: char| -> Vec<String> {
        std::env::var(var)
            .map(|v| v.split(sep).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (start, n, names, what) = if let Some(n) = upgrade {
        let names = names_of(ENV_UPGRADE_LISTEN_NAMES, ',');
        (
            UPGRADE_LISTEN_FD_START,
            n,
            names,
            "listener(s) passed by the replaced master",
        )
    } else {
        let for_us = std::env::var(ENV_SD_LISTEN_PID)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        match count(ENV_SD_LISTEN_FDS)? {
            Some(n) if for_us => {
                let names = names_of(ENV_SD_LISTEN_FDNAMES, ':');
                (
                    SD_LISTEN_FDS_START,
                    n,
                    names,
                    "listener(s) passed by systemd",
                )
            }
            _ => (0, 0, Vec::new(), ""),
        }
    };
    for var in [
        ENV_UPGRADE_LISTEN_FDS,
        ENV_UPGRADE_LISTEN_NAMES,
        ENV_SD_LISTEN_FDS,
        ENV_SD_LISTEN_PID,
        ENV_SD_LISTEN_FDNAMES,
    ] {
        std::env::remove_var(var);
    }
    let mut passed = Vec::with_capacity(n);
    for i in 0..n {
        let raw = start + i as RawFd;
        let owned = take_inherited_socket(raw, what)?;
        let fd = dup_high(&owned).map_err(|e| {
            ClusterError::io(format!("cannot move the {what} at descriptor {raw}"), e)
        })?;
        drop(owned);
        let name = names.get(i).cloned().unwrap_or_default();
        // systemd's default name says nothing.
        let name = if name == "unknown" {
            String::new()
        } else {
            name
        };
        passed.push(Passed { name, fd });
    }
    if !passed.is_empty() {
        tracing::info!("adopting {} {what}", passed.len());
    }
    Ok(passed)
}

/// Whether `passed` (a TCP listener) is bound where `declared` says.
fn matches_address(passed: &std::net::TcpListener, declared: &str) -> bool {
    let Ok(local) = passed.local_addr() else {
        return false;
    };
    let Ok(wanted) = declared.to_socket_addrs() else {
        return false;
    };
    let wanted: Vec<SocketAddr> = wanted.collect();
    wanted.iter().any(|w| w.port() != 0 && *w == local)
}

/// The master's listening sockets.
#[derive(Debug, Default)]
pub(crate) struct SharedListeners {
    sockets: Vec<(String, OwnedFd)>,
}

impl SharedListeners {
    /// Binds every address (`127.0.0.1:8080`, `[::1]:0`, …), or uses the socket `passed` for
    /// it: the one named like it (an upgrade passes each with the address it was declared
    /// with), else the one bound to it. With no address declared, every passed TCP socket is
    /// used. A passed TCP socket no address wants is closed, with a warning; every passed Unix
    /// stream socket is kept (after the TCP ones).
    pub(crate) fn bind(addrs: &[String], passed: Vec<Passed>) -> Result<Self, ClusterError> {
        let mut unix = Vec::new();
        let mut tcp = Vec::new();
        for p in passed {
            if is_unix(&p.fd)? {
                unix.push(std::os::unix::net::UnixListener::from(p.fd));
            } else {
                tcp.push((p.name, std::net::TcpListener::from(p.fd)));
            }
        }
        let mut passed = tcp;
        let mut sockets = Vec::with_capacity(addrs.len().max(passed.len()));
        let mut wanted: Vec<String> = addrs.to_vec();
        if wanted.is_empty() {
            wanted = passed.iter().map(|(n, _)| n.clone()).collect();
        }
        for (i, addr) in wanted.iter().enumerate() {
            let found = if addrs.is_empty() {
                // Every passed socket, in order.
                (!passed.is_empty()).then_some(0)
            } else {
                passed
                    .iter()
                    .position(|(name, _)| !name.is_empty() && name == addr)
                    .or_else(|| passed.iter().position(|(_, l)| matches_address(l, addr)))
            };
            let listener = match found {
                Some(at) => {
                    tracing::debug!(i, "listener {addr} adopted");
                    passed.remove(at).1
                }
                None => std::net::TcpListener::bind(addr.as_str())
                    .map_err(|e| ClusterError::io(format!("cannot listen on {addr}"), e))?,
            };
            let local = listener
                .local_addr()
                .map_or_else(|_| addr.clone(), |a| a.to_string());
            let fd = dup_high(&listener).map_err(|e| {
                ClusterError::io(format!("cannot prepare the listener on {addr}"), e)
            })?;
            tracing::info!("listening on {local}");
            sockets.push((local, fd));
        }
        // Unix stream sockets (systemd's `ListenStream=/path`): `Cluster::listen` binds TCP
        // only, so each one passed is served (`Worker::unix_listeners`).
        for l in unix {
            let local = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix:?".into());
            let fd = dup_high(&l).map_err(|e| {
                ClusterError::io(format!("cannot prepare the listener on {local}"), e)
            })?;
            tracing::info!("listening on {local}");
            sockets.push((local, fd));
        }
        for (name, l) in passed {
            tracing::warn!(
                "closed a passed listening socket ({}, name {name:?}): no Cluster::listen \
                 address matches it",
                l.local_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string())
            );
        }
        Ok(SharedListeners { sockets })
    }

    /// The declared addresses, in order, with the descriptors (for an upgrade's new master).
    pub(crate) fn raw_fds_with(&self, declared: &[String]) -> (Vec<RawFd>, Vec<String>) {
        let fds = self.raw_fds();
        let names = (0..fds.len())
            .map(|i| declared.get(i).cloned().unwrap_or_default())
            .collect();
        (fds, names)
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

/// In a worker: takes the `count` inherited listeners: the TCP ones, and the Unix stream ones
/// (passed to the master by systemd).
pub(crate) fn inherited(count: usize) -> Result<InheritedListeners, ClusterError> {
    let mut tcp = Vec::new();
    let mut unix = Vec::new();
    for i in 0..count {
        let fd = LISTEN_FD_START + i as RawFd;
        let owned = take_inherited_socket(fd, "shared listener")?;
        let nonblocking = |e| ClusterError::io("cannot make a shared listener non-blocking", e);
        if is_unix(&owned)? {
            let listener = std::os::unix::net::UnixListener::from(owned);
            listener.set_nonblocking(true).map_err(nonblocking)?;
            unix.push(listener);
        } else {
            let listener = std::net::TcpListener::from(owned);
            listener.set_nonblocking(true).map_err(nonblocking)?;
            tcp.push(listener);
        }
    }
    Ok((tcp, unix))
}

/// A worker's shared listeners: TCP, then Unix stream.
pub(crate) type InheritedListeners = (
    Vec<std::net::TcpListener>,
    Vec<std::os::unix::net::UnixListener>,
);

/// Whether `fd` is a Unix domain socket (else an IP one).
fn is_unix(fd: &OwnedFd) -> Result<bool, ClusterError> {
    use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike as _, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd())
        .map_err(|e| ClusterError::io("cannot read a listening socket's address", e.into()))?;
    match addr.family() {
        Some(AddressFamily::Unix) => Ok(true),
        Some(AddressFamily::Inet | AddressFamily::Inet6) => Ok(false),
        other => Err(ClusterError::Protocol {
            message: format!(
                "a listening socket is neither TCP nor Unix stream (family {other:?}): pass a \
                 ListenStream= with an IP address or a path"
            ),
        }),
    }
}

/// In a master started by an upgrade: its end of the upgrade link (moved above
/// [`FD_FLOOR`](super::fds::FD_FLOOR), close-on-exec), and the worker count the replaced master
/// ran; `None` in a master started otherwise. Removes the variables from the environment.
pub(crate) fn upgrade_link_from_env() -> Result<Option<(OwnedFd, Option<usize>)>, ClusterError> {
    let link = std::env::var(ENV_UPGRADE_LINK).ok();
    let workers = std::env::var(ENV_UPGRADE_WORKERS)
        .ok()
        .and_then(|v| v.parse().ok());
    std::env::remove_var(ENV_UPGRADE_LINK);
    std::env::remove_var(ENV_UPGRADE_WORKERS);
    if link.as_deref() != Some(&UPGRADE_LINK_FD.to_string()) {
        return Ok(None);
    }
    let owned = take_inherited_socket(UPGRADE_LINK_FD, "upgrade link")?;
    let fd = dup_high(&owned).map_err(|e| ClusterError::io("cannot move the upgrade link", e))?;
    Ok(Some((fd, workers)))
}
