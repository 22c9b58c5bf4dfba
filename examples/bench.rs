//! Benchmarks of `dispatch`, each next to the physical floor of the machine it runs on.
//!
//! ```text
//! cargo run --release --example bench -- --workload all
//! cargo run --release --example bench -- --workload w1 --pin 0 --json
//! ```
//!
//! Always build with `--release`. Every workload runs in fresh processes: this binary (the
//! *driver*) starts itself again as a cluster (`--role cluster`: a master, which starts the
//! Library and the workers from the same binary), as a raw floor pair (`--role floor-server`,
//! `--role floor-client`) or as a plain tarpc pair (`--role tarpc-server`, `--role tarpc-client`). Workers and floor clients measure and print one `BENCH key=value …`
//! line each on stdout; the driver sums them up and prints a table, or JSON lines with `--json`.
//!
//! | workload          | layout                      | does                                        |
//! |-------------------|-----------------------------|---------------------------------------------|
//! | `floor`           | 1 server + 1 client process | raw length-prefixed ping-pong over a tokio `UnixStream`, 16 B and `--payload` B, 1 in flight, 20,000 rounds after 2,000 |
//! | `floor-pipelined` | 1 server + W clients        | the same with C in flight per client, for S seconds (W, C: w2's) |
//! | `tarpc-w1`        | 1 server + 1 client process | plain tarpc 0.38 (serde_transport, bincode, Unix socket): `get_name()`, as w1 |
//! | `tarpc-w2`        | 1 server + W clients        | plain tarpc: `get_name()`, C in flight per client, as w2 (W, C: w2's) |
//! | `w1`              | Library + 1 worker          | `Demo::get_name()`, 1 in flight, 20,000 calls after 2,000; vs `floor` 16 B and `tarpc-w1` |
//! | `w2`              | Library + 2 workers         | `get_name`, 32 in flight per worker, for S seconds; vs `floor-pipelined` 16 B and `tarpc-w2` |
//! | `threads`         | Library + 2 workers, ×4     | w2's load (workers, in flight, S) against the Library on the current-thread runtime (`w2 lib ct`), then on `Runtime::MultiThread` of 1, 2 and 4 threads (`w2 lib mt1` …): calls/s and CPU per call against the number of Library threads, and the CPUs the bench may use (where the curve flattens) |
//! | `w3`              | Library + 1 worker          | `Demo::echo` of a 4 KiB `ByteBuf`, as w1; vs `floor` 4 KiB |
//! | `w3-large`        | Library + 1 worker          | `Demo::echo` of a 1 MiB `ByteBuf`, 1 in flight, 200 calls after 20; vs `floor` 1 MiB (200 round trips after 20); target: within 2x of the floor's time per call |
//! | `startup`         | master + Library + 2 workers | from spawning the master to cluster ready, median of 10 |
//! | `rss`             | master + Library + 2 workers | sum of VmRSS after 0.5 s of w2's load      |
//! | `recovery`        | Library + 1 worker          | Library SIGKILLed → first successful call, median of 5 fresh clusters |
//! | `messages`        | Library + 2 workers         | `--calls` messenger messages from the Library to every worker: msgs/s, send → receipt |
//! | `stream`          | Library + 2 workers         | `--calls` values published on one keyed subscription both workers hold: items/s, publish → receipt; beside `messages` |
//!
//! Options: `--workload NAME|all` (default `all`), `--workers N` and `--inflight C` (for the
//! multi-worker workloads: w2, threads, floor-pipelined, tarpc-w2, startup, rss), `--duration-secs S` (default 10),
//! `--payload BYTES` (w3 and the large floor; default 4096), `--calls N` / `--warmup N` (default
//! 20,000 / 2,000; not w3-large's), `--pin CPU` (every process of the run on one CPU), `--json`,
//! `--rounds N` (default 1): the whole list of workloads N times over, interleaved (round 1 runs
//! each once, then round 2 …); each row then gives the median of its N rounds for every value,
//! and the ratios (vs floor, vs tarpc) are taken within each round, project row over its peer of
//! the same round, and their median given. Targets are checked on the medians. Each row then
//! also lists its rounds' values (JSON: `rounds`, `round_values`); the rounds' progress goes to
//! stderr.
//!
//! Latencies are per call, from just before the call to its result, counted in a fixed
//! histogram (`measure::Latencies`: 896 buckets, at most 3 % wide, 7 KiB per measuring task, so
//! the bench's own memory does not grow with the calls it makes); a percentile is the upper edge
//! of its bucket. Each
//! call-rate row also gives the CPU time per call of the Library (floor: the server) and of a
//! worker (floor: a client), from `/proc/<pid>/task/*/schedstat`: on a busy machine it is a much
//! steadier comparison than calls/s. Targets from the issue are checked, never asserted; the
//! exit code is 1 only if a workload could not be measured (its row says why).
//!
//! `DISPATCH_BENCH_LIBRARY_THREADS=N` in the environment runs the Library on a multi-thread
//! runtime of N threads (`Cluster::library_runtime`), where each call is its own task. The
//! `threads` workload sets the runtime of each of its rows itself (`--library-threads N` to the
//! cluster, 0 for the current-thread runtime), whatever the environment says.
//!
//! Children log at `warn` unless `RUST_LOG` is set. Each child runs in its own process group,
//! is bounded in time (60 s + 2 × S, then SIGTERM, then SIGKILL to its group) and dies with the
//! driver.

