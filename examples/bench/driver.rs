//! The driver: runs each workload in fresh child processes of this binary, reads their `BENCH`
//! lines, and prints one row per result. Children run in their own process group, which is
//! killed when the run ends or times out; they also die with the driver.

use crate::report::{self, Metric, Printer, Row};
use crate::{Args, Job, Workload};
use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// Runs every requested workload; `false` if any failed.
pub(crate) fn run(args: &Args) -> Result<bool> {
    if let Some(cpu) = args.pin {
        pin(cpu)?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(drive(args))
}

/// Runs the list of jobs `--rounds` times over, interleaved. With one round each row is
/// printed as it comes; with more, each job's rows are folded into the row of their medians
/// (`report::median_row`) and printed at the end, each round's progress going to stderr.
async fn drive(args: &Args) -> Result<bool> {
    warn_unused_options(args);
    let printer = Printer::new(args.json, args.pin, args.rounds);
    printer.preamble();
    let jobs = jobs(args);
    // Each job's row of every round so far, in the order of `jobs`.
    let mut rounds: Vec<Vec<Row>> = jobs.iter().map(|_| Vec::new()).collect();
    let mut all_ok = true;
    for round in 1..=args.rounds {
        // Each floor's, plain tarpc's and the current-thread Library's row of this round, for
        // the ratios: a row is compared only with its peers of the same round.
        let mut peers: HashMap<PeerKey, Peer> = HashMap::new();
        for (i, &job) in jobs.iter().enumerate() {
            let mut row = run_job(job).await;
            compare(&mut row, &mut peers);
            if args.rounds == 1 {
                finish(&mut row, args);
                all_ok &= row.error.is_none();
                printer.row(&row);
            } else {
                eprintln!(
                    "bench: round {round}/{}: {} {}",
                    args.rounds,
                    job.label(),
                    report::brief(&row)
                );
                rounds[i].push(row);
            }
        }
    }
    if args.rounds > 1 {
        for (&job, rows) in jobs.iter().zip(rounds) {
            let mut row = report::median_row(job, rows);
            finish(&mut row, args);
            all_ok &= row.error.is_none();
            printer.row(&row);
        }
    }
    Ok(all_ok)
}

/// Which row a peer is: its workload, payload and Library runtime (`Job::library_threads`).
type PeerKey = (Workload, usize, Option<usize>);

/// What a workload is compared to: a floor's, plain tarpc's or the current-thread Library's
/// figures, from the same round.
#[derive(Debug, Clone, Copy)]
struct Peer {
    per_sec: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
}

/// Records `row` as a peer if others are compared to it, and sets its ratios to the peers it is
/// compared to (all from the same round).
fn compare(row: &mut Row, peers: &mut HashMap<PeerKey, Peer>) {
    let job = row.job;
    let Some(calls) = &row.calls else { return };
    let peer = Peer {
        per_sec: calls.per_sec,
        server_cpu_us: calls.server_cpu_us,
        client_cpu_us: calls.client_cpu_us,
    };
    match (job.workload, job.library_threads) {
        (Workload::Floor | Workload::FloorPipelined | Workload::TarpcW1 | Workload::TarpcW2, _) => {
            peers.insert((job.workload, job.payload, None), peer);
        }
        (Workload::Threads, Some(0)) => {
            peers.insert((job.workload, job.payload, Some(0)), peer);
        }
        _ => {}
    }
    row.vs_floor = floor_of(&job).and_then(|(floor, payload)| {
        Some(calls.per_sec / peers.get(&(floor, payload, None))?.per_sec)
    });
    if let Some(tarpc) = tarpc_of(&job).and_then(|w| peers.get(&(w, 0, None))) {
        row.vs_tarpc = Some(calls.per_sec / tarpc.per_sec);
        row.server_cpu_vs_tarpc = Some(calls.server_cpu_us / tarpc.server_cpu_us);
        row.client_cpu_vs_tarpc = Some(calls.client_cpu_us / tarpc.client_cpu_us);
    }
    if let (Workload::Threads, Some(threads)) = (job.workload, job.library_threads) {
        if threads > 0 {
            row.vs_current_thread = peers
                .get(&(Workload::Threads, job.payload, Some(0)))
                .map(|ct| calls.per_sec / ct.per_sec);
        }
    }
}

/// Completes a row to print (one round's, or the medians of several): the details its ratios
/// give, and its target, checked on the values it shows.
fn finish(row: &mut Row, args: &Args) {
    let medians = if args.rounds > 1 {
        " (medians of the rounds' own ratios)"
    } else {
        ""
    };
    if let (Some(calls), Some(server), Some(client)) = (
        row.vs_tarpc,
        row.server_cpu_vs_tarpc,
        row.client_cpu_vs_tarpc,
    ) {
        row.details.push(format!(
            "vs plain tarpc: {calls:.2}x its calls/s; CPU per call {server:.2}x its server's in \
             the Library, {client:.2}x its client's in a worker{medians}"
        ));
    }
    let job = row.job;
    if job.workload == Workload::Threads && row.error.is_none() {
        match job.library_threads {
            Some(0) => {
                let cpus = std::thread::available_parallelism().map_or(0, usize::from);
                row.details.push(format!(
                    "w2's load ({} workers x {} in flight, {} s) against the Library on the \
                     current-thread runtime, then on multi-thread runtimes of 1, 2 and 4 \
                     threads; this machine gives the bench {cpus} CPU(s), and past that many \
                     Library threads the curve flattens (the workers and the master share them)",
                    job.workers,
                    job.inflight,
                    job.duration.as_secs_f64(),
                ));
            }
            Some(_) => {
                if let Some(ratio) = row.vs_current_thread {
                    row.details.push(format!(
                        "{ratio:.2}x the current-thread Library's calls/s{medians}"
                    ));
                }
            }
            None => {}
        }
    }
    row.target = report::target(row, args.pin.is_some());
}

/// Says so when `--workers` or `--inflight` was given for a workload with a fixed layout.
fn warn_unused_options(args: &Args) {
    let Some(workload) = args.workload else {
        return;
    };
    if args.workers.is_some() && !workload.takes_workers() {
        eprintln!("note: --workers does not apply to {}", workload.name());
    }
    if args.inflight.is_some() && !workload.takes_inflight() {
        eprintln!("note: --inflight does not apply to {}", workload.name());
    }
}

/// The jobs to run, floors and plain tarpc first; a workload compared to a floor or to plain
/// tarpc brings it along (a floor makes as many round trips as what it is compared to), and
/// `threads` is one job per Library runtime.
fn jobs(args: &Args) -> Vec<Job> {
    let wanted = args.workload.map_or(Workload::ALL.to_vec(), |w| vec![w]);
    let mut jobs: Vec<Job> = Vec::new();
    let mut add = |job: Job| {
        if !jobs.iter().any(|j| same_job(j, &job)) {
            jobs.push(job);
        }
    };
    for &workload in &wanted {
        if matches!(workload, Workload::Floor | Workload::FloorPipelined) {
            add(Job::new(workload, args).with_payload(16));
            add(Job::new(workload, args));
        } else {
            let job = Job::new(workload, args);
            if let Some((floor, payload)) = floor_of(&job) {
                add(Job::new(floor, args)
                    .with_payload(payload)
                    .with_calls(job.calls, job.warmup));
            }
            if let Some(peer) = tarpc_of(&job) {
                add(Job::new(peer, args));
            }
        }
    }
    for &workload in &wanted {
        if workload == Workload::Threads {
            for threads in crate::LIBRARY_THREADS {
                add(Job::new(workload, args).with_library_threads(threads));
            }
        } else {
            add(Job::new(workload, args));
        }
    }
    jobs
}

/// Whether two jobs measure the same thing (one of them is not run).
fn same_job(a: &Job, b: &Job) -> bool {
    (
        a.workload,
        a.workers,
        a.inflight,
        a.payload,
        a.library_threads,
    ) == (
        b.workload,
        b.workers,
        b.inflight,
        b.payload,
        b.library_threads,
    )
}

/// The floor row a workload is compared to.
fn floor_of(job: &Job) -> Option<(Workload, usize)> {
    match job.workload {
        Workload::W1 => Some((Workload::Floor, 16)),
        Workload::W2 => Some((Workload::FloorPipelined, 16)),
        Workload::W3 | Workload::W3Large => Some((Workload::Floor, job.payload)),
        _ => None,
    }
}

/// The plain tarpc workload a workload is compared to (its payload is 0).
fn tarpc_of(job: &Job) -> Option<Workload> {
    match job.workload {
        Workload::W1 => Some(Workload::TarpcW1),
        Workload::W2 => Some(Workload::TarpcW2),
        _ => None,
    }
}

/// The row of one job (an error is a row too).
async fn run_job(job: Job) -> Row {
    let result = match job.workload {
        Workload::Floor | Workload::FloorPipelined => pair(job, "floor").await,
        Workload::TarpcW1 | Workload::TarpcW2 => pair(job, "tarpc").await,
        Workload::W1 | Workload::W2 | Workload::Threads | Workload::W3 | Workload::W3Large => {
            calls(job).await
        }
        Workload::Messages => messages(job).await,
        Workload::Stream => stream(job).await,
        Workload::Config => config(job).await,
        Workload::Startup => startup(job).await,
        Workload::Rss => rss(job).await,
        Workload::Recovery => recovery(job).await,
    };
    result.unwrap_or_else(|e| Row::failed(job, format!("{e:#}")))
}

/// The longest a child of `job` may run.
fn time_limit(job: &Job) -> Duration {
    Duration::from_secs(60) + job.duration * 2
}

// ---- the workloads ----

async fn calls(job: Job) -> Result<Row> {
    let reports = run_cluster(&job).await?;
    let mut row = Row::calls(job, &reports, job.workers)?;
    if let (Workload::Threads, Some(1..)) = (job.workload, job.library_threads) {
        // The "summed over the workers" note is on the current-thread row already.
        row.details.clear();
    }
    Ok(row)
}

/// Messages from the Library to every worker, routed by the master: messages received per
/// second summed over the workers, send → receipt latency.
async fn messages(job: Job) -> Result<Row> {
    let reports = run_cluster(&job).await?;
    let mut row = Row::calls(job, &reports, job.workers)?;
    row.details = vec![format!(
        "{} messages sent by the Library to each of {} workers; msgs/s summed over the workers; \
         p50/p99: send → receipt, which under this flood is the queueing delay; srv cpu: the master's (it routes them)",
        job.calls, job.workers
    )];
    Ok(row)
}

/// Values of one keyed subscription held by every worker, fanned out by the Library: values
/// received per second summed over the workers, publish → receipt latency.
async fn stream(job: Job) -> Result<Row> {
    let reports = run_cluster(&job).await?;
    let mut row = Row::calls(job, &reports, job.workers)?;
    row.details = vec![format!(
        "{} values published on one keyed subscription held by each of {} workers (its own \
         stream connection per worker); items/s summed over the workers; p50/p99: publish → \
         receipt, under this flood the queueing delay; srv cpu: the Library's (it fans out); \
         compare with `messages`",
        job.calls, job.workers
    )];
    Ok(row)
}

/// A Redis SET+PUBLISH → the worker's config update, with the driver's own redis-server.
async fn config(job: Job) -> Result<Row> {
    let redis = crate::config::Redis::start()?;
    let mut args = job.child_args("cluster");
    args.extend(["--redis".into(), redis.url.clone()]);
    let mut master = Proc::spawn(args, None)?;
    let done = master.finish_within(time_limit(&job)).await?;
    done.check()?;
    let mut row = Row::calls(job, &done.reports, job.workers)?;
    row.details = vec![format!(
        "{} changes 20 ms apart, SET+PUBLISH → the worker's SharedConfig update; p50/p99: the \
         slowest worker's (calls/s: changes seen per second, paced by the sender)",
        job.calls.clamp(1, 100)
    )];
    Ok(row)
}

/// A server process and `job.workers` measuring clients (roles `{kind}-server`,
/// `{kind}-client`): the floor, or plain tarpc.
async fn pair(job: Job, kind: &str) -> Result<Row> {
    let socket = SocketPath::new()?;
    let mut server_args = job.child_args(&format!("{kind}-server"));
    server_args.extend(["--socket".into(), socket.0.display().to_string()]);
    let mut server = Proc::spawn(server_args, None)?;
    let listening = tokio::time::timeout(Duration::from_secs(10), server.next_line()).await;
    match listening {
        Ok(Ok(Some(line))) if line == "LISTENING" => {}
        _ => bail!("the {kind} server did not start"),
    }
    let mut clients = Vec::new();
    for _ in 0..job.workers {
        let mut client_args = job.child_args(&format!("{kind}-client"));
        client_args.extend(["--socket".into(), socket.0.display().to_string()]);
        clients.push(Proc::spawn(client_args, Some(server.pid))?);
    }
    let limit = time_limit(&job);
    let finished =
        futures::future::join_all(clients.iter_mut().map(|c| c.finish_within(limit))).await;
    let mut reports = Vec::new();
    for client in finished {
        reports.extend(client?.reports);
    }
    server.finish_within(Duration::from_secs(10)).await?;
    Row::calls(job, &reports, job.workers)
}

/// Spawning the master → the first worker's line printed once `cluster_ready()` resolved,
/// median of 10 fresh clusters.
async fn startup(job: Job) -> Result<Row> {
    let (mut ready, mut stopped) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let mut master = Proc::spawn(job.child_args("cluster"), None)?;
        let done = master.finish_within(time_limit(&job)).await?;
        done.check()?;
        let line = done.reports.first().context("no ready line")?;
        ready.push(line.at);
        stopped.push(done.exited);
    }
    let (ready_median, stopped_median) = (median(&mut ready), median(&mut stopped));
    Ok(Row::metric(
        job,
        Metric::StartupMs {
            median_ms: ms(ready_median),
            samples_ms: ready.iter().map(|d| ms(*d)).collect(),
        },
        vec![format!(
            "spawn → ready: min {:.1} ms, max {:.1} ms; spawn → master exited (start + stop): median {:.1} ms",
            ms(ready[0]),
            ms(ready[ready.len() - 1]),
            ms(stopped_median),
        )],
    ))
}

