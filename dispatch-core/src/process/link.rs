//! A child's link to its master, the same for the Library and for every worker: take the
//! inherited control socket, read the init message, install the messenger with what the master
//! handed over, and follow the master's messages for the rest of the process's life.
//!
//! The master's orders become state the role reads: [`Orders::stop`] (asked to stop, or the
//! master is gone), [`Orders::cluster_ready`] and [`Orders::library_back`]. A stats request is
//! answered from whatever the role registered with [`MasterLink::report_stats_with`].
//!
//! With the liveness watchdog on, a task on the child's runtime sends the master a heartbeat
//! ([`ToMaster::Alive`]) at the interval the settings give, from the moment the link is joined,
//! carrying what the role registered with [`MasterLink::report_busy_with`]. A runtime that is
//! blocked (a deadlock, a blocking call on it, `SIGSTOP`) stops sending them; work on the
//! blocking pool does not.

use super::fds::inherited_control;
use super::role::ChildEnv;
use crate::cluster_error::ClusterError;
use crate::messenger::Messenger;
use crate::metrics::MethodStats;
use crate::schedule::Tasks;
use crate::wire::{
    ChildInit, ControlChannel, ControlReceiver, ControlWriter, Served, ToChild, ToMaster,
    MAX_BUSY_METHODS,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// HTTP requests this process served (one process is one worker), for `Recycle::max_requests`.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Counts one HTTP request served by this process (`Worker::count_request`).
pub(crate) fn count_request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// HTTP requests this process served so far.
pub(crate) fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Why a child stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// The master asked it to (graceful stop, reload, scale).
    Asked,
    /// End-of-file on the control socket: the master is gone.
    MasterGone,
    /// The control socket broke or carried something undecodable.
    ControlBroken,
}

impl StopCause {
    /// For logs: "library stopping: {why}".
    pub(crate) fn describe(self) -> &'static str {
        match self {
            StopCause::Asked => "the master asked it to stop",
            StopCause::MasterGone => "the master is gone",
            StopCause::ControlBroken => "its control socket broke",
        }
    }
}

/// What a child reports when the master asks for its stats: calls served or made, calls in
/// flight, and (from the Library) per-method metrics.
pub(crate) type StatsFn = Box<dyn Fn() -> (u64, u64, Vec<MethodStats>) + Send + Sync>;

/// What a child says it is doing in each heartbeat: calls in flight, and (from the Library)
/// those by `service.method`. Cheap: called every heartbeat.
pub(crate) type BusyFn = Box<dyn Fn() -> (u64, Vec<(String, u64)>) + Send + Sync>;

/// The master's orders, as state.
#[derive(Debug, Clone)]
pub(crate) struct Orders {
    /// `Some` once the child must stop, with why.
    pub(crate) stop: watch::Receiver<Option<StopCause>>,
    /// `true` once every process of the cluster is ready.
    pub(crate) cluster_ready: watch::Receiver<bool>,
    /// Notified when the master says the Library was restarted and is ready again.
    pub(crate) library_back: Arc<Notify>,
    /// `true` once the control socket is closed or broken.
    gone: watch::Receiver<bool>,
}

impl Orders {
    /// Resolves with the cause once the child must stop.
    pub(crate) async fn stopped(&self) -> StopCause {
        let mut stop = self.stop.clone();
        let cause = match stop.wait_for(Option::is_some).await {
            Ok(cause) => *cause,
            // The link's task ended without a word: the socket is gone.
            Err(_) => None,
        };
        cause.unwrap_or(StopCause::MasterGone)
    }

    /// Resolves once the control socket is closed or broken, even after a stop was asked for.
    pub(crate) async fn master_gone(&self) {
        let _ = self.gone.clone().wait_for(|gone| *gone).await;
    }
}

