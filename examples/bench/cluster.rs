//! The cluster role: in the process the driver starts, a master; re-executed by it, the Library
//! and the workers. Each worker runs the job's workload and prints its `BENCH` line, or
//! `BENCH error=…` when it cannot measure.

use crate::measure::{self, Plan};
use crate::{now_ns, DemoAgentExt, Job, Workload, TICK};
use anyhow::{bail, ensure, Context, Result};
use dispatch::prelude::*;
use dispatch::ByteBuf;
use futures::StreamExt;
use std::time::{Duration, Instant};

/// Plays this process's role in the job's cluster. Returns in the master only.
pub(crate) fn run(args: &crate::Args) -> Result<bool> {
    let job = Job::from_child_args(args)?;
    // Only the master is the driver's child; the Library and the workers die with the master.
    // (The runtime marks its children with DISPATCH_ROLE, see the README.)
    if std::env::var_os("DISPATCH_ROLE").is_none() {
        crate::die_with_parent(args.parent)?;
    }
    let redis = args.redis.clone();
    let mut cluster = Cluster::new()
        .workers(job.workers)
        .method_metrics(job.metrics);
    // `DISPATCH_BENCH_LIBRARY_THREADS=N`: the Library on a multi-thread runtime of N threads
    // (each call its own task). Every process of the run inherits it, so they agree. The
    // `threads` workload's `--library-threads N` overrides it (0: the current-thread runtime);
    // every process of the cluster has the same arguments, so they agree too.
    let threads = job.library_threads.or_else(|| {
        std::env::var("DISPATCH_BENCH_LIBRARY_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    });
    if let Some(threads) = threads.filter(|n| *n > 0) {
        cluster = cluster.library_runtime(dispatch::Runtime::MultiThread { threads });
    }
    // The frame limit stays the default (8 MiB, payloads 1 KiB less): w3-large's 1 MiB fits.
    if let (Workload::Config, Some(url)) = (job.workload, &redis) {
        cluster = cluster.shared_config(crate::config::source(url));
    }
    cluster
        .grace_period(Duration::from_secs(2))
        .run(move |worker: Worker| async move {
            worker.cluster_ready().await;
            match work(&worker, &job, redis.as_deref()).await {
                Ok(Some(line)) => {
                    println!("BENCH worker={} {line}", worker.id());
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => {
                    let message = format!("{e:#}").replace('\n', " ");
                    println!("BENCH worker={} error={message}", worker.id());
                    Err(e)
                }
            }
        })?;
    Ok(true)
}

/// One worker's part of the job: the line to print, if this worker prints one.
async fn work(worker: &Worker, job: &Job, redis: Option<&str>) -> Result<Option<String>> {
    match job.workload {
        Workload::W1 | Workload::W2 | Workload::Threads => {
            let name = Agent::get().demo().get_name().await?;
            ensure!(name == "get name", "get_name returned {name:?}");
            timed(job, get_name).await.map(Some)
        }
        Workload::W3 | Workload::W3Large => {
            let payload = ByteBuf::from(vec![0x5a_u8; job.payload]);
            let back = Agent::get().demo().echo(payload.clone()).await?;
            ensure!(back == payload, "echo returned other bytes");
            let echo = move || {
                let payload = payload.clone();
                async move { Agent::get().demo().echo(payload).await.map(drop) }
            };
            timed(job, echo).await.map(Some)
        }
        Workload::Startup => Ok((worker.id() == 0).then(|| "ready=1".to_owned())),
        Workload::Rss => rss(worker, job).await,
        Workload::Recovery => recovery(worker).await.map(Some),
        Workload::Messages => messages(worker, job).await.map(Some),
        Workload::Stream => stream(worker, job).await.map(Some),
        Workload::Config => {
            let url = redis.context("the config workload runs with --redis URL")?;
            crate::config::work(worker, job, url).await.map(Some)
        }
        Workload::Floor | Workload::FloorPipelined | Workload::TarpcW1 | Workload::TarpcW2 => {
            bail!("the floor and plain tarpc run without a cluster")
        }
    }
}

/// `Demo::get_name()`, the reply dropped.
async fn get_name() -> Result<(), dispatch::Error> {
    Agent::get().demo().get_name().await.map(drop)
}

/// Warms up, then measures `call` as the job says.
async fn timed<F, Fut>(job: &Job, call: F) -> Result<String>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), dispatch::Error>> + Send + 'static,
{
    let library = Agent::get().demo().pid().await?;
    let (warmup, plan) = job.plans();
    measure::calls(job.inflight, warmup, call.clone()).await?;
    let cpu = measure::CpuMeter::start(library)?;
    let measured = measure::calls(job.inflight, plan, call).await?;
    Ok(format!("{} {}", measured.line(), cpu.line()?))
}

/// Memory at steady state: every worker runs w2's load for a while; then worker 0 reads the
/// RSS of every process of the cluster while the others wait (a barrier in the Library).
async fn rss(worker: &Worker, job: &Job) -> Result<Option<String>> {
    measure::calls(
        job.inflight,
        Plan::For(Duration::from_millis(500)),
        get_name,
    )
    .await?;
    let demo = || Agent::get().demo();
    let workers = job.workers as u64;
    if worker.id() != 0 {
        demo().arrive().await?;
        wait_for_arrivals(workers).await?; // worker 0 has measured
        return Ok(None);
    }
    wait_for_arrivals(workers - 1).await?;
    let library = demo().pid().await?;
    let line = cluster_memory(library)?;
    demo().arrive().await?;
    Ok(Some(line))
}

/// Arrives and waits until `workers` have.
pub(crate) async fn barrier(workers: u64) -> Result<()> {
    Agent::get().demo().arrive().await?;
    wait_for_arrivals(workers).await
}

async fn wait_for_arrivals(n: u64) -> Result<()> {
    let give_up = Instant::now() + Duration::from_secs(30);
    while Agent::get().demo().arrivals().await? < n {
        ensure!(
            Instant::now() < give_up,
            "the other workers did not reach the barrier"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// `rss_kib=… pss_kib=… anon_kib=… file_kib=… procs=master:KiB,library:KiB,worker:KiB…` for the
/// master (our parent) and each of its children. `file_kib` is the file-backed part of the RSS
/// (mostly this binary's text, the same pages in every process), `anon_kib` the rest.
fn cluster_memory(library: u32) -> Result<String> {
    let master = nix::unistd::getppid().as_raw() as u32;
    let mut procs = vec![(master, "master")];
    for pid in children_of(master)? {
        procs.push((pid, if pid == library { "library" } else { "worker" }));
    }
    let (mut rss, mut pss, mut anon, mut file, mut each) = (0, 0, 0, 0, Vec::new());
    for (pid, label) in procs {
        let kib = status_kib(pid, "VmRSS:")?;
        rss += kib;
        anon += status_kib(pid, "RssAnon:")?;
        file += status_kib(pid, "RssFile:")?;
        // PSS shares each shared page among the processes mapping it (the binary's text, 4×).
        pss += rollup_kib(pid, "Pss:").unwrap_or(0);
        each.push(format!("{label}:{kib}"));
    }
    Ok(format!(
        "rss_kib={rss} pss_kib={pss} anon_kib={anon} file_kib={file} procs={}",
        each.join(",")
    ))
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Result<Vec<u32>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited meanwhile
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ppid = after_comm.split_whitespace().nth(1);
        if ppid.and_then(|p| p.parse().ok()) == Some(parent) {
            children.push(pid);
        }
    }
    Ok(children)
}

/// A `KiB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), field)
}

/// A `KiB` field of `/proc/<pid>/smaps_rollup`.
fn rollup_kib(pid: u32, field: &str) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), field)
}

fn kib_field(path: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Kills the Library and times until a call succeeds again, served by another process:
/// `recovery_us=…`. Needs the master to restart the Library; without that the cluster stops,
/// and this says so.
async fn recovery(worker: &Worker) -> Result<String> {
    let killed_pid = Agent::get().demo().pid().await?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .context("killing the library")?;
    let killed = Instant::now();
    loop {
        let probe = Agent::get()
            .demo()
            .with_timeout(Duration::from_secs(1))
            .pid()
            .await;
        match probe {
            Ok(pid) if pid != killed_pid => {
                return Ok(format!("recovery_us={}", killed.elapsed().as_micros()))
            }
            Ok(_) => {} // answered before the kill landed
            Err(e) if worker.is_stopping() => bail!(
                "the cluster is stopping after the Library was killed: it was not restarted \
                 (needs Library failover); last call: {e}"
            ),
            Err(e) if killed.elapsed() > Duration::from_secs(10) => {
                bail!("no successful call within 10 s of killing the Library; last call: {e}")
            }
            // Calls fail at once while the Library is down: retry each millisecond.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// messages: the Library sends `--calls` messages to every worker (`send_to_app`, routed by
/// the master); each worker reports how fast they arrived (first to last) and each one's
/// latency from send to receipt. CPU: the master's, which routes them.
async fn messages(worker: &Worker, job: &Job) -> Result<String> {
    let count = job.calls.max(1);
    let mut ticks = worker.messenger().on(&TICK);
    // Everyone subscribed before the first message is sent.
    barrier(job.workers as u64).await?;
    let master = nix::unistd::getppid().as_raw() as u32;
    let cpu = measure::CpuMeter::start(master)?;
    if worker.id() == 0 {
        Agent::get().demo().blast(count).await?;
    }
    let mut latencies = measure::Latencies::default();
    let mut first = None;
    for _ in 0..count {
        let tick = tokio::time::timeout(Duration::from_secs(30), ticks.next())
            .await
            .context("messages stopped arriving")?
            .context("the subscription ended")?;
        first.get_or_insert_with(Instant::now);
        latencies.record(since_ns(tick.value));
    }
    Ok(format!("{} {}", arrivals(first, latencies), cpu.line()?))
}

/// The `BENCH` figures of values that arrived from `first` until now with these latencies.
fn arrivals(first: Option<Instant>, latencies: measure::Latencies) -> String {
    let elapsed = first.map_or(Duration::from_nanos(1), |f| f.elapsed());
    measure::Measured::new(elapsed, latencies).line()
}

/// Nanoseconds from `sent` (a [`now_ns`] reading of another process) until now.
fn since_ns(sent: u64) -> u32 {
    u32::try_from(now_ns().saturating_sub(sent)).unwrap_or(u32::MAX)
}

/// stream: both workers subscribe to the one key of `Demo::ticks`; the Library publishes
/// `--calls` values (`Demo::stream_blast`); each worker reports how fast they arrived (first to
/// last) and each one's latency from publish to receipt. CPU: the Library's, which fans out.
async fn stream(worker: &Worker, job: &Job) -> Result<String> {
    use futures::StreamExt;
    let count = job.calls.max(1);
    let mut ticks = Agent::get().demo().ticks().await?;
    // Everyone subscribed before the first value is published.
    barrier(job.workers as u64).await?;
    let library = Agent::get().demo().pid().await?;
    let cpu = measure::CpuMeter::start(library)?;
    if worker.id() == 0 {
        Agent::get().demo().stream_blast(count).await?;
    }
    let mut latencies = measure::Latencies::default();
    let (mut first, mut missed) = (None, 0);
    while latencies.len() + missed < count {
        let tick = tokio::time::timeout(Duration::from_secs(30), ticks.next())
            .await
            .context("stream values stopped arriving")?
            .context("the stream ended")?;
        match tick {
            Ok(sent) => {
                first.get_or_insert_with(Instant::now);
                latencies.record(since_ns(sent));
            }
            Err(dispatch::Error::StreamGap { missed: m }) => missed += m,
            Err(e) => return Err(e.into()),
        }
    }
    ensure!(
        missed == 0,
        "this worker missed {missed} values: it read too slowly"
    );
    Ok(format!("{} {}", arrivals(first, latencies), cpu.line()?))
}
