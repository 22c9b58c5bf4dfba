//! The master's side of schedules (issue 17): it owns the clock, names each tick, dispatches
//! it once to its target over the control plane, and records how it went. See
//! `crate::schedule` for the rules; this file is their one implementation.

use super::state::{Master, Part, Timer};
use crate::admin::{LastRun, ScheduleStatus};
use crate::process::ChildKind;
use crate::schedule::{now_ms, Clock};
use crate::settings::{Overlap, ScheduleSpec, Target, Trigger};
use crate::wire::{TaskOrder, TaskReport, ToChild};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// The most runs of one schedule going at once (with `Overlap::Allow`, or every worker's run
/// of an every-worker tick): past it a tick is skipped, counted and logged, so that a task that
/// never ends cannot grow the master's records (or a child's tasks) without bound.
const MAX_RUNNING: u64 = 1024;

/// A tick that found no process to run it, waiting for one until the schedule's next tick.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    tick: u64,
}

/// A run going now.
#[derive(Debug)]
struct Running {
    index: usize,
    tick: u64,
    pid: u32,
    process: String,
}

/// One schedule's state.
#[derive(Debug)]
struct Sched {
    spec: ScheduleSpec,
    clock: Clock,
    next: Option<u64>,
    waiting: Vec<Waiting>,
    last: Option<LastRun>,
    runs: u64,
    failures: u64,
    skips: u64,
    missed: u64,
    elsewhere: u64,
    running: u64,
}

/// The outcome of a fleet claim, sent back to the event loop by the task that asked Redis.
#[derive(Debug)]
pub(super) struct Claimed {
    index: usize,
    tick: u64,
    /// `Ok(true)`: ours to run; `Ok(false)`: another host's; `Err`: Redis unreachable.
    won: Result<bool, String>,
}

/// Every schedule of this master.
#[derive(Debug)]
pub(super) struct Schedules {
    list: Vec<Sched>,
    runs: HashMap<u64, Running>,
    /// Runs given to each live process so far: the tie-break between equally idle workers, so
    /// that one-worker ticks spread over the workers.
    given: HashMap<u32, u64>,
    run_seq: u64,
    started: bool,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) claims_tx: mpsc::UnboundedSender<Claimed>,
    pub(super) claims: mpsc::UnboundedReceiver<Claimed>,
    #[cfg(feature = "redis")]
    fleet: Option<Fleet>,
    /// Whether the last fleet claim failed (to log a loss and a recovery once each).
    fleet_down: bool,
    /// The fleet singletons' roles, as the Library last reported them.
    roles: std::collections::BTreeMap<String, (bool, Option<String>)>,
}

impl Schedules {
    pub(super) fn new(
        specs: &[ScheduleSpec],
        fleet: Option<&crate::settings::FleetSettings>,
        name: &str,
    ) -> Schedules {
        let list = specs
            .iter()
            .filter_map(|spec| match Clock::new(&spec.trigger) {
                Ok(clock) => Some(Sched {
                    spec: spec.clone(),
                    clock,
                    next: None,
                    waiting: Vec::new(),
                    last: None,
                    runs: 0,
                    failures: 0,
                    skips: 0,
                    missed: 0,
                    elsewhere: 0,
                    running: 0,
                }),
                Err(e) => {
                    tracing::error!(schedule = %spec.name, "schedule dropped: {e}");
                    None
                }
            })
            .collect();
        let (claims_tx, claims) = mpsc::unbounded_channel();
        #[cfg(not(feature = "redis"))]
        let _ = (fleet, name);
        Schedules {
            list,
            runs: HashMap::new(),
            given: HashMap::new(),
            run_seq: 0,
            started: false,
            claims_tx,
            claims,
            #[cfg(feature = "redis")]
            fleet: fleet.map(|f| Fleet::new(f, name)),
            fleet_down: false,
            roles: std::collections::BTreeMap::new(),
        }
    }
}

/// A run's place, for logs and status: `worker 2 (pid 15)`.
fn process_label(kind: ChildKind, pid: u32) -> String {
    match kind {
        ChildKind::Library => format!("library (pid {pid})"),
        ChildKind::Worker(id) => format!("worker {id} (pid {pid})"),
    }
}