/// A child's joined link: the init message, the way to write to the master, and its orders.
pub(crate) struct MasterLink {
    /// The master's init message (its published values and membership are in the messenger).
    pub(crate) init: ChildInit,
    /// The queue of messages to the master.
    pub(crate) outbox: ControlWriter,
    /// The master's orders.
    pub(crate) orders: Orders,
    stats: Arc<Mutex<Option<StatsFn>>>,
    busy: Arc<Mutex<Option<BusyFn>>>,
    /// The master's handover orders ([`ToChild::LibraryMoved`], [`ToChild::Snapshot`],
    /// [`ToChild::Restore`]), queued from the start until the role takes them. Unbounded: the
    /// master sends at most one of each per handover, and one handover runs at a time.
    handover: Mutex<Option<mpsc::UnboundedReceiver<ToChild>>>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

impl std::fmt::Debug for MasterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterLink")
            .field("init", &self.init)
            .field("orders", &self.orders)
            .finish_non_exhaustive()
    }
}

impl MasterLink {
    /// Takes the control socket the master handed down, reads the init message (the first
    /// thing the master sends), installs the messenger and starts following the master.
    pub(crate) async fn join(env: &ChildEnv) -> Result<MasterLink, ClusterError> {
        let stream = inherited_control(env.control_fd, env.master_pid)?;
        let mut control = ControlChannel::new(stream);
        let first = match control.recv_frame().await? {
            Some(frame) => Some(
                crate::wire::decode_first(&frame)
                    .map_err(|message| ClusterError::Protocol { message })?,
            ),
            None => None,
        };
        let mut init = match first {
            Some(ToChild::Init(init)) => *init,
            other => {
                return Err(ClusterError::Protocol {
                    message: format!("expected the init message from the master, got {other:?}"),
                })
            }
        };
        // The published values follow the init message, one message each.
        let mut published = Vec::with_capacity(init.published.min(1024) as usize);
        for _ in 0..init.published {
            match control.recv::<ToChild>().await? {
                Some(ToChild::Deliver(value)) => published.push(value),
                other => {
                    return Err(ClusterError::Protocol {
                        message: format!(
                            "expected a published value after the init message, got {other:?}"
                        ),
                    })
                }
            }
        }
        let (sender, receiver) = control.split();
        let outbox = ControlWriter::spawn(sender, init.settings.outbox_bytes);
        // Installed before any application code, which may send from its setup already.
        let messenger = Messenger::install(outbox.clone(), &init.settings.budgets);
        messenger.preload(std::mem::take(&mut init.members), published);
        let (stop_tx, stop) = watch::channel(None);
        let (ready_tx, cluster_ready) = watch::channel(false);
        let (gone_tx, gone) = watch::channel(false);
        let library_back = Arc::new(Notify::new());
        let stats: Arc<Mutex<Option<StatsFn>>> = Arc::default();
        let busy: Arc<Mutex<Option<BusyFn>>> = Arc::default();
        let (handover_tx, handover) = mpsc::unbounded_channel();
        let tasks: Arc<Mutex<Option<Tasks>>> = Arc::default();
        if let Some(every) = init.settings.heartbeat_interval() {
            // The counts come from the stats (only when a recycling limit reads them).
            let counts = init.settings.recycle.counts().then(|| Arc::clone(&stats));
            tokio::spawn(heartbeat(outbox.clone(), Arc::clone(&busy), counts, every));
        }
        tokio::spawn(follow(
            receiver,
            messenger,
            outbox.clone(),
            Arc::clone(&stats),
            Arc::clone(&tasks),
            Signals {
                stop: stop_tx,
                cluster_ready: ready_tx,
                library_back: Arc::clone(&library_back),
                gone: gone_tx,
                handover: handover_tx,
            },
        ));
        Ok(MasterLink {
            init,
            outbox,
            orders: Orders {
                stop,
                cluster_ready,
                library_back,
                gone,
            },
            stats,
            busy,
            handover: Mutex::new(Some(handover)),
            tasks,
        })
    }

    /// The master's handover orders, for the role to follow (`None` once taken).
    pub(crate) fn take_handover_orders(&self) -> Option<mpsc::UnboundedReceiver<ToChild>> {
        self.handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Runs the schedules' tasks the master orders from now on (until then: each order is
    /// answered as failed). Set before the child reports ready: the master orders runs from
    /// ready processes only.
    pub(crate) fn run_tasks_from(&self, tasks: Tasks) {
        *self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tasks);
    }

    /// Says what this child is doing in every heartbeat from now on (until then: nothing).
    pub(crate) fn report_busy_with(&self, busy: BusyFn) {
        *self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(busy);
    }