use anyhow::{bail, Context, Result};
use dispatch::prelude::*;
use dispatch::ByteBuf;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[path = "bench/cluster.rs"]
mod cluster;
#[path = "bench/config.rs"]
mod config;
#[path = "bench/driver.rs"]
mod driver;
#[path = "bench/floor.rs"]
mod floor;
#[path = "bench/measure.rs"]
mod measure;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/tarpc_peer.rs"]
mod tarpc_peer;

/// The one service of the benchmark cluster.
#[derive(Debug, Default)]
pub struct Demo {
    arrivals: AtomicU64,
    /// stream: the values of the one key, each its publish time.
    ticks: dispatch::Publisher<(), u64>,
}

#[library_service]
impl Demo {
    /// w1 and w2: the smallest useful call.
    pub async fn get_name(&self) -> String {
        "get name".into()
    }
    /// w3: returns its argument.
    pub async fn echo(&self, data: ByteBuf) -> ByteBuf {
        data
    }
    /// The Library's pid (rss, recovery).
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
    /// A barrier between workers: one more has arrived; returns how many have.
    pub fn arrive(&self) -> u64 {
        self.arrivals.fetch_add(1, Ordering::SeqCst) + 1
    }
    /// How many workers have arrived.
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::SeqCst)
    }
    /// stream: one feed shared by every worker (the key is `()`), each value its publish time.
    #[subscription(buffer = 4096, policy = drop_oldest)]
    pub fn ticks(&self) -> dispatch::Feed<u64> {
        self.ticks.feed(())
    }
    /// stream: publishes `count` values to `ticks`, each carrying its publish time.
    pub fn stream_blast(&self, count: u64) {
        let ticks = self.ticks.clone();
        tokio::spawn(async move {
            for _ in 0..count {
                ticks.publish(&(), now_ns()).await;
            }
        });
    }
    /// messages: sends `count` messages to every worker, each carrying its send time.
    pub fn blast(&self, count: u64) {
        tokio::spawn(async move {
            let messenger = Messenger::get();
            for _ in 0..count {
                if messenger.send_to_app(&TICK, &now_ns()).is_err() {
                    return;
                }
                // Let the control writer drain as we go, as a busy service would.
                tokio::task::yield_now().await;
            }
        });
    }
}

/// messages: one message, its send time (wall clock, ns): comparable across processes.
const TICK: Topic<u64> = Topic::new("bench-tick");

/// Now, in ns since the epoch.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What this process is, from `--role` (absent: the driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Runs the workloads in child processes and prints the results.
    Driver,
    /// A cluster running one workload: its master, Library and workers all have this role.
    Cluster,
    /// The echo side of the floor.
    FloorServer,
    /// The measuring side of the floor.
    FloorClient,
    /// The server of plain tarpc.
    TarpcServer,
    /// The measuring client of plain tarpc.
    TarpcClient,
}

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Workload {
    W1,
    W2,
    W3,
    /// w3 with a 1 MiB payload.
    W3Large,
    /// w2 against the Library on the current-thread runtime, then on 1, 2 and 4 threads.
    Threads,
    Floor,
    FloorPipelined,
    TarpcW1,
    TarpcW2,
    Startup,
    Rss,
    Recovery,
    Messages,
    Stream,
    Config,
}

