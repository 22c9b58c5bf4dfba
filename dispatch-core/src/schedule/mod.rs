//! Schedules (issue 17): tasks run by the clock, declared on the [`Cluster`](crate::Cluster)
//! builder with [`Cluster::schedule`](crate::Cluster::schedule), by interval or cron expression,
//! in the Library, on one worker per tick, or on every worker; optionally once per fleet.
//!
//! # Who does what
//!
//! The **master** owns the clock: it outlives every worker and Library restart, so it alone
//! names the ticks and guarantees each is dispatched once. A tick is named by its scheduled
//! wall-clock time in milliseconds since the epoch ([`TaskContext::tick`]). At each tick the
//! master sends the target process a `RunTask` order over its control socket and waits for its
//! `TaskDone`; it records the last run (where, how long, result) and the next run, shown by
//! `dispatchctl status --schedules`.
//!
//! The rules that make a tick run exactly once on a host:
//! - A tick is dispatched once. A run whose process dies before it reports is counted as run
//!   and failed, never run again.
//! - One worker: the master picks a ready worker that is not being replaced by a reload, the
//!   least busy by its last heartbeat (fewest calls in flight, then fewest task runs going,
//!   then fewest runs given so far, so that ticks spread over idle workers). When no
//!   worker is ready (all restarting), or the target is the Library and the Library is
//!   restarting, the tick waits, and runs when one is ready again, unless the next tick comes
//!   first: then it is counted as missed.
//! - A tick falling while the whole cluster is down is not replayed: there is no master to
//!   remember it. A fleet-wide schedule may ask for [`Schedule::catch_up`]: the fleet's Redis
//!   remembers its last tick, and at start the latest missed tick runs once.
//! - With [`Overlap::Skip`] (the default) a tick whose previous run still goes is skipped and
//!   counted; [`Overlap::Allow`] runs both.
//!
//! **Fleet-wide** schedules ([`Schedule::fleet_wide`], with [`Cluster::fleet`](crate::Cluster::fleet)):
//! every master claims each tick in the shared Redis with `SET <key> <host> NX PX <lease>`,
//! the key naming the schedule and the tick; the one master whose `SET` succeeds runs it. The
//! tick's name is its scheduled time on the schedule's grid (epoch-aligned intervals, cron
//! times), the same on every host; the claim is kept for the lease and at least two periods, so
//! a host whose clock is off by less than that fires the tick late or early but finds it
//! claimed. A host that cannot reach Redis claims nothing (logged,
//! counted as skips) rather than risk a second run.
//!
//! The **code** of a schedule is a closure on the builder: every process runs the same `main`
//! and builds the same `Cluster`, so the Library and each worker hold every schedule's code by
//! its name and run what the master orders.

mod clock;
#[cfg(feature = "redis")]
pub(crate) mod lease;
mod run;

pub use crate::settings::{Overlap, Target};
pub(crate) use clock::{now_ms, Clock};
pub(crate) use run::start_run;