/// A uniformly random delay below `jitter`.
fn random_below(jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random::<u64>() % nanos)
}

impl Master {
    /// Starts every schedule's clock: called once, when the cluster is first ready. An
    /// `immediate` schedule runs at once as the tick the current time falls in.
    pub(super) fn start_schedules(&mut self) {
        if self.schedules.started {
            return;
        }
        self.schedules.started = true;
        let now = now_ms();
        for index in 0..self.schedules.list.len() {
            let sched = &self.schedules.list[index];
            if sched.spec.immediate {
                if let Some(tick) = sched.clock.current(now) {
                    self.tick_due(index, tick);
                }
            } else if sched.spec.catch_up {
                if let Some(tick) = sched.clock.current(now) {
                    self.catch_up(index, tick);
                }
            }
            self.arm(index, now);
        }
        if !self.schedules.list.is_empty() {
            tracing::info!("{} schedules started", self.schedules.list.len());
        }
    }

    /// Sets the timer of `index`'s first tick after `after_ms`.
    fn arm(&mut self, index: usize, after_ms: u64) {
        let sched = &mut self.schedules.list[index];
        // A tick's timer fires up to `jitter` late on purpose: that much is not a delay.
        let jitter = u64::try_from(sched.spec.jitter.as_millis()).unwrap_or(u64::MAX);
        let next = sched
            .clock
            .next_after(after_ms.max(now_ms().saturating_sub(jitter)));
        sched.next = next;
        if let Some(tick) = next {
            let delay = Duration::from_millis(tick.saturating_sub(now_ms()))
                + random_below(sched.spec.jitter);
            self.schedule(delay, Timer::ScheduleTick { index, tick });
        }
    }

    /// The timer of `index`'s tick `tick` fired.
    pub(super) fn on_schedule_tick(&mut self, index: usize, tick: u64) {
        if index >= self.schedules.list.len() {
            return;
        }
        let expected = self.schedules.list[index].clock.next_after(tick);
        self.arm(index, tick);
        // The event loop was held up past whole periods (a stalled machine): those ticks were
        // not dispatched; say so and count them as missed.
        let sched = &mut self.schedules.list[index];
        if let (Some(expected), Some(next), Clock::Every(every)) =
            (expected, sched.next, &sched.clock)
        {
            let lost = next.saturating_sub(expected) / every;
            if lost > 0 {
                sched.missed += lost;
                tracing::warn!(
                    schedule = %sched.spec.name,
                    "{lost} tick(s) missed: the master's event loop was held up"
                );
            }
        }
        self.tick_due(index, tick);
    }

    /// Tick `tick` of `index` is due: dispatch it once (after a fleet claim for fleet-wide
    /// schedules), or skip it.
    fn tick_due(&mut self, index: usize, tick: u64) {
        self.expire_waiting(index);
        // During a binary upgrade two masters of this host keep a clock: the old one runs the
        // ticks until the new one takes over, then the new one (a tick due in the moment
        // between the two is run by neither, never by both).
        if self.retiring || self.taking_over {
            tracing::debug!(
                schedule = %self.schedules.list[index].spec.name,
                tick,
                "tick left to the other master of an upgrade"
            );
            return;
        }
        let sched = &mut self.schedules.list[index];
        if sched.running >= MAX_RUNNING {
            sched.skips += 1;
            tracing::warn!(
                schedule = %sched.spec.name,
                tick,
                "tick skipped: {MAX_RUNNING} runs of this schedule are still going (give it a timeout)"
            );
            return;
        }
        if sched.spec.overlap == Overlap::Skip && sched.running > 0 {
            sched.skips += 1;
            tracing::info!(schedule = %sched.spec.name, tick, "tick skipped: the previous run is still going");
            return;
        }
        if sched.spec.fleet {
            self.claim(index, tick);
        } else {
            self.dispatch(index, tick);
        }
    }