impl Workload {
    /// Every workload, in the order `all` runs them (floors and plain tarpc first: the others
    /// are compared to them).
    const ALL: [Workload; 15] = [
        Workload::Floor,
        Workload::FloorPipelined,
        Workload::TarpcW1,
        Workload::TarpcW2,
        Workload::W1,
        Workload::W2,
        Workload::Threads,
        Workload::W3,
        Workload::W3Large,
        Workload::Startup,
        Workload::Rss,
        Workload::Recovery,
        Workload::Messages,
        Workload::Stream,
        Workload::Config,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::W1 => "w1",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W3Large => "w3-large",
            Workload::Threads => "threads",
            Workload::Floor => "floor",
            Workload::FloorPipelined => "floor-pipelined",
            Workload::TarpcW1 => "tarpc-w1",
            Workload::TarpcW2 => "tarpc-w2",
            Workload::Startup => "startup",
            Workload::Rss => "rss",
            Workload::Recovery => "recovery",
            Workload::Messages => "messages",
            Workload::Stream => "stream",
            Workload::Config => "config",
        }
    }

    fn parse(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Whether it runs for `--duration-secs` with many calls in flight (otherwise: a fixed
    /// number of calls, one at a time).
    fn pipelined(self) -> bool {
        matches!(
            self,
            Workload::W2 | Workload::Threads | Workload::FloorPipelined | Workload::TarpcW2
        )
    }

    /// Whether `--workers` applies (the others have their fixed layout).
    fn takes_workers(self) -> bool {
        matches!(
            self,
            Workload::W2
                | Workload::Threads
                | Workload::FloorPipelined
                | Workload::TarpcW2
                | Workload::Startup
                | Workload::Rss
                | Workload::Messages
                | Workload::Stream
        )
    }

    /// Whether `--inflight` applies.
    fn takes_inflight(self) -> bool {
        matches!(
            self,
            Workload::W2
                | Workload::Threads
                | Workload::FloorPipelined
                | Workload::TarpcW2
                | Workload::Rss
        )
    }
}

/// The command line. The same in every role: the runtime re-executes this binary with the
/// same arguments for the Library and the workers.
#[derive(Debug, Clone)]
struct Args {
    role: Role,
    /// `None`: all.
    workload: Option<Workload>,
    workers: Option<usize>,
    inflight: Option<usize>,
    duration: Duration,
    payload: usize,
    calls: u64,
    warmup: u64,
    pin: Option<usize>,
    json: bool,
    /// How many times the driver runs the list of workloads (rows: the medians).
    rounds: usize,
    /// Cluster role: the Library's runtime (`--library-threads N`; 0: current-thread), set by
    /// the driver for the `threads` workload. `None`: `DISPATCH_BENCH_LIBRARY_THREADS` decides.
    library_threads: Option<usize>,
    /// The Library's per-method metrics (on unless `--no-metrics`).
    metrics: bool,
    /// config: the driver's redis-server.
    redis: Option<String>,
    /// Floor roles: the server's socket.
    socket: Option<PathBuf>,
    /// Child roles: the driver's pid, to die with it.
    parent: Option<i32>,
}

const USAGE: &str =
    "usage: bench [--workload w1|w2|threads|w3|w3-large|floor|floor-pipelined|tarpc-w1|tarpc-w2|startup|rss|recovery|all] \
[--workers N] [--inflight C] [--duration-secs S] [--payload BYTES] [--calls N] [--warmup N] \
[--rounds N] [--pin CPU] [--json] [--no-metrics] (workloads also: messages, stream, config)";

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
        let mut parsed = Args {
            role: Role::Driver,
            workload: None,
            workers: None,
            inflight: None,
            duration: Duration::from_secs(10),
            payload: 4096,
            calls: 20_000,
            warmup: 2_000,
            pin: None,
            json: false,
            rounds: 1,
            library_threads: None,
            metrics: true,
            redis: None,
            socket: None,
            parent: None,
        };
        while let Some(flag) = args.next() {
            if flag == "--json" {
                parsed.json = true;
                continue;
            }
            if flag == "--no-metrics" {
                parsed.metrics = false;
                continue;
            }
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = || -> Result<u64> {
                value
                    .parse()
                    .with_context(|| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--workload" if value == "all" => parsed.workload = None,
                "--workload" => {
                    parsed.workload = Some(
                        Workload::parse(&value)
                            .with_context(|| format!("unknown workload {value}\n{USAGE}"))?,
                    );
                }
                "--workers" => parsed.workers = Some(number()?.max(1) as usize),
                "--inflight" => parsed.inflight = Some(number()?.max(1) as usize),
                "--duration-secs" => {
                    parsed.duration = value
                        .parse()
                        .ok()
                        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                        .with_context(|| format!("--duration-secs {value}: not a duration"))?;
                }
                "--payload" => parsed.payload = number()? as usize,
                "--calls" => parsed.calls = number()?.max(1),
                "--warmup" => parsed.warmup = number()?,
                "--pin" => parsed.pin = Some(number()? as usize),
                "--rounds" => parsed.rounds = number()?.max(1) as usize,
                "--library-threads" => parsed.library_threads = Some(number()? as usize),
                "--role" => {
                    parsed.role = match value.as_str() {
                        "cluster" => Role::Cluster,
                        "floor-server" => Role::FloorServer,
                        "floor-client" => Role::FloorClient,
                        "tarpc-server" => Role::TarpcServer,
                        "tarpc-client" => Role::TarpcClient,
                        other => bail!("unknown role {other}"),
                    }
                }
                "--socket" => parsed.socket = Some(PathBuf::from(value)),
                "--redis" => parsed.redis = Some(value),
                "--parent" => parsed.parent = Some(number()? as i32),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }

    /// The one workload of a child role.
    fn single_workload(&self) -> Result<Workload> {
        self.workload
            .context("a child role needs --workload with one workload")
    }
}

/// One run of one workload, with every setting resolved: what a child is started with.
#[derive(Debug, Clone, Copy)]
struct Job {
    workload: Workload,
    workers: usize,
    inflight: usize,
    /// Bytes of the call's byte argument (w3) or of a floor frame's body; 0 for `get_name`.
    payload: usize,
    duration: Duration,
    calls: u64,
    warmup: u64,
    /// The Library keeps per-method metrics.
    metrics: bool,
    /// The Library's runtime: `Some(0)` current-thread, `Some(N)` N threads (the `threads`
    /// workload's rows); `None`: as `DISPATCH_BENCH_LIBRARY_THREADS` says.
    library_threads: Option<usize>,
}

impl Job {
    /// `workload` with its own layout, changed by the options that apply to it.
    fn new(workload: Workload, args: &Args) -> Job {
        let (workers, inflight) = match workload {
            Workload::W2
            | Workload::Threads
            | Workload::FloorPipelined
            | Workload::TarpcW2
            | Workload::Rss => (2, 32),
            Workload::Startup | Workload::Messages | Workload::Stream | Workload::Config => (2, 0),
            _ => (1, 1),
        };
        let workers = if workload.takes_workers() {
            args.workers.unwrap_or(workers)
        } else {
            workers
        };
        let inflight = if workload.takes_inflight() {
            args.inflight.unwrap_or(inflight)
        } else {
            inflight
        };
        let payload = match workload {
            Workload::W3 | Workload::Floor | Workload::FloorPipelined => args.payload,
            Workload::W3Large => W3_LARGE_PAYLOAD,
            _ => 0,
        };
        // A 1 MiB round trip costs about a hundred small ones: w3-large makes fewer.
        let (calls, warmup) = match workload {
            Workload::W3Large => (W3_LARGE_CALLS, W3_LARGE_WARMUP),
            _ => (args.calls, args.warmup),
        };
        Job {
            workload,
            workers,
            inflight,
            payload,
            duration: args.duration,
            calls,
            warmup,
            metrics: args.metrics,
            library_threads: None,
        }
    }

    /// The same job with another payload.
    fn with_payload(self, payload: usize) -> Job {
        Job { payload, ..self }
    }

    /// The same job with another count of calls and of warm-up calls.
    fn with_calls(self, calls: u64, warmup: u64) -> Job {
        Job {
            calls,
            warmup,
            ..self
        }
    }

    /// The same job with the Library on `threads` threads (0: the current-thread runtime).
    fn with_library_threads(self, threads: usize) -> Job {
        Job {
            library_threads: Some(threads),
            ..self
        }
    }

    /// The row's name in the table: the workload's, or for a `threads` row which runtime the
    /// Library had (`w2 lib ct`, `w2 lib mt2`).
    fn label(&self) -> String {
        match (self.workload, self.library_threads) {
            (Workload::Threads, Some(0)) => "w2 lib ct".to_owned(),
            (Workload::Threads, Some(n)) => format!("w2 lib mt{n}"),
            (workload, _) => workload.name().to_owned(),
        }
    }

    /// How long the warm-up and the measurement run.
    fn plans(&self) -> (measure::Plan, measure::Plan) {
        if self.workload.pipelined() {
            let warmup = (self.duration / 5).min(Duration::from_secs(1));
            (
                measure::Plan::For(warmup),
                measure::Plan::For(self.duration),
            )
        } else {
            (
                measure::Plan::Calls(self.warmup),
                measure::Plan::Calls(self.calls),
            )
        }
    }

    /// The command line of a child running this job in `role`.
    fn child_args(&self, role: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--role".into(),
            role.into(),
            "--parent".into(),
            std::process::id().to_string(),
            "--workload".into(),
            self.workload.name().into(),
            "--workers".into(),
            self.workers.to_string(),
            "--payload".into(),
            self.payload.to_string(),
            "--duration-secs".into(),
            self.duration.as_secs_f64().to_string(),
            "--calls".into(),
            self.calls.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
        ];
        if self.inflight > 0 {
            args.extend(["--inflight".into(), self.inflight.to_string()]);
        }
        if !self.metrics {
            args.push("--no-metrics".into());
        }
        if let Some(threads) = self.library_threads {
            args.extend(["--library-threads".into(), threads.to_string()]);
        }
        args
    }

    /// The job a child role was started with.
    fn from_child_args(args: &Args) -> Result<Job> {
        let workload = args.single_workload()?;
        Ok(Job {
            payload: args.payload,
            inflight: args.inflight.unwrap_or(0),
            workers: args.workers.unwrap_or(1),
            calls: args.calls,
            warmup: args.warmup,
            library_threads: args.library_threads,
            ..Job::new(workload, args)
        })
    }
}

/// w3-large's payload: 1 MiB, well under the cluster's frame limit (8 MiB by default, less
/// 1 KiB of envelope; the bench cluster keeps the default).
const W3_LARGE_PAYLOAD: usize = 1 << 20;
/// w3-large's measured calls (and its floor's rounds).
const W3_LARGE_CALLS: u64 = 200;
/// w3-large's warm-up calls (and its floor's).
const W3_LARGE_WARMUP: u64 = 20;

/// The Library runtimes the `threads` workload runs w2 against: 0 is the current-thread
/// runtime, N a multi-thread runtime of N threads.
const LIBRARY_THREADS: [usize; 4] = [0, 1, 2, 4];

/// Makes a child die with the driver (it may be killed without a chance to clean up).
fn die_with_parent(parent: Option<i32>) -> Result<()> {
    let Some(parent) = parent else { return Ok(()) };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    // The driver may have died before the line above: then we are already orphaned.
    if nix::unistd::getppid().as_raw() != parent {
        bail!("the driver (pid {parent}) is gone");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.role {
        Role::Driver => driver::run(&args),
        Role::Cluster => cluster::run(&args),
        Role::FloorServer => floor::serve(&args),
        Role::FloorClient => floor::client(&args),
        Role::TarpcServer => tarpc_peer::serve(&args),
        Role::TarpcClient => tarpc_peer::client(&args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
