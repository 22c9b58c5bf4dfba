//! Binary upgrade without downtime, as gunicorn's USR2: the master starts the build now on disk
//! at the path it was started from as a **new master**, handing it the listening sockets and
//! the live worker count, plus one end of a socket pair (the *upgrade link*). The new master
//! starts its own Library and workers from the new build (so new workers only ever talk to the
//! new Library, whatever its manifest), which accept on the same listening sockets beside the
//! old ones. When its cluster is ready it says so on the link; the old master marks itself
//! retiring (for `dispatchctl`), answers `go`, and stops its own processes gracefully (they
//! drain their requests and calls) and exits 0. The old master tells systemd `MAINPID=<new
//! pid>` before its `go`, and the new master `READY=1` after it.
//!
//! If the new master fails (its Library or a worker does not become ready, the link's versions
//! differ, it exits, or it misses the deadline) the old master keeps serving and the upgrade's
//! requester gets the reason.
//!
//! The link speaks lines of text, so that any two builds understand at least the first one:
//! `dispatch-upgrade <protocol> <build>` from both sides (a different protocol is refused
//! with a message saying so), then `ready <pid>` or `failed <reason>` from the new master, and
//! `go` from the old one.

use super::state::{Flow, Master};
use crate::admin::{RETIRING_FILE, UPGRADING_FILE};
use crate::cluster_error::ClusterError;
use crate::process::listeners::{
    ENV_UPGRADE_LINK, ENV_UPGRADE_LISTEN_FDS, ENV_UPGRADE_LISTEN_NAMES, ENV_UPGRADE_WORKERS,
    UPGRADE_LINK_FD,
};
use crate::process::spawn::spawn_master;
use crate::process::systemd;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The upgrade link's protocol: a master refuses a peer speaking another one.
pub(super) const UPGRADE_PROTOCOL: u32 = 1;
/// The longest line on the link.
const MAX_LINE: u64 = 4096;
/// How long each side waits for the other's hello (the new build runs `main` up to
/// `Cluster::run` first).
const HELLO_DEADLINE: Duration = Duration::from_secs(30);

/// This build, as the link names it.
fn build() -> String {
    format!("dispatch-core-{}", env!("CARGO_PKG_VERSION"))
}

fn hello() -> String {
    format!("dispatch-upgrade {UPGRADE_PROTOCOL} {}\n", build())
}

/// Checks the peer's hello; the error says what to do.
fn check_hello(line: &str, peer: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let (Some("dispatch-upgrade"), Some(protocol)) = (words.next(), words.next()) else {
        return Err(format!(
            "the {peer} does not speak the upgrade protocol (it said {:?}): stop the cluster and \
             start the new build instead",
            line.chars().take(80).collect::<String>()
        ));
    };
    let peer_build = words.next().unwrap_or("?").to_owned();
    if protocol != UPGRADE_PROTOCOL.to_string() {
        return Err(format!(
            "the {peer} ({peer_build}) speaks upgrade protocol {protocol}, this master ({}) \
             speaks {UPGRADE_PROTOCOL}: they cannot hand over; stop the cluster and start the \
             new build instead",
            build()
        ));
    }
    Ok(peer_build)
}

/// One line from the link (without its newline); `None` at its end.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    let n = (&mut *reader).take(MAX_LINE).read_line(&mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches('\n').to_owned()))
}

/// An upgrade in progress, in the old master.
#[derive(Debug)]
pub(super) struct Upgrade {
    pub(super) started: Instant,
    /// The new master's pid.
    pub(super) pid: u32,
    /// Who waits for the outcome: the new master's pid, or why it failed.
    pub(super) replies: Vec<oneshot::Sender<Result<u32, String>>>,
    /// Tells the link's task to answer `go`.
    pub(super) go: Option<oneshot::Sender<()>>,
}

/// What the task watching the new master reports.
#[derive(Debug)]
pub(crate) enum UpgradeEvent {
    /// Its cluster is ready.
    Ready { pid: u32, build: String },
    /// It failed, and why.
    Failed { reason: String },
}

impl Master {
    /// Starts an upgrade (SIGUSR2, `dispatchctl upgrade`, `ClusterHandle::upgrade`); `reply`
    /// gets the outcome.
    pub(super) fn start_upgrade(&mut self, reply: Option<oneshot::Sender<Result<u32, String>>>) {
        let refuse = |reply: Option<oneshot::Sender<Result<u32, String>>>, why: String| {
            tracing::warn!("upgrade refused: {why}");
            if let Some(reply) = reply {
                let _ = reply.send(Err(why));
            }
        };
        if let Some(up) = self.upgrade.as_mut() {
            tracing::info!("an upgrade is already in progress: waiting for its outcome");
            up.replies.extend(reply);
            return;
        }
        if self.config.test_child_args.is_some() {
            return refuse(
                reply,
                "a cluster run by dispatch::testing cannot be upgraded".into(),
            );
        }
        if self.ready_at.is_none() {
            return refuse(
                reply,
                "the cluster is still starting: try again when it is ready".into(),
            );
        }
        if self.reload.is_some() {
            return refuse(
                reply,
                "a rolling reload is in progress: try again when it completes".into(),
            );
        }
        if let Some(h) = &self.library_handover {
            return refuse(
                reply,
                format!(
                    "library handover {} is in progress: try again when it completes",
                    h.generation
                ),
            );
        }
        let Some(exe) = self.exe.clone() else {
            return refuse(
                reply,
                "the path this master was started from is unknown".into(),
            );
        };
        match self.spawn_new_master(&exe) {
            Ok((pid, go)) => {
                systemd::notify(&systemd::reloading());
                tracing::info!(
                    pid,
                    "upgrade: started {} as the new master; this cluster serves until it is ready",
                    exe.display()
                );
                self.upgrade = Some(Upgrade {
                    started: Instant::now(),
                    pid,
                    replies: reply.into_iter().collect(),
                    go: Some(go),
                });
            }
            Err(e) => refuse(reply, format!("cannot start the new build: {e}")),
        }
    }