    /// Asks the fleet's Redis whether this host runs `tick`; the answer comes back as a
    /// [`Claimed`]. Without a fleet configured, the tick runs here.
    fn claim(&mut self, index: usize, tick: u64) {
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.schedules.fleet.as_ref().filter(|f| !f.url.is_empty()) {
            let sched = &self.schedules.list[index];
            // The claim outlives the tick by the lease and by two periods, whichever is longer:
            // a host whose clock is late reaches the same key while it still exists.
            let hold = fleet.lease.max(sched.clock.period_after(tick) * 2);
            fleet.claim(
                index,
                tick,
                &sched.spec.name,
                hold,
                self.schedules.claims_tx.clone(),
            );
            return;
        }
        tracing::warn!(
            schedule = %self.schedules.list[index].spec.name,
            "fleet-wide schedule without a fleet (Cluster::fleet, feature `redis`): runs on this host"
        );
        self.dispatch(index, tick);
    }

    /// Runs `tick` (the latest before the start) if the fleet's Redis says it is later than
    /// the schedule's last tick run: through the ordinary claim, so once in the fleet.
    fn catch_up(&mut self, index: usize, tick: u64) {
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.schedules.fleet.as_ref().filter(|f| !f.url.is_empty()) {
            let sched = &self.schedules.list[index];
            if sched.spec.fleet {
                let hold = fleet.lease.max(sched.clock.period_after(tick) * 2);
                fleet.catch_up(
                    index,
                    tick,
                    &sched.spec.name,
                    hold,
                    self.schedules.claims_tx.clone(),
                );
                return;
            }
        }
        let _ = tick;
        tracing::warn!(
            schedule = %self.schedules.list[index].spec.name,
            "catch_up needs a fleet-wide schedule and Cluster::fleet (the fleet's Redis remembers \
             the last tick): ignored"
        );
    }

    /// A fleet claim was answered.
    pub(super) fn on_claimed(&mut self, claimed: Claimed) {
        let Claimed { index, tick, won } = claimed;
        let Some(sched) = self.schedules.list.get_mut(index) else {
            return;
        };
        match won {
            Ok(true) => {
                if self.schedules.fleet_down {
                    self.schedules.fleet_down = false;
                    tracing::info!("the fleet's Redis answers again: claiming ticks");
                }
                self.dispatch(index, tick);
            }
            Ok(false) => {
                sched.elsewhere += 1;
                tracing::debug!(schedule = %sched.spec.name, tick, "tick claimed by another host");
            }
            Err(why) => {
                sched.skips += 1;
                if !self.schedules.fleet_down {
                    self.schedules.fleet_down = true;
                    tracing::warn!(
                        schedule = %sched.spec.name,
                        tick,
                        "cannot reach the fleet's Redis ({why}): this host claims no fleet-wide \
                         tick until it answers again (each counted as a skip)"
                    );
                }
            }
        }
    }

    /// The processes that may run a tick of `target` now.
    fn candidates(&self, target: Target) -> Vec<(u32, ChildKind)> {
        let eligible = |library: bool| {
            self.procs
                .iter()
                .filter(move |(_, p)| {
                    p.ready
                        && p.part == Part::Current
                        && !p.unresponsive
                        && !p.broken
                        && p.killed.is_none()
                        && (p.handle.kind == ChildKind::Library) == library
                })
                .map(|(pid, p)| (*pid, p.handle.kind))
        };
        match target {
            Target::Library => eligible(true).collect(),
            Target::AllWorkers => {
                let mut all: Vec<_> = eligible(false).collect();
                all.sort_by_key(|(pid, _)| *pid);
                all
            }
            Target::OneWorker => {
                let busy = |pid: u32| {
                    let tasks = self
                        .schedules
                        .runs
                        .values()
                        .filter(|r| r.pid == pid)
                        .count();
                    let calls = self
                        .procs
                        .get(&pid)
                        .map_or(0, |p| p.handle.heard().in_flight);
                    let given = self.schedules.given.get(&pid).copied().unwrap_or(0);
                    (calls, tasks, given, pid)
                };
                eligible(false)
                    .min_by_key(|(pid, _)| busy(*pid))
                    .into_iter()
                    .collect()
            }
        }
    }

