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
//! `go` from the old one; then, once the old workers drained, `state <hex>` (the old Library's
//! [`Handover`](crate::Handover) snapshots) or `nostate` from the old master.
//!
//! **State across an upgrade** (as across a Library handover): the new master's Library holds
//! the calls to services with handover hooks from its start; after `go` the old workers drain
//! (still calling the old Library), then the old Library, which no worker calls any more,
//! takes its snapshots, the old master sends them over the link, and the new Library restores
//! them and admits the calls it held. A counter incremented without pause through an upgrade
//! loses no increment. Calls to services without hooks are never held.

use super::child::ChildEvent;
use super::state::{Flow, Master};
use crate::admin::{RETIRING_FILE, UPGRADING_FILE};
use crate::cluster_error::ClusterError;
use crate::process::listeners::{
    ENV_UPGRADE_LINK, ENV_UPGRADE_LISTEN_FDS, ENV_UPGRADE_LISTEN_NAMES, ENV_UPGRADE_WORKERS,
    UPGRADE_LINK_FD,
};
use crate::process::spawn::spawn_master;
use crate::process::systemd;
use crate::wire::{ToChild, ToMaster};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The upgrade link's protocol: a master refuses a peer speaking another one.
pub(super) const UPGRADE_PROTOCOL: u32 = 2;
/// The longest line on the link.
const MAX_LINE: u64 = 4096;
/// How long each side waits for the other's hello (the new build runs `main` up to
/// `Cluster::run` first).
const HELLO_DEADLINE: Duration = Duration::from_secs(30);
/// The longest `state` line: the snapshots' budget (about 1 MiB), in hex.
const MAX_STATE_LINE: u64 = 4 << 20;
/// How long the old master waits for its Library's snapshots (the Library waits up to 5 s for
/// its last calls first).
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(10);

/// What a new master inherits: the old Library's snapshots, by service name.
pub(super) type Inherited = Vec<(String, serde_bytes::ByteBuf)>;
/// Where the old master puts the snapshots for the link's task to send.
pub(super) type StateSender = oneshot::Sender<Option<Inherited>>;

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
    read_line_up_to(reader, MAX_LINE).await
}

/// [`read_line`] with another limit.
async fn read_line_up_to(
    reader: &mut BufReader<OwnedReadHalf>,
    limit: u64,
) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    let n = (&mut *reader).take(limit).read_line(&mut line).await?;
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
    /// Gives the link's task the old Library's snapshots to send (`None`: there are none).
    pub(super) state: Option<oneshot::Sender<Option<Inherited>>>,
}