    fn spawn_new_master(
        &mut self,
        exe: &std::path::Path,
    ) -> Result<(u32, oneshot::Sender<()>), ClusterError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| ClusterError::io("cannot create the upgrade link", e))?;
        let (fds, names) = self.listeners.raw_fds_with(&self.config.listen);
        let env = [
            (ENV_UPGRADE_LINK, UPGRADE_LINK_FD.to_string()),
            (ENV_UPGRADE_LISTEN_FDS, fds.len().to_string()),
            (ENV_UPGRADE_LISTEN_NAMES, names.join(",")),
            (ENV_UPGRADE_WORKERS, self.workers.len().to_string()),
        ];
        // The watchdog is this master's; the new one pings from its own event loop.
        let child = spawn_master(exe, &theirs, &fds, &env, &[systemd::ENV_WATCHDOG_PID])?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        ours.set_nonblocking(true)
            .map_err(|e| ClusterError::io("cannot set up the upgrade link", e))?;
        let stream = UnixStream::from_std(ours)
            .map_err(|e| ClusterError::io("cannot register the upgrade link", e))?;
        let (go_tx, go_rx) = oneshot::channel();
        // The new master enforces its own ready deadlines; this one is a backstop for a new
        // master that hangs.
        let deadline = 2 * (self.config.library_ready_timeout + self.config.worker_ready_timeout)
            + Duration::from_secs(10);
        tokio::spawn(watch_new_master(
            child,
            stream,
            self.upgrade_tx.clone(),
            go_rx,
            deadline,
        ));
        Ok((pid, go_tx))
    }

    /// This master stops (not for the upgrade) while a new master is starting: that one
    /// stops too, rather than take over a cluster asked to stop.
    pub(super) fn abandon_upgrade(&mut self) {
        if self.retiring {
            return;
        }
        if let Some(up) = self.upgrade.take() {
            tracing::warn!(
                pid = up.pid,
                "stopping during an upgrade: stopping the new master too"
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(up.pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for reply in up.replies {
                let _ = reply.send(Err("the cluster was stopped during the upgrade".into()));
            }
        }
    }

    pub(super) fn on_upgrade_event(&mut self, event: UpgradeEvent) -> Flow {
        let Some(mut up) = self.upgrade.take() else {
            return Flow::Continue;
        };
        match event {
            UpgradeEvent::Ready { pid, build } => {
                // Marked before `go`: from now on `dispatchctl` finds the new master by name.
                if let Err(e) = std::fs::write(self.dir.path().join(RETIRING_FILE), pid.to_string())
                {
                    tracing::warn!("cannot mark the runtime dir as retiring: {e}");
                }
                // From the main process itself, before it lets the new one go on: systemd
                // follows the new master even with `NotifyAccess=main`, and never sees the
                // main process exit without a successor.
                systemd::notify(&format!("MAINPID={pid}"));
                if let Some(go) = up.go.take() {
                    let _ = go.send(());
                }
                tracing::info!(
                    "upgrade: the new master (pid {pid}, {build}) is ready after {:?}; this \
                     master stops its processes (they drain) and exits",
                    up.started.elapsed()
                );
                for reply in up.replies {
                    let _ = reply.send(Ok(pid));
                }
                self.retiring = true;
                Flow::Stop(Ok(()))
            }
            UpgradeEvent::Failed { reason } => {
                tracing::error!(
                    pid = up.pid,
                    "upgrade failed, this cluster serves on: {reason}"
                );
                systemd::notify(&format!("READY=1\nSTATUS=upgrade failed: {reason}"));
                for reply in up.replies {
                    let _ = reply.send(Err(reason.clone()));
                }
                Flow::Continue
            }
        }
    }
}

/// In the old master: follows the new master over the link until it is ready (then answers
/// `go` when told) or fails; reaps it if it exits.
async fn watch_new_master(
    mut child: tokio::process::Child,
    stream: UnixStream,
    events: mpsc::UnboundedSender<UpgradeEvent>,
    go: oneshot::Receiver<()>,
    deadline: Duration,
) {
    let pid = child.id().unwrap_or(0);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let _ = writer.write_all(hello().as_bytes()).await;
    let outcome = tokio::time::timeout(deadline, async {
        let line = match tokio::time::timeout(HELLO_DEADLINE, read_line(&mut reader)).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None) | Err(_)) => return Err(None),
            Err(_) => {
                return Err(Some(format!(
                    "the new build did not greet within {HELLO_DEADLINE:?}: is it a dispatch \
                     cluster of this version?"
                )))
            }
        };
        let build = check_hello(&line, "new master")?;
        match read_line(&mut reader).await {
            Ok(Some(line)) => match line.split_once(' ') {
                Some(("ready", _)) => Ok(build),
                Some(("failed", reason)) => Err(Some(reason.to_owned())),
                _ => Err(Some(format!("the new master said {line:?}"))),
            },
            Ok(None) | Err(_) => Err(None),
        }
    })
    .await;
    let report = |reason: String| {
        let _ = events.send(UpgradeEvent::Failed { reason });
    };
    match outcome {
        Ok(Ok(build)) => {
            let _ = events.send(UpgradeEvent::Ready { pid, build });
            if go.await.is_ok() {
                let _ = writer.write_all(b"go\n").await;
            }
            // Keeps the link open while this master drains; reaps the new master if it ends
            // first.
            let _ = child.wait().await;
        }
        Ok(Err(said)) => {
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let exit = match status {
                Ok(Ok(status)) => format!("the new master (pid {pid}) exited ({status})"),
                _ => {
                    let _ = child.start_kill();
                    format!("the new master (pid {pid}) broke the upgrade link: killed it")
                }
            };
            report(match said {
                Some(reason) => format!("{reason} ({exit})"),
                None => format!("{exit} before its cluster was ready"),
            });
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            report(format!(
                "the new master (pid {pid}) was not ready within {deadline:?}: stopped it"
            ));
            let _ = child.wait().await;
        }
    }
}

