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
//!
//! The master never waits for systemd: its datagrams go through a queue of [`QUEUE`] to a
//! thread that sends them in order (each send bounded by [`SEND_TIMEOUT`]). A notify socket
//! nobody reads (its queue in the kernel is ten datagrams) used to block the master's event
//! loop in `send`, which then served nothing, not even the upgrade it was in.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

/// The datagrams waiting for the sending thread; past it, a datagram is dropped (counted in
/// the log).
const QUEUE: usize = 64;
/// The longest one send to the notify socket may wait for room there.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The queue to the sending thread (`None` outside systemd, or if the thread cannot start).
static NOTIFIER: OnceLock<Option<SyncSender<Datagram>>> = OnceLock::new();

/// One datagram waiting for the sending thread, and who waits to hear it went out.
struct Datagram {
    state: String,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The variable systemd sets to its notification socket.
pub(crate) const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog interval systemd expects pings within, in µs.
pub(crate) const ENV_WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The pid the watchdog interval is meant for.
pub(crate) const ENV_WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Queues `state` (`KEY=value` lines) for systemd, without waiting; returns whether it was
/// queued (false outside systemd, or when systemd reads nothing and the queue is full). A
/// failure is logged, never fatal: the cluster serves whether systemd hears or not.
pub(crate) fn notify(state: &str) -> bool {
    queue(state, None)
}

/// Queues `state` like [`notify`], and returns what resolves once the datagram was sent (or
/// its send failed): for a datagram another process's must not overtake (the old master's
/// `MAINPID=` before the new master's `READY=1`). `None` when nothing was queued. The wait is
/// bounded by the queue ahead of it, each send by [`SEND_TIMEOUT`]; callers bound it too.
pub(crate) fn notify_acked(state: &str) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    queue(state, Some(tx)).then_some(rx)
}

fn queue(state: &str, sent: Option<tokio::sync::oneshot::Sender<()>>) -> bool {
    let notifier = NOTIFIER.get_or_init(|| {
        let socket = std::env::var_os(ENV_NOTIFY_SOCKET)?
            .to_string_lossy()
            .into_owned();
        let (tx, rx) = sync_channel::<Datagram>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                for Datagram { state, sent } in rx {
                    let result = send(&socket, &state);
                    if let Some(sent) = sent {
                        let _ = sent.send(());
                    }
                    match result {
                        Ok(()) => tracing::debug!("told systemd {}", state.replace('\n', " ")),
                        Err(e) => tracing::warn!(
                            "cannot notify systemd at {socket} ({}): {e}",
                            state.replace('\n', " ")
                        ),
                    }
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("cannot start the thread that notifies systemd: {e}");
                None
            }
        }
    });
    let Some(tx) = notifier else {
        return false;
    };
    match tx.try_send(Datagram {
        state: state.to_owned(),
        sent,
    }) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            // Only a watchdog ping or a status is lost: systemd reads nothing anyway.
            tracing::warn!(
                "systemd reads nothing from its notify socket ({QUEUE} datagrams wait): dropped \
                 {}",
                state.replace('\n', " ")
            );
            false
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

fn send(socket: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_write_timeout(Some(SEND_TIMEOUT))?;
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