/// What the task watching the new master reports.
#[derive(Debug)]
pub(crate) enum UpgradeEvent {
    /// Its cluster is ready.
    Ready { pid: u32, build: String },
    /// It failed, and why.
    Failed { reason: String },
    /// In a new master: the old master said `go` (or left): this master serves now.
    TookOver,
    /// In a new master: the old Library's snapshots arrived (`None`: there are none, or they
    /// could not come).
    Inherited(Option<Inherited>),
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
            Ok((pid, go, state)) => {
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
                    state: Some(state),
                });
            }
            Err(e) => refuse(reply, format!("cannot start the new build: {e}")),
        }
    }

    fn spawn_new_master(
        &mut self,
        exe: &std::path::Path,
    ) -> Result<(u32, oneshot::Sender<()>, StateSender), ClusterError> {
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
        let (state_tx, state_rx) = oneshot::channel();
        // The new master enforces its own ready deadlines; this one is a backstop for a new
        // master that hangs.
        let deadline = 2 * (self.config.library_ready_timeout + self.config.worker_ready_timeout)
            + Duration::from_secs(10);
        tokio::spawn(watch_new_master(
            child,
            stream,
            self.upgrade_tx.clone(),
            go_rx,
            state_rx,
            deadline,
        ));
        Ok((pid, go_tx, state_tx))
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
        match event {
            UpgradeEvent::TookOver => {
                self.taking_over = false;
                return Flow::Continue;
            }
            UpgradeEvent::Inherited(state) => {
                self.restore_inherited(state);
                return Flow::Continue;
            }
            UpgradeEvent::Ready { .. } | UpgradeEvent::Failed { .. } => {}
        }
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
                // main process exit without a successor. `go` waits until the datagram is out,
                // so the new master's `READY=1` never overtakes it.
                let sent = systemd::notify_acked(&format!("MAINPID={pid}"));
                if let Some(go) = up.go.take() {
                    tokio::spawn(async move {
                        if let Some(sent) = sent {
                            let bound = systemd::SEND_TIMEOUT * 2;
                            if tokio::time::timeout(bound, sent).await.is_err() {
                                tracing::warn!(
                                    "upgrade: systemd's socket took over {bound:?} for MAINPID=; \
                                     the new master goes on anyway"
                                );
                            }
                        }
                        let _ = go.send(());
                    });
                }
                self.state_for_new_master = up.state.take();
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
            UpgradeEvent::TookOver | UpgradeEvent::Inherited(_) => Flow::Continue,
        }
    }

    /// In the old master, stopping after `go`, once its workers are gone: the Library's
    /// snapshots go to the new master (nothing, if there is no new master to take them).
    pub(super) async fn send_state_to_new_master(&mut self) {
        let Some(tx) = self.state_for_new_master.take() else {
            return;
        };
        let state = self.snapshot_for_upgrade().await;
        let _ = tx.send(state);
    }

    /// Asks the Library for its services' snapshots and waits for them (up to
    /// [`SNAPSHOT_DEADLINE`]); `None` if there is no Library, or no snapshot came.
    async fn snapshot_for_upgrade(&mut self) -> Option<Inherited> {
        let lib = self.library.current?;
        self.send(lib, ToChild::Snapshot);
        let deadline = tokio::time::sleep(SNAPSHOT_DEADLINE);
        tokio::pin!(deadline);
        loop {
            let event = tokio::select! {
                event = self.events.recv() => event?,
                () = &mut deadline => {
                    tracing::error!(
                        "upgrade: the library sent no snapshot within {SNAPSHOT_DEADLINE:?}: \
                         the new build's services with handover hooks start fresh"
                    );
                    return None;
                }
            };
            match event {
                ChildEvent::Message {
                    pid,
                    msg: ToMaster::Snapshot { state },
                    ..
                } if pid == lib => {
                    return match state {
                        Ok(state) => {
                            tracing::info!(
                                "upgrade: {} service snapshots go to the new master",
                                state.len()
                            );
                            Some(state)
                        }
                        Err(e) => {
                            tracing::error!(
                                "upgrade: the library has no snapshot ({e}): the new build's \
                                 services with handover hooks start fresh"
                            );
                            None
                        }
                    };
                }
                ChildEvent::Exited { kind, pid, status } => {
                    self.stopped(kind, pid, status);
                    if pid == lib {
                        tracing::error!(
                            "upgrade: the library ended before its snapshot: the new build's \
                             services with handover hooks start fresh"
                        );
                        return None;
                    }
                }
                _ => {}
            }
        }
    }

    /// In a new master: the old Library's snapshots (or none) arrived; the Library restores
    /// them and admits the calls it held for them.
    fn restore_inherited(&mut self, state: Option<Inherited>) {
        self.init.handover = false;
        let Some(lib) = self.library.current else {
            tracing::warn!("upgrade: the inherited state arrived while no library runs: dropped");
            return;
        };
        match &state {
            Some(s) => tracing::info!(
                "upgrade: the library restores {} inherited snapshots",
                s.len()
            ),
            None => tracing::info!("upgrade: no inherited state: the library admits every call"),
        }
        self.send(lib, ToChild::Restore { state });
    }
}

/// Lowercase hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The bytes of lowercase or uppercase hex; `None` if it is not hex.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// The `state` line for `state`.
fn state_line(state: Option<&Inherited>) -> String {
    match state.map(crate::wire::codec::encode) {
        Some(Ok(bytes)) => format!("state {}\n", to_hex(&bytes)),
        Some(Err(e)) => {
            tracing::error!("upgrade: cannot encode the snapshots ({e}): sending none");
            "nostate\n".into()
        }
        None => "nostate\n".into(),
    }
}

/// The state a `state` line carries (`None` for `nostate`, or a line that cannot be read).
fn parse_state_line(line: &str) -> Option<Inherited> {
    let hex = line.strip_prefix("state ")?;
    let Some(bytes) = from_hex(hex) else {
        tracing::error!("upgrade: the old master's state line is not hex: ignored");
        return None;
    };
    match crate::wire::codec::decode(&bytes) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::error!("upgrade: cannot decode the old master's snapshots ({e}): ignored");
            None
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
    state: oneshot::Receiver<Option<Inherited>>,
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
                // Once the old workers drained and the Library took its snapshots.
                let state = state.await.ok().flatten();
                let _ = writer
                    .write_all(state_line(state.as_ref()).as_bytes())
                    .await;
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
    pub(super) fn announce_ready(
        mut self,
        marker: PathBuf,
        events: mpsc::UnboundedSender<UpgradeEvent>,
        state_wait: Duration,
    ) {
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
                    let _ = events.send(UpgradeEvent::TookOver);
                    let line = tokio::time::timeout(
                        state_wait,
                        read_line_up_to(&mut self.reader, MAX_STATE_LINE),
                    )
                    .await;
                    let state = match line {
                        Ok(Ok(Some(line))) => parse_state_line(&line),
                        Ok(_) => None,
                        Err(_) => {
                            tracing::error!(
                                "upgrade: the old master sent no state within {state_wait:?}: \
                                 services with handover hooks start fresh"
                            );
                            None
                        }
                    };
                    let _ = events.send(UpgradeEvent::Inherited(state));
                }
                _ => {
                    let _ = events.send(UpgradeEvent::TookOver);
                    let _ = events.send(UpgradeEvent::Inherited(None));
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