async fn rss(job: Job) -> Result<Row> {
    let reports = run_cluster(&job).await?;
    let report = reports.first().context("no memory line")?;
    let total = report.num("rss_kib")? as u64;
    let pss = report.num("pss_kib")? as u64;
    let anon = report.num("anon_kib")? as u64;
    let file = report.num("file_kib")? as u64;
    let procs = report.get("procs").unwrap_or("?").replace(',', ", ");
    Ok(Row::metric(
        job,
        Metric::RssKib { total_kib: total },
        vec![format!(
            "VmRSS KiB: {procs}; of the total, {anon} KiB anonymous and {file} KiB file-backed \
             (the binary's text, the same pages in each process); PSS total {pss} KiB (shared \
             pages counted once)"
        )],
    ))
}

/// Library SIGKILLed → first successful call, once per fresh cluster (the first restart of a
/// process is immediate; later ones in a row back off), median of 5.
async fn recovery(job: Job) -> Result<Row> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let reports = run_cluster(&job).await?;
        let us = reports
            .first()
            .context("no recovery line")?
            .num("recovery_us")?;
        samples.push(Duration::from_secs_f64(us / 1e6));
    }
    let typical = median(&mut samples);
    Ok(Row::metric(
        job,
        Metric::RecoveryMs {
            median_ms: ms(typical),
            samples_ms: samples.iter().map(|d| ms(*d)).collect(),
        },
        vec![format!(
            "kill → first call served by the new Library: min {:.1} ms, max {:.1} ms",
            ms(samples[0]),
            ms(samples[samples.len() - 1])
        )],
    ))
}