    /// Answers the master's stats requests with `stats` from now on (until then: zeros).
    pub(crate) fn report_stats_with(&self, stats: StatsFn) {
        *self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stats);
    }

    /// Tells the master this child could not start, and waits until that is written.
    pub(crate) async fn report_failure(&self, reason: String) {
        // Only a closed socket refuses it, and then the master is gone anyway.
        let _ = self.outbox.send(&ToMaster::Failed { reason });
        self.outbox.flush().await;
    }
}

/// Sends a heartbeat every `every` for the process's whole life. It runs on the child's own
/// runtime, so its silence is the runtime's: the master needs nothing else to see a hang.
async fn heartbeat(
    outbox: ControlWriter,
    busy: Arc<Mutex<Option<BusyFn>>>,
    counts: Option<Arc<Mutex<Option<StatsFn>>>>,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    // After a stall, one heartbeat, not a burst of the missed ones.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (in_flight, mut methods) = busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or((0, Vec::new()), |f| f());
        methods.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        methods.truncate(MAX_BUSY_METHODS);
        let served = counts
            .as_ref()
            .map_or_else(Served::default, |stats| Served {
                calls: stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .map_or(0, |f| f().0),
                requests: requests(),
            });
        let alive = ToMaster::Alive {
            in_flight,
            methods,
            served,
        };
        if outbox.send(&alive).is_err() {
            return;
        }
    }
}

/// The senders behind [`Orders`].
struct Signals {
    stop: watch::Sender<Option<StopCause>>,
    cluster_ready: watch::Sender<bool>,
    library_back: Arc<Notify>,
    gone: watch::Sender<bool>,
    handover: mpsc::UnboundedSender<ToChild>,
}

/// Turns the master's messages into the child's state, for the child's whole life.
async fn follow(
    mut receiver: ControlReceiver,
    messenger: &'static Messenger,
    outbox: ControlWriter,
    stats: Arc<Mutex<Option<StatsFn>>>,
    tasks: Arc<Mutex<Option<Tasks>>>,
    signals: Signals,
) {
    let cause = loop {
        let msg = match receiver.recv::<ToChild>().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break StopCause::MasterGone,
            Err(e) => {
                tracing::error!("{e}");
                break StopCause::ControlBroken;
            }
        };
        match messenger.handle(msg) {
            None => {}
            Some(ToChild::ClusterReady) => {
                signals.cluster_ready.send_replace(true);
            }
            Some(ToChild::LibraryRestarted) => signals.library_back.notify_one(),
            Some(ToChild::StatsRequest { id }) => {
                let (calls, in_flight, methods) = stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .map_or((0, 0, Vec::new()), |f| f());
                let sent = outbox.send(&ToMaster::Stats {
                    id,
                    calls,
                    in_flight,
                    methods,
                });
                // A closed socket means the master is gone; anything else is worth a line.
                match sent {
                    Ok(()) | Err(crate::wire::Refused::Closed) => {}
                    Err(e) => tracing::warn!("cannot answer the master's stats request: {e:?}"),
                }
            }
            Some(ToChild::Shutdown) => {
                signals.stop.send_if_modified(|s| {
                    let first = s.is_none();
                    if first {
                        *s = Some(StopCause::Asked);
                    }
                    first
                });
            }
            Some(ToChild::RunTask(order)) => {
                let tasks = tasks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default();
                crate::schedule::start_run(&tasks, order, outbox.clone());
            }
            Some(
                msg @ (ToChild::LibraryMoved { .. } | ToChild::Snapshot | ToChild::Restore { .. }),
            ) => {
                // Dropped only when the role no longer follows them (it is stopping).
                let _ = signals.handover.send(msg);
            }
            Some(
                ToChild::Init(_)
                | ToChild::Deliver(_)
                | ToChild::Sent { .. }
                | ToChild::Members(_)
                | ToChild::Behind { .. },
            ) => {}
        }
    };
    // A stop already asked for stays the cause; the socket closing after it is expected.
    signals.stop.send_if_modified(|s| {
        let first = s.is_none();
        if first {
            *s = Some(cause);
        }
        first
    });
    signals.gone.send_replace(true);
}
