//! The master's event loop: one task reacts to four sources (child events, signals, commands
//! from a [`ClusterHandle`](super::ClusterHandle) or the admin socket, and timers) until the
//! cluster stops.

use super::child::{ChildEvent, KillReason};
use super::command::Command;
use super::guard::escape;
use super::signals::MasterSignal;
use super::state::{Flow, Master, Part, Timer};
use crate::cluster_error::ClusterError;
use crate::process::ChildKind;
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
        let period = self.queue_watch_period();
        self.schedule(period, Timer::QueueWatch);
        let result = match self.spawn(ChildKind::Library, Part::Current) {
            Ok(_) => self.event_loop().await,
            Err(e) => Err(e),
        };
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
                msg: ToMaster::TaskDone(report),
                ..
            } => {
                self.on_task_done(pid, report);
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
        }
    }

    pub(super) fn on_command(&mut self, command: Command) -> Flow {
        match command {
            Command::Reload => {
                tracing::info!("reload requested");
                self.start_reload();
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
                Timer::Restart(kind) => match self.spawn_restart(kind) {
                    Ok(_) => Flow::Continue,
                    Err(e) => Flow::Stop(Err(e)),
                },
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
