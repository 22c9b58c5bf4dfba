//! The master's event loop: one task reacts to four sources (child events, signals, commands
//! from a [`ClusterHandle`](super::ClusterHandle) or the admin socket, and timers) until the
//! cluster stops.

use super::child::{ChildEvent, KillReason};
use super::command::Command;
use super::guard::escape;
use super::recycle::RECYCLE_CHECK;
use super::signals::MasterSignal;
use super::state::{Flow, Master, Part, Timer};
use crate::cluster_error::ClusterError;
use crate::process::{systemd, ChildKind};
use crate::wire::ToMaster;
use tokio::sync::mpsc;
use tokio::time::Instant;

impl Master {
    pub(super) async fn supervise(&mut self) -> Result<(), ClusterError> {
        tracing::info!(
            runtime_dir = %self.dir.path().display(),
            "master starting a library and {} workers",
            self.config.workers
        );
        if let Some(every) = self.config.heartbeat_interval() {
            self.schedule(every, Timer::Liveness);
        }
        if self.recycles_library() {
            self.schedule(super::handover::RECYCLE_CHECK, Timer::LibraryRecycle);
        }
        let period = self.queue_watch_period();
        self.schedule(period, Timer::QueueWatch);
        if let Some(every) = systemd::watchdog_period() {
            self.schedule(every, Timer::Watchdog(every));
        }
        if self.config.recycle.enabled() {
            self.schedule(RECYCLE_CHECK, Timer::Recycle);
        }
        let result = match self.spawn(ChildKind::Library, Part::Current) {
            Ok(_) => self.event_loop().await,
            Err(e) => Err(e),
        };
        // A master handing over is not the service stopping, nor is a new master that never
        // took over (the old one serves on).
        if !self.retiring && self.new_link.is_none() {
            systemd::notify("STOPPING=1");
        }
        self.abandon_upgrade();
        self.stop_all().await;
        result
    }

