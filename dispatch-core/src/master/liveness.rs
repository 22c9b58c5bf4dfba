//! The liveness watchdog (gunicorn's `timeout`, systemd's `WatchdogSec`): every heartbeat
//! interval the master checks that each ready child was heard from within `liveness_timeout`
//! (its runtime sends heartbeats; see `process::link`), and that the runtime dir and the
//! Library's socket in it are still there. A silent child is marked `unresponsive`, logged
//! with what it last said it was doing, killed and restarted as a crash.

use super::child::KillReason;
use super::state::{Flow, Master, Part, Timer};
use crate::wire::ToChild;

impl Master {
    /// One round of the watchdog; schedules the next.
    pub(super) fn check_liveness(&mut self) -> Flow {
        let (Some(timeout), Some(every)) = (
            self.config.liveness_timeout,
            self.config.heartbeat_interval(),
        ) else {
            return Flow::Continue;
        };
        self.schedule(every, Timer::Liveness);
        if let Err(e) = self.ensure_runtime_dir() {
            return Flow::Stop(Err(e));
        }
        self.check_library_socket();
        // Before it is ready, the ready deadline watches a child; once retiring (or removed by
        // a scale-down), the grace period does.
        let silent: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.ready && !p.unresponsive)
            .filter(|(_, p)| !matches!(p.part, Part::Retiring | Part::Removed))
            .filter(|(_, p)| p.handle.silent_for() > timeout)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in silent {
            let Some(p) = self.procs.get_mut(&pid) else {
                continue;
            };
            p.unresponsive = true;
            let heard = p.handle.heard();
            tracing::error!(
                pid,
                "the {} is unresponsive: no heartbeat for {:?} (liveness timeout {timeout:?}); \
                 its last heartbeat said {}; killing it",
                p.handle.kind.label(),
                heard.at.elapsed(),
                heard.doing()
            );
            self.kill(pid, KillReason::Liveness);
        }
        Flow::Continue
    }

    /// A ready Library whose socket was removed (with the runtime dir, by a temp cleaner) can
    /// serve no new connection: ask it to stop, and start it again at once, so that it binds
    /// its socket again.
    fn check_library_socket(&mut self) {
        let Some(pid) = self.library.current else {
            return;
        };
        // During a handover two Libraries run, each on its own socket, and the slot changes
        // hands: checked again once it is over.
        if self.library_handover.is_some() {
            return;
        }
        let socket = &self.init.library_socket;
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if !p.ready || p.rebind || socket.symlink_metadata().is_ok() {
            return;
        }
        tracing::error!(
            pid,
            socket = %socket.display(),
            "the library's socket was removed: restarting the library so that it binds it again"
        );
        p.rebind = true;
        let _ = p.handle.send(ToChild::Shutdown);
        let grace = self.config.grace_period;
        self.schedule(grace, Timer::Kill(pid));
    }
}
