//! Talking to systemd (`Type=notify`): `sd_notify` datagrams to `$NOTIFY_SOCKET`, the watchdog
//! interval it asks for, and the listening sockets it passes (`LISTEN_FDS`, see
//! [`listeners`](super::listeners)).
//!
//! No crate: the protocol is one datagram of `KEY=value` lines to a Unix socket (a path, or an
//! abstract name written `@name`). Outside systemd (`NOTIFY_SOCKET` unset) everything here does
//! nothing.
//!
//! What the master sends, in order (the README's "systemd" section documents it):
//! - `READY=1` (with `STATUS=`) when the cluster is ready;
//! - `RELOADING=1` (with `MONOTONIC_USEC=`) when a rolling reload or an upgrade starts, and
//!   `READY=1` when a reload ends or an upgrade fails;
//! - when an upgrade's new master is ready: `MAINPID=<new pid>` from the old master (still
//!   the main process), then `READY=1` from the new one (now the main process; if the old
//!   master vanished without handing over, the new one sends `MAINPID=` and `READY=1` itself,
//!   which needs `NotifyAccess=all`);
//! - `STOPPING=1` when the cluster starts to stop (not from a master retiring after an upgrade);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, from the master's event loop, so a hung master
//!   stops pinging.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// The variable systemd sets to its notification socket.
pub(crate) const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog interval systemd expects pings within, in µs.
pub(crate) const ENV_WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The pid the watchdog interval is meant for.
pub(crate) const ENV_WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Sends `state` (`KEY=value` lines) to systemd; returns whether it was sent (false outside
/// systemd). A failure is logged, never fatal: the cluster serves whether systemd hears or not.
pub(crate) fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os(ENV_NOTIFY_SOCKET) else {
        return false;
    };
    let socket = socket.to_string_lossy().into_owned();
    match send(&socket, state) {
        Ok(()) => {
            tracing::debug!("told systemd {}", state.replace('\n', " "));
            true
        }
        Err(e) => {
            tracing::warn!("cannot notify systemd at {socket}: {e}");
            false
        }
    }
}

fn send(socket: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), Path::new(socket))?;
    }
    Ok(())
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd requires beside it.
pub(crate) fn reloading() -> String {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// How often to send `WATCHDOG=1`: half the interval systemd asked this process for, or `None`
/// when it asked for none (or for another process).
pub(crate) fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var(ENV_WATCHDOG_USEC).ok()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var(ENV_WATCHDOG_PID) {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("dispatch-sdtest-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf-8"), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("dispatch-sdtest-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(&format!("@{name}"), "STOPPING=1").expect("send");
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let r = reloading();
        assert!(r.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{r}");
        assert!(!r.ends_with("=0"), "{r}");
    }
}