    /// Sends tick `tick` of `index` to its target, or keeps it waiting for one.
    fn dispatch(&mut self, index: usize, tick: u64) {
        let target = self.schedules.list[index].spec.target;
        let chosen = self.candidates(target);
        if chosen.is_empty() {
            let sched = &mut self.schedules.list[index];
            tracing::info!(
                schedule = %sched.spec.name,
                tick,
                "no process can run this tick now (restarting?): it waits for one until the next tick"
            );
            sched.waiting.push(Waiting { tick });
            return;
        }
        for (pid, kind) in chosen {
            self.schedules.run_seq += 1;
            let run = self.schedules.run_seq;
            let sched = &mut self.schedules.list[index];
            sched.runs += 1;
            sched.running += 1;
            let order = TaskOrder {
                run,
                schedule: sched.spec.name.clone(),
                tick,
                timeout: sched.spec.timeout,
            };
            *self.schedules.given.entry(pid).or_default() += 1;
            let process = process_label(kind, pid);
            tracing::debug!(schedule = %sched.spec.name, tick, run, "tick dispatched to {process}");
            self.schedules.runs.insert(
                run,
                Running {
                    index,
                    tick,
                    pid,
                    process,
                },
            );
            self.send(pid, ToChild::RunTask(order));
        }
    }

    /// A new tick is due: the ticks still waiting for a process are missed.
    fn expire_waiting(&mut self, index: usize) {
        let sched = &mut self.schedules.list[index];
        let expired = std::mem::take(&mut sched.waiting).len() as u64;
        if expired > 0 {
            sched.missed += expired;
            tracing::warn!(
                schedule = %sched.spec.name,
                "{expired} tick(s) missed: no process could run them before the next tick"
            );
        }
    }

    /// A process became ready: ticks waiting for one run now.
    pub(super) fn on_schedule_target_ready(&mut self) {
        for index in 0..self.schedules.list.len() {
            let waiting = std::mem::take(&mut self.schedules.list[index].waiting);
            for w in waiting {
                if self
                    .candidates(self.schedules.list[index].spec.target)
                    .is_empty()
                {
                    self.schedules.list[index].waiting.push(w);
                } else {
                    self.dispatch(index, w.tick);
                }
            }
        }
    }

    /// A run ended.
    pub(super) fn on_task_done(&mut self, pid: u32, report: TaskReport) {
        let Some(running) = self.schedules.runs.remove(&report.run) else {
            tracing::debug!(pid, run = report.run, "report of an unknown run");
            return;
        };
        self.finish_run(running, report.elapsed, report.result.err());
    }

    /// `pid` exited: its runs failed (and are not run again).
    pub(super) fn on_schedule_target_exit(&mut self, pid: u32) {
        self.schedules.given.remove(&pid);
        let dead: Vec<u64> = self
            .schedules
            .runs
            .iter()
            .filter(|(_, r)| r.pid == pid)
            .map(|(run, _)| *run)
            .collect();
        for run in dead {
            if let Some(running) = self.schedules.runs.remove(&run) {
                let why = "the process exited during the run (not run again)".to_owned();
                self.finish_run(running, Duration::ZERO, Some(why));
            }
        }
    }

    fn finish_run(&mut self, running: Running, elapsed: Duration, error: Option<String>) {
        let Some(sched) = self.schedules.list.get_mut(running.index) else {
            return;
        };
        sched.running = sched.running.saturating_sub(1);
        if let Some(why) = &error {
            sched.failures += 1;
            tracing::warn!(schedule = %sched.spec.name, tick = running.tick, "run on {} failed: {why}", running.process);
        }
        sched.last = Some(LastRun {
            tick: running.tick,
            process: running.process,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            error,
        });
    }

    /// The Library reported its role for a fleet singleton.
    pub(super) fn on_fleet_role(
        &mut self,
        pid: u32,
        service: String,
        active: bool,
        leader: Option<String>,
    ) {
        if self.is_current(ChildKind::Library, pid) {
            self.schedules.roles.insert(service, (active, leader));
        }
    }

    /// The fleet singletons, for `dispatchctl status`.
    pub(super) fn singleton_statuses(&self) -> Vec<crate::admin::SingletonStatus> {
        let library_ready = self.library.current.is_some_and(|pid| self.is_ready(pid));
        self.schedules
            .roles
            .iter()
            .map(
                |(service, (active, leader))| crate::admin::SingletonStatus {
                    service: service.clone(),
                    active: *active && library_ready,
                    leader: leader.clone(),
                },
            )
            .collect()
    }