    pub(super) async fn event_loop(&mut self) -> Result<(), ClusterError> {
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let flow = tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => Flow::Stop(Err(ClusterError::Protocol {
                        message: "the child event channel closed".into(),
                    })),
                },
                signal = self.signals.recv() => self.on_signal(signal),
                command = next_command(&mut self.commands) => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        self.commands = None;
                        Flow::Continue
                    }
                },
                Some(event) = self.upgrade_rx.recv() => self.on_upgrade_event(event),
                () = sleep_until(next_timer) => self.on_timers(),
                Some(claimed) = self.schedules.claims.recv() => {
                    self.on_claimed(claimed);
                    Flow::Continue
                }
            };
            if let Flow::Stop(result) = flow {
                return result;
            }
        }
    }

    pub(super) fn on_event(&mut self, event: ChildEvent) -> Flow {
        match event {
            ChildEvent::Message {
                pid,
                msg: ToMaster::Ready { services },
                ..
            } => self.on_ready(pid, &services),
            ChildEvent::Message {
                kind,
                pid,
                msg: ToMaster::Failed { reason },
                ..
            } => {
                // The child's words: escaped, so that they cannot forge a log line. Logged once,
                // with its exit ("the library exited with code 2 before it was ready: …").
                let reason = escape(&reason);
                tracing::debug!(pid, "the {} reported: {reason}", kind.label());
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.failure = Some(reason);
                }
                Flow::Continue
            }
            // Kept by the child's handle, never forwarded.
            ChildEvent::Message {
                msg: ToMaster::Alive { .. },
                ..
            } => Flow::Continue,
            ChildEvent::Message {
                pid,
                msg: ToMaster::Send(out),
                ..
            } => {
                self.route(pid, out);
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg:
                    ToMaster::Stats {
                        id,
                        calls,
                        in_flight,
                        methods,
                    },
                ..
            } => {
                self.on_stats(pid, id, calls, in_flight, methods);
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg: ToMaster::LibrarySwitched { generation },
                ..
            } => {
                self.handover_worker_done(pid, Some(generation));
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg: ToMaster::TaskDone(report),
                ..
            } => {
                self.on_task_done(pid, report);
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg: ToMaster::Snapshot { state },
                ..
            } => {
                self.handover_snapshot(pid, state);
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg: ToMaster::Restored,
                ..
            } => {
                self.handover_restored(pid);
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg:
                    ToMaster::FleetRole {
                        service,
                        active,
                        leader,
                    },
                ..
            } => {
                self.on_fleet_role(pid, service, active, leader);
                Flow::Continue
            }
            ChildEvent::Broken { kind, pid, reason } => {
                self.on_broken(kind, pid, &reason);
                Flow::Continue
            }
            ChildEvent::Drained { pid } => {
                self.on_drained(pid);
                Flow::Continue
            }
            ChildEvent::Exited { pid, status, .. } => {
                self.no_longer_behind(pid);
                self.on_schedule_target_exit(pid);
                let flow = self.on_exit(pid, status);
                self.announce_members();
                flow
            }
        }
    }

    pub(super) fn on_signal(&mut self, signal: MasterSignal) -> Flow {
        match signal {
            MasterSignal::Stop(name) if self.ready_at.is_none() => {
                tracing::info!("received {name} while starting: stopping");
                Flow::Stop(Err(ClusterError::Interrupted { signal: name }))
            }
            MasterSignal::Stop(name) => {
                tracing::info!("received {name}: stopping the cluster");
                Flow::Stop(Ok(()))
            }
            MasterSignal::Reload => {
                tracing::info!("received SIGHUP: rolling reload");
                self.start_reload();
                Flow::Continue
            }
            MasterSignal::Upgrade => {
                tracing::info!("received SIGUSR2: binary upgrade");
                self.start_upgrade(None);
                Flow::Continue
            }
        }
    }

    pub(super) fn on_command(&mut self, command: Command) -> Flow {
        match command {
            Command::Reload => {
                tracing::info!("reload requested");
                self.start_reload();
                Flow::Continue
            }
            Command::Upgrade { reply } => {
                tracing::info!("upgrade requested");
                self.start_upgrade(reply);
                Flow::Continue
            }
            Command::ReloadLibrary { reply } => {
                tracing::info!("library handover requested");
                self.start_library_handover("requested".into(), reply);
                Flow::Continue
            }
            Command::Stop => {
                tracing::info!("stop requested: stopping the cluster");
                Flow::Stop(Ok(()))
            }
            Command::Status { methods, reply } => {
                self.start_status(methods, reply);
                Flow::Continue
            }
            Command::Scale { change, reply } => {
                tracing::info!("scale {change} requested");
                let done = self.scale(change);
                if let Err(e) = &done {
                    tracing::warn!("scale {change} refused: {e}");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(done);
                }
                Flow::Continue
            }
        }
    }

    pub(super) fn on_timers(&mut self) -> Flow {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let flow = match timer {
                Timer::StatusDeadline(id) => {
                    self.finish_status(id);
                    Flow::Continue
                }
                Timer::QueueWatch => {
                    self.watch_queues();
                    Flow::Continue
                }
                // A slot a scale-down removed while it waited for its restart.
                Timer::Restart(ChildKind::Worker(id)) if self.worker_slot(id).is_none() => {
                    Flow::Continue
                }
                Timer::Restart(kind) => match self.spawn_restart(kind) {
                    Ok(_) => Flow::Continue,
                    Err(e) => Flow::Stop(Err(e)),
                },
                Timer::Recycle => {
                    self.check_recycle();
                    Flow::Continue
                }
                Timer::ReadyDeadline(pid) => {
                    self.enforce_ready_deadline(pid);
                    Flow::Continue
                }
                Timer::Kill(pid) => {
                    if let Some(p) = self.procs.get(&pid) {
                        tracing::warn!(
                            pid,
                            "the {} did not stop in time: killing it",
                            p.handle.kind.label()
                        );
                        self.kill(pid, KillReason::GracePeriod);
                    }
                    Flow::Continue
                }
                Timer::Liveness => self.check_liveness(),
                Timer::Watchdog(every) => {
                    systemd::notify("WATCHDOG=1");
                    self.schedule(every, Timer::Watchdog(every));
                    Flow::Continue
                }
                Timer::LibraryRecycle => {
                    self.check_library_recycle();
                    self.schedule(super::handover::RECYCLE_CHECK, Timer::LibraryRecycle);
                    Flow::Continue
                }
                Timer::Handover(generation) => {
                    self.handover_deadline(generation);
                    Flow::Continue
                }
                Timer::ScheduleTick { index, tick } => {
                    self.on_schedule_tick(index, tick);
                    Flow::Continue
                }
            };
            if let Flow::Stop(_) = flow {
                return flow;
            }
        }
        Flow::Continue
    }
}

pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn next_command(
    commands: &mut Option<mpsc::UnboundedReceiver<Command>>,
) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
