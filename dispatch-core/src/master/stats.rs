//! `dispatchctl status`: the master asks every ready process for its counters (the Library
//! adds its per-method metrics) and answers when all have replied, or after a second with what
//! it has.

use super::state::{Master, Part, Slot, Timer};
use crate::admin::{ClusterStatus, ProcessStatus};
use crate::metrics::MethodStats;
use crate::process::ChildKind;
use crate::wire::ToChild;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long the master waits for the processes' counters.
const STATS_WAIT: Duration = Duration::from_secs(1);

/// A status request waiting for the processes' answers.
#[derive(Debug)]
pub(super) struct PendingStatus {
    status: ClusterStatus,
    waiting: HashSet<u32>,
    methods: bool,
    reply: oneshot::Sender<ClusterStatus>,
}

impl Master {
    /// Starts answering a status request.
    pub(super) fn start_status(&mut self, methods: bool, reply: oneshot::Sender<ClusterStatus>) {
        self.status_seq += 1;
        let id = self.status_seq;
        let mut processes: Vec<ProcessStatus> = self
            .procs
            .iter()
            .map(|(pid, p)| {
                // A worker removed by a scale-down has no slot any more.
                let removed = Slot::default();
                let (role, worker_id, slot) = match p.handle.kind {
                    ChildKind::Library => ("library", None, &self.library),
                    ChildKind::Worker(id) => {
                        ("worker", Some(id), self.worker_slot(id).unwrap_or(&removed))
                    }
                };
                let unresponsive = p.unresponsive
                    || (p.ready
                        && self
                            .config
                            .liveness_timeout
                            .is_some_and(|t| p.handle.silent_for() > t));
                let state = match (p.part, p.ready) {
                    _ if unresponsive => "unresponsive",
                    _ if p.broken => "broken",
                    (Part::Retiring, _) => "retiring",
                    (Part::Removed, _) => "removing",
                    (Part::Replacement, _) => "replacing",
                    (Part::Current, true) => "ready",
                    (Part::Current, false) => "starting",
                };
                let queued = p.handle.queued();
                ProcessStatus {
                    role: role.to_owned(),
                    worker_id,
                    pid: *pid,
                    state: state.to_owned(),
                    restarts: slot.restarts,
                    uptime_ms: millis(p.started.elapsed()),
                    rss_kib: rss_kib(*pid),
                    calls: None,
                    in_flight: None,
                    last_failure: slot.last_failure.clone(),
                    recycles: slot.recycles,
                    last_recycle: slot.last_recycle.clone(),
                    queued_bytes: queued.bytes as u64,
                    queued_messages: queued.messages as u64,
                    queue_budget_bytes: self.config.child_queue_bytes as u64,
                    last_handover: slot.last_handover.clone(),
                }
            })
            .collect();
        processes.sort_by_key(|p| (p.worker_id.map_or(0, |id| id + 1), p.pid));
        let waiting: HashSet<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.ready)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in &waiting {
            self.send(*pid, ToChild::StatsRequest { id });
        }
        let status = ClusterStatus {
            name: self.config.name(),
            master_pid: std::process::id(),
            uptime_ms: millis(self.started.elapsed()),
            listeners: self.listeners.addresses(),
            workers: u32::try_from(self.workers.len()).unwrap_or(u32::MAX),
            processes,
            methods: Vec::new(),
            schedules: self.schedule_statuses(),
            singletons: self.singleton_statuses(),
        };
        self.statuses.insert(
            id,
            PendingStatus {
                status,
                waiting,
                methods,
                reply,
            },
        );
        self.schedule(STATS_WAIT, Timer::StatusDeadline(id));
        self.maybe_finish_status(id);
    }

    /// A process's counters arrived. Only a process that was asked is heard, and only the
    /// Library's per-method metrics are taken: a worker cannot fake them.
    pub(super) fn on_stats(
        &mut self,
        pid: u32,
        id: u64,
        calls: u64,
        in_flight: u64,
        methods: Vec<MethodStats>,
    ) {
        let from_library = self.library.current == Some(pid);
        let Some(pending) = self.statuses.get_mut(&id) else {
            return;
        };
        if !pending.waiting.remove(&pid) {
            tracing::debug!(pid, id, "ignored stats that were not asked for");
            return;
        }
        if let Some(p) = pending.status.processes.iter_mut().find(|p| p.pid == pid) {
            p.calls = Some(calls);
            p.in_flight = Some(in_flight);
        }
        if pending.methods && from_library && !methods.is_empty() {
            pending.status.methods = methods;
        }
        self.maybe_finish_status(id);
    }

    /// Answers once nobody is left to hear from.
    fn maybe_finish_status(&mut self, id: u64) {
        if self.statuses.get(&id).is_some_and(|p| p.waiting.is_empty()) {
            self.finish_status(id);
        }
    }

    /// Answers with what has arrived (at the deadline, some counters may be missing).
    pub(super) fn finish_status(&mut self, id: u64) {
        if let Some(pending) = self.statuses.remove(&id) {
            let _ = pending.reply.send(pending.status);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The resident memory of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_rss() {
        assert!(super::rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