    /// Every schedule, for `dispatchctl status --schedules` and the metrics.
    pub(super) fn schedule_statuses(&self) -> Vec<ScheduleStatus> {
        self.schedules
            .list
            .iter()
            .map(|s| ScheduleStatus {
                name: s.spec.name.clone(),
                trigger: match &s.spec.trigger {
                    Trigger::Every(d) => format!("every {d:?}"),
                    Trigger::Cron { expr, zone } => format!("cron {expr} ({zone})"),
                },
                target: match s.spec.target {
                    Target::Library => "library",
                    Target::OneWorker => "one-worker",
                    Target::AllWorkers => "all-workers",
                }
                .to_owned(),
                fleet: s.spec.fleet,
                next_run_ms: s.next,
                last_run: s.last.clone(),
                runs: s.runs,
                failures: s.failures,
                skips: s.skips,
                missed: s.missed,
                elsewhere: s.elsewhere,
                running: s.running,
            })
            .collect()
    }
}

/// The master's link to the fleet's Redis: one multiplexed connection, opened on first use and
/// again after a failure.
#[cfg(feature = "redis")]
#[derive(Debug)]
struct Fleet {
    url: String,
    host: String,
    cluster: String,
    lease: Duration,
    conn: std::sync::Arc<tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>>,
}

#[cfg(feature = "redis")]
impl Fleet {
    fn new(settings: &crate::settings::FleetSettings, cluster: &str) -> Fleet {
        Fleet {
            url: settings.url.clone(),
            host: settings.host.clone().unwrap_or_else(default_host),
            cluster: cluster.to_owned(),
            lease: settings.lease,
            conn: std::sync::Arc::default(),
        }
    }

    /// Claims `tick` in a task of its own (the event loop never waits on Redis).
    fn claim(
        &self,
        index: usize,
        tick: u64,
        schedule: &str,
        hold: Duration,
        answer: mpsc::UnboundedSender<Claimed>,
    ) {
        self.claim_with(index, tick, schedule, hold, answer, false);
    }

    /// [`Fleet::claim`] for a catch-up at start: only when the remembered last tick is older.
    fn catch_up(
        &self,
        index: usize,
        tick: u64,
        schedule: &str,
        hold: Duration,
        answer: mpsc::UnboundedSender<Claimed>,
    ) {
        self.claim_with(index, tick, schedule, hold, answer, true);
    }

    fn claim_with(
        &self,
        index: usize,
        tick: u64,
        schedule: &str,
        hold: Duration,
        answer: mpsc::UnboundedSender<Claimed>,
        only_if_missed: bool,
    ) {
        use crate::schedule::lease;
        let key = lease::tick_key(&self.cluster, schedule, tick);
        let last = lease::last_key(&self.cluster, schedule);
        let (url, host, conn) = (self.url.clone(), self.host.clone(), self.conn.clone());
        let limit = self.lease.min(Duration::from_secs(2));
        tokio::spawn(async move {
            let attempt = async {
                let mut guard = conn.lock().await;
                if guard.is_none() {
                    *guard = Some(lease::connect(&url, limit).await?);
                }
                let Some(c) = guard.as_mut() else {
                    return Err("no connection".to_owned());
                };
                let result = async {
                    if only_if_missed {
                        match lease::last_tick(c, &last).await? {
                            Some(done) if done >= tick => return Ok(false),
                            // Never run in this fleet: nothing was missed.
                            None => return Ok(false),
                            Some(_) => {}
                        }
                    }
                    let won = lease::claim_tick(c, &key, &host, hold).await?;
                    if won {
                        lease::remember_tick(c, &last, tick).await?;
                    }
                    Ok::<bool, redis::RedisError>(won)
                }
                .await;
                if result.is_err() {
                    *guard = None;
                }
                result.map_err(|e| e.to_string())
            };
            let won = match tokio::time::timeout(limit, attempt).await {
                Ok(won) => won,
                Err(_) => Err(format!("no answer within {limit:?}")),
            };
            let _ = answer.send(Claimed { index, tick, won });
        });
    }
}

/// This host's default name in the fleet: its hostname and the master's pid.
#[cfg(feature = "redis")]
pub(super) fn default_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!("{name}:{}", std::process::id())
}