/// In a new master: its link to the master it replaces.
#[derive(Debug)]
pub(super) struct NewMasterLink {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl NewMasterLink {
    /// Greets the old master over the inherited link and checks its protocol.
    pub(super) async fn connect(fd: OwnedFd) -> Result<NewMasterLink, ClusterError> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)
            .map_err(|e| ClusterError::io("cannot set up the upgrade link", e))?;
        let stream = UnixStream::from_std(std)
            .map_err(|e| ClusterError::io("cannot register the upgrade link", e))?;
        let (reader, writer) = stream.into_split();
        let mut link = NewMasterLink {
            reader: BufReader::new(reader),
            writer,
        };
        let protocol = |message: String| ClusterError::Protocol { message };
        link.writer
            .write_all(hello().as_bytes())
            .await
            .map_err(|e| ClusterError::io("cannot greet the old master", e))?;
        let line = tokio::time::timeout(HELLO_DEADLINE, read_line(&mut link.reader))
            .await
            .map_err(|_| {
                protocol(format!(
                    "the old master did not greet within {HELLO_DEADLINE:?}"
                ))
            })?
            .map_err(|e| ClusterError::io("cannot read the old master's greeting", e))?
            .ok_or_else(|| protocol("the old master closed the upgrade link".into()))?;
        match check_hello(&line, "old master") {
            Ok(peer) => {
                tracing::info!("upgrade: taking over from a master of {peer}");
                Ok(link)
            }
            Err(why) => {
                link.failed(&why).await;
                Err(protocol(why))
            }
        }
    }

    /// Tells the old master why this one failed.
    pub(super) async fn failed(&mut self, reason: &str) {
        let line = format!("failed {}\n", reason.replace('\n', " "));
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.writer.write_all(line.as_bytes()),
        )
        .await;
    }

    /// This master's cluster is ready: tells the old master, waits for its `go` (or its end),
    /// then tells systemd this is the main process now, and lets `dispatchctl` find it by name.
    pub(super) fn announce_ready(mut self, marker: PathBuf) {
        tokio::spawn(async move {
            let pid = std::process::id();
            let _ = self
                .writer
                .write_all(format!("ready {pid}\n").as_bytes())
                .await;
            match read_line(&mut self.reader).await {
                Ok(Some(line)) if line == "go" => {
                    tracing::info!("upgrade: the old master handed over; this master serves");
                    // The old master named this one the main process already.
                    systemd::notify(&format!("READY=1\nSTATUS=upgraded: master pid {pid}"));
                }
                _ => {
                    tracing::warn!(
                        "upgrade: the old master left without handing over; this master serves"
                    );
                    systemd::notify(&format!(
                        "MAINPID={pid}\nREADY=1\nSTATUS=upgraded: master pid {pid}"
                    ));
                }
            }
            let _ = std::fs::remove_file(marker.join(UPGRADING_FILE));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_of_another_protocol_are_refused_with_a_clear_message() {
        assert!(check_hello(hello().trim_end(), "peer").is_ok());
        let err = check_hello("dispatch-upgrade 999 dispatch-core-9.9.9", "new master")
            .expect_err("refused");
        assert!(err.contains("protocol 999"), "{err}");
        assert!(err.contains("stop the cluster"), "{err}");
        let err = check_hello("\u{0}\u{1}garbage", "old master").expect_err("refused");
        assert!(err.contains("does not speak"), "{err}");
    }
}