use crate::settings::{ScheduleSpec, Trigger};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a schedule cannot be declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// `Schedule::every(Duration::ZERO)`.
    #[error("a schedule's interval must be longer than zero")]
    ZeroInterval,
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expr}`: {message} (5 fields, or 6 with seconds first)")]
    Cron {
        /// The expression.
        expr: String,
        /// The parser's words.
        message: String,
    },
    /// Not an IANA time zone name, or not in the host's time zone database.
    #[error(
        "unknown time zone `{zone}`: use an IANA name such as `UTC` or `Europe/Paris`; zones are \
         read from the host's database (/usr/share/zoneinfo, the `tzdata` package, or the \
         directory in $ZONEINFO), so install it where it is missing"
    )]
    TimeZone {
        /// The name given.
        zone: String,
    },
}

/// What a call to a fleet singleton service does on a host that does not lead it
/// ([`Cluster::fleet_singleton`](crate::Cluster::fleet_singleton)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// Fail at once with [`Error::NotLeader`](crate::Error::NotLeader), naming the leader.
    Fail,
    /// Wait until this host leads, up to the call's deadline.
    Wait,
}

/// What a run of a schedule's task knows about itself.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) schedule: String,
    pub(crate) tick: u64,
    pub(crate) run: u64,
}

impl TaskContext {
    /// The schedule's name.
    pub fn schedule(&self) -> &str {
        &self.schedule
    }

    /// The tick: its scheduled time in milliseconds since the Unix epoch. The same on every
    /// worker of an every-worker tick, and on every host of the fleet.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// The tick's scheduled time.
    pub fn scheduled_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.tick)
    }

    /// This run's number, unique in its master's life.
    pub fn run_id(&self) -> u64 {
        self.run
    }
}

/// A schedule's code.
pub(crate) type TaskFn =
    Arc<dyn Fn(TaskContext) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Every schedule's code, by name, in every process.
#[derive(Clone, Default)]
pub(crate) struct Tasks(pub(crate) Arc<HashMap<String, TaskFn>>);

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Tasks {
    /// Adds (or replaces) `name`'s code.
    pub(crate) fn insert(&mut self, name: String, task: TaskFn) {
        Arc::make_mut(&mut self.0).insert(name, task);
    }
}

/// A task run by the clock, declared with [`Cluster::schedule`](crate::Cluster::schedule).
///
/// ```no_run
/// use dispatch::{Cluster, Schedule, Target, Worker};
/// use std::time::Duration;
///
/// fn main() -> Result<(), dispatch::ClusterError> {
///     Cluster::new()
///         .schedule(
///             Schedule::every("refresh-weather", Duration::from_secs(30 * 60))
///                 .on(Target::Library)
///                 .immediate(true)
///                 .timeout(Duration::from_secs(10))
///                 .run(|ctx| async move {
///                     println!("tick {}", ctx.tick());
///                     Ok::<(), std::io::Error>(())
///                 }),
///         )
///         .run(|_worker: Worker| async move { Ok::<(), std::io::Error>(()) })
/// }
/// ```
#[must_use]
pub struct Schedule {
    pub(crate) spec: ScheduleSpec,
    pub(crate) task: TaskFn,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Schedule {
    fn new(name: String, trigger: Trigger) -> Schedule {
        let missing = name.clone();
        Schedule {
            spec: ScheduleSpec {
                name,
                trigger,
                target: Target::OneWorker,
                immediate: false,
                jitter: Duration::ZERO,
                timeout: None,
                overlap: Overlap::Skip,
                fleet: false,
                catch_up: false,
            },
            task: Arc::new(move |_| {
                let name = missing.clone();
                Box::pin(async move {
                    Err(format!(
                        "schedule `{name}` was declared without `.run(...)`"
                    ))
                })
            }),
        }
    }

    /// Every `interval`, on ticks aligned to the Unix epoch (every 30 minutes: at :00 and :30).
    /// An interval of zero is refused by [`Cluster::schedule`](crate::Cluster::schedule)'s
    /// check; prefer [`Schedule::try_every`] to handle it.
    pub fn every(name: impl Into<String>, interval: Duration) -> Schedule {
        Schedule::new(
            name.into(),
            Trigger::Every(interval.max(Duration::from_millis(1))),
        )
    }

    /// [`Schedule::every`], refusing an interval of zero.
    ///
    /// # Errors
    /// [`ScheduleError::ZeroInterval`].
    pub fn try_every(
        name: impl Into<String>,
        interval: Duration,
    ) -> Result<Schedule, ScheduleError> {
        if interval.is_zero() {
            return Err(ScheduleError::ZeroInterval);
        }
        Ok(Schedule::every(name, interval))
    }

    /// At the times a cron expression gives, in UTC: 5 fields (`*/5 * * * *`) or 6 with
    /// seconds first (`*/10 * * * * *`), with `L`, `W`, `#` and aliases (`@hourly`).
    ///
    /// # Errors
    /// [`ScheduleError::Cron`] when the expression does not parse.
    pub fn cron(name: impl Into<String>, expr: &str) -> Result<Schedule, ScheduleError> {
        Schedule::cron_in(name, expr, "UTC")
    }

    /// [`Schedule::cron`] in the IANA time zone `zone` (`Europe/Paris`), daylight saving time
    /// included.
    ///
    /// # Errors
    /// [`ScheduleError::Cron`], or [`ScheduleError::TimeZone`] for an unknown zone.
    pub fn cron_in(
        name: impl Into<String>,
        expr: &str,
        zone: &str,
    ) -> Result<Schedule, ScheduleError> {
        let trigger = Trigger::Cron {
            expr: expr.to_owned(),
            zone: zone.to_owned(),
        };
        Clock::new(&trigger)?;
        Ok(Schedule::new(name.into(), trigger))
    }

    /// Where each tick runs. Default [`Target::OneWorker`].
    pub fn on(mut self, target: Target) -> Self {
        self.spec.target = target;
        self
    }

    /// Also run once as soon as the cluster is ready (egg-schedule's `immediate`), as the tick
    /// the current time falls in. Default off.
    pub fn immediate(mut self, on: bool) -> Self {
        self.spec.immediate = on;
        self
    }

    /// Start each run up to `jitter` after its tick, at random, so that many schedules (or
    /// hosts) do not hit an upstream at the same instant. Default none.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.spec.jitter = jitter;
        self
    }

    /// A run still going after `timeout` is cancelled and counted as failed. Default none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(timeout);
        self
    }

    /// Whether a tick runs while the previous run still goes. Default [`Overlap::Skip`].
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.spec.overlap = overlap;
        self
    }

    /// Run each tick on one host of the fleet only (the hosts sharing
    /// [`Cluster::fleet`](crate::Cluster::fleet)'s Redis), rather than on every host.
    pub fn fleet_wide(mut self) -> Self {
        self.spec.fleet = true;
        self
    }

    /// At start, run the latest tick that fell while no host of the fleet was running the
    /// schedule (the whole fleet down), once, rather than wait for the next tick; the ticks
    /// before it are not replayed. Needs a [`fleet_wide`](Schedule::fleet_wide) schedule and
    /// [`Cluster::fleet`](crate::Cluster::fleet): the fleet's Redis remembers the last tick run
    /// (`dispatch:{cluster}:last:{schedule}`); elsewhere it is ignored, with a warning. Default
    /// off: a tick missed while the cluster was down is not replayed.
    pub fn catch_up(mut self, on: bool) -> Self {
        self.spec.catch_up = on;
        self
    }

    /// The task's code. Its `Err` is logged and counted as a failure; a panic too.
    pub fn run<F, Fut, E>(mut self, task: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        self.task = Arc::new(move |ctx| {
            let fut = task(ctx);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}