/// Runs one cluster to its end; its `BENCH` reports, or why there are none.
async fn run_cluster(job: &Job) -> Result<Vec<Report>> {
    let mut master = Proc::spawn(job.child_args("cluster"), None)?;
    let done = master.finish_within(time_limit(job)).await?;
    done.check()?;
    Ok(done.reports)
}

/// Sorts `samples` and returns the middle one.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---- child processes ----

/// A child process of this binary, its stdout read line by line.
struct Proc {
    child: Child,
    pid: i32,
    /// Whether it leads its own process group (killed with it).
    leader: bool,
    lines: Lines<BufReader<ChildStdout>>,
    started: Instant,
}

/// What a child printed and how it ended.
struct Finished {
    reports: Vec<Report>,
    status: ExitStatus,
    /// From spawning to its exit.
    exited: Duration,
}

impl Finished {
    /// The first error a worker reported, or the exit status if it is a failure.
    fn check(&self) -> Result<()> {
        if let Some(e) = self.reports.iter().find_map(|r| r.error.as_deref()) {
            bail!("{e}");
        }
        ensure!(
            self.status.success(),
            "the {} (see its log above)",
            describe(self.status)
        );
        Ok(())
    }
}

impl Proc {
    /// Starts this binary with `args`, in a new process group or in the group `group`.
    fn spawn(args: Vec<String>, group: Option<i32>) -> Result<Proc> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(group.unwrap_or(0))
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn,tarpc=off");
        }
        let started = Instant::now();
        let mut child = cmd.spawn().context("starting a child")?;
        let pid = child.id().context("a child without a pid")? as i32;
        let stdout = child.stdout.take().context("a child without stdout")?;
        Ok(Proc {
            child,
            pid,
            leader: group.is_none(),
            lines: BufReader::new(stdout).lines(),
            started,
        })
    }

    /// The next line the child (or any process of its group) printed.
    async fn next_line(&mut self) -> Result<Option<String>> {
        Ok(self.lines.next_line().await?)
    }

    /// Reads every line to the end, then waits for the exit. After `limit`, asks the child to
    /// stop (a master then stops its cluster and removes its runtime directory), and kills the
    /// group 5 s later.
    async fn finish_within(&mut self, limit: Duration) -> Result<Finished> {
        match tokio::time::timeout(limit, self.finish()).await {
            Ok(finished) => finished,
            Err(_) => {
                self.signal(Signal::SIGTERM);
                let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                self.kill();
                let _ = self.child.wait().await;
                bail!("timed out after {} s: stopped", limit.as_secs())
            }
        }
    }

    async fn finish(&mut self) -> Result<Finished> {
        let mut reports = Vec::new();
        while let Some(line) = self.lines.next_line().await? {
            match line.strip_prefix("BENCH ") {
                Some(report) => reports.push(Report::parse(report, self.started.elapsed())),
                None => eprintln!("{line}"),
            }
        }
        let status = self.child.wait().await?;
        Ok(Finished {
            reports,
            status,
            exited: self.started.elapsed(),
        })
    }

    /// SIGKILL to the child's whole group (or to the child alone if it leads none).
    fn kill(&mut self) {
        if self.leader {
            let _ = nix::sys::signal::killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        } else {
            self.signal(Signal::SIGKILL);
        }
    }

    /// `signal` to the child alone.
    fn signal(&self, signal: Signal) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Whatever the path: nothing of this child's group survives it. (Children of a master
        // that died are reaped by init; the master itself by tokio's orphan reaper.)
        if self.leader {
            self.kill();
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("child exited with code {code}"),
        (_, Some(signal)) => format!("child was killed by signal {signal}"),
        _ => format!("child ended: {status}"),
    }
}

