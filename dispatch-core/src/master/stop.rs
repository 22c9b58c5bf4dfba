//! Stopping: workers first (told to stop, killed after the grace period), then the Library
//! (workers may call it while draining). A second stop signal kills at once.

use super::child::{describe, ChildEvent, KillReason};
use super::event_loop::sleep_until;
use super::signals::MasterSignal;
use super::state::Master;
use crate::process::ChildKind;
use crate::wire::ToChild;
use tokio::time::Instant;

impl Master {
    /// Stops every child: workers first (told to stop, killed after the grace period), then the
    /// Library (workers may call it while draining). A second stop signal kills at once.
    pub(super) async fn stop_all(&mut self) {
        self.timers.clear();
        let workers: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.handle.kind != ChildKind::Library)
            .map(|(pid, _)| *pid)
            .collect();
        self.stop(&workers).await;
        // After an upgrade's `go`: the Library, which no worker calls any more, hands its
        // services' state to the new build.
        self.send_state_to_new_master().await;
        let rest: Vec<u32> = self.procs.keys().copied().collect();
        self.stop(&rest).await;
    }

    /// Asks `pids` to stop, waits up to the grace period, kills what is left and reaps it.
    pub(super) async fn stop(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            self.send(*pid, ToChild::Shutdown);
        }
        let grace = Instant::now() + self.config.grace_period;
        if let Some(name) = self.await_exits(pids, Some(grace)).await {
            tracing::warn!("received {name} while stopping: killing at once");
        }
        let left: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| self.procs.contains_key(p))
            .collect();
        for pid in &left {
            if let Some(p) = self.procs.get(pid) {
                tracing::warn!(
                    pid,
                    "the {} did not stop in time: killing it",
                    p.handle.kind.label()
                );
                self.kill(*pid, KillReason::GracePeriod);
            }
        }
        // SIGKILL cannot be ignored: the exits follow at once.
        let _ = self.await_exits(&left, None).await;
    }

    /// A child exited while the cluster stops: forgotten, and logged with its cause.
    pub(super) fn stopped(&mut self, kind: ChildKind, pid: u32, status: std::process::ExitStatus) {
        let how = self
            .procs
            .remove(&pid)
            .map_or_else(|| describe(status), |p| p.how(status));
        tracing::info!(pid, "the {} stopped ({how})", kind.label());
    }

    /// Consumes events until none of `pids` is alive or the deadline passes. With a deadline, a
    /// stop signal ends the wait early and is returned.
    pub(super) async fn await_exits(
        &mut self,
        pids: &[u32],
        deadline: Option<Instant>,
    ) -> Option<&'static str> {
        while pids.iter().any(|p| self.procs.contains_key(p)) {
            let event = tokio::select! {
                event = self.events.recv() => event,
                signal = self.signals.recv(), if deadline.is_some() => match signal {
                    MasterSignal::Stop(name) => return Some(name),
                    MasterSignal::Reload | MasterSignal::Upgrade => continue,
                },
                () = sleep_until(deadline) => return None,
            };
            match event {
                Some(ChildEvent::Exited { kind, pid, status }) => self.stopped(kind, pid, status),
                Some(
                    ChildEvent::Message { .. }
                    | ChildEvent::Broken { .. }
                    | ChildEvent::Drained { .. },
                ) => {}
                None => return None,
            }
        }
        None
    }
}