/// A unique socket path for a floor server, removed at drop.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new() -> Result<SocketPath> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("dispatch-bench-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Ok(SocketPath(path))
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One `BENCH key=value … [error=message]` line.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    fields: Vec<(String, String)>,
    /// What a worker could not measure.
    pub(crate) error: Option<String>,
    /// When the driver read it, from the child's spawn.
    pub(crate) at: Duration,
}

impl Report {
    fn parse(line: &str, at: Duration) -> Report {
        let (fields, error) = match line.split_once("error=") {
            Some((head, error)) => (head, Some(error.to_owned())),
            None => (line, None),
        };
        let fields = fields
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Report { fields, error, at }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric field.
    pub(crate) fn num(&self, key: &str) -> Result<f64> {
        self.get(key)
            .with_context(|| format!("a result line without {key}"))?
            .parse()
            .with_context(|| format!("{key} is not a number"))
    }
}

// ---- --pin ----

/// Pins this process, and so every process it starts, to `cpu`: re-executes the driver under
/// `taskset` (the root package's `nix` has no `sched` feature for `sched_setaffinity`), then
/// checks the affinity it got.
fn pin(cpu: usize) -> Result<()> {
    const MARK: &str = "DISPATCH_BENCH_PINNED";
    let cpu = cpu.to_string();
    if std::env::var(MARK).ok().as_deref() != Some(cpu.as_str()) {
        let exe = std::env::current_exe()?;
        let error = std::process::Command::new("taskset")
            .args(["--cpu-list", &cpu])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(MARK, &cpu)
            .exec();
        bail!("--pin needs taskset (util-linux): {error}");
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or("?");
    ensure!(
        allowed == cpu,
        "asked to pin to CPU {cpu}, runs on {allowed}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workloads `bench ARGS` runs, in order.
    fn runs(args: &[&str]) -> Vec<&'static str> {
        let args = Args::parse(args.iter().map(|a| a.to_string())).expect("valid arguments");
        jobs(&args).iter().map(|job| job.workload.name()).collect()
    }

    #[test]
    fn floors_and_plain_tarpc_run_before_what_is_compared_to_them() {
        assert_eq!(runs(&["--workload", "w1"]), ["floor", "tarpc-w1", "w1"]);
        assert_eq!(
            runs(&["--workload", "w2"]),
            ["floor-pipelined", "tarpc-w2", "w2"]
        );
        assert_eq!(
            runs(&[])[..8],
            [
                "floor",
                "floor",
                "floor-pipelined",
                "floor-pipelined",
                "tarpc-w1",
                "tarpc-w2",
                "floor",
                "w1"
            ]
        );
    }

    #[test]
    fn threads_runs_w2_per_library_runtime_and_w3_large_brings_its_floor() {
        let args = Args::parse(["--workload", "threads"].map(String::from).into_iter())
            .expect("valid arguments");
        let labels: Vec<String> = jobs(&args).iter().map(Job::label).collect();
        assert_eq!(
            labels,
            ["w2 lib ct", "w2 lib mt1", "w2 lib mt2", "w2 lib mt4"]
        );
        let args = Args::parse(["--workload", "w3-large"].map(String::from).into_iter())
            .expect("valid arguments");
        let jobs = jobs(&args);
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0].workload, jobs[0].payload),
            (Workload::Floor, 1 << 20)
        );
        assert_eq!((jobs[0].calls, jobs[0].warmup), (200, 20));
        assert_eq!(
            (jobs[1].workload, jobs[1].payload),
            (Workload::W3Large, 1 << 20)
        );
    }
}
