//! Schedules on one host (issue 17), against real processes: with 4 workers, a one-worker
//! schedule every 200 ms runs exactly once per tick through a rolling reload and a Library
//! SIGKILL in the middle; an every-worker schedule runs on each of the 4 workers per tick; a
//! Library schedule never runs a tick twice. Each run appends `<schedule> <tick> <pid>` to a
//! file (`tests/fixtures/schedules.rs`), which the Library's death cannot lose.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::{pid_after, Cluster, TempPath};

const PERIOD: u64 = 200;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn status(master: u32) -> dispatch::ClusterStatus {
    use dispatch::admin::{discover, Request, Response};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let found = discover()
            .expect("discover")
            .select(Some(&master.to_string()))
            .expect("our cluster");
        match found.request(Request::Status { methods: false }).await {
            Ok(Response::Status(status)) => status,
            other => panic!("status: {other:?}"),
        }
    })
}

/// The address from the master's `metrics on http://ADDR/metrics` line.
fn metrics_addr(cluster: &Cluster) -> String {
    let log = cluster.stderr();
    let at = log.find("metrics on http://").expect("the line") + "metrics on http://".len();
    log[at..].split('/').next().expect("an address").to_owned()
}

/// `GET /metrics`: the body.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .expect("a complete response")
}

/// The value of the sample `name` exactly as written (labels included), if present.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn fixture() -> &'static str {
    env!("CARGO_BIN_EXE_dispatch-schedules-fixture")
}

/// `tick -> pids` of schedule `name`, from the record file.
fn runs(record: &str, name: &str) -> BTreeMap<u64, Vec<String>> {
    let mut by_tick: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in record.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(name) {
            continue;
        }
        let tick: u64 = parts.next().and_then(|t| t.parse().ok()).expect("a tick");
        let who = parts.next().expect("a pid").to_owned();
        by_tick.entry(tick).or_default().push(who);
    }
    by_tick
}

/// The ticks of the 200 ms grid from the first to the last recorded one that no run recorded.
fn missing(by_tick: &BTreeMap<u64, Vec<String>>) -> Vec<u64> {
    let (Some(first), Some(last)) = (by_tick.keys().next(), by_tick.keys().next_back()) else {
        return Vec::new();
    };
    (first / PERIOD..=last / PERIOD)
        .map(|k| k * PERIOD)
        .filter(|t| !by_tick.contains_key(t))
        .collect()
}

#[test]
fn one_worker_ticks_run_once_through_a_reload_and_a_library_kill() {
    let out = TempPath::new("dispatch-schedules-host");
    let cluster = Cluster::start_bin(fixture(), &["host", &out.as_str()], &[]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(60));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    // A rolling reload: every worker replaced, one at a time.
    cluster.signal(Signal::SIGHUP);
    cluster.await_log("reload complete", 1, Duration::from_secs(60));
    let reloaded = started.elapsed();
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    // The Library SIGKILLed; the master restarts it.
    let library = pid_after(&cluster.stderr(), "started the library").expect("the library's pid");
    kill(Pid::from_raw(library), Signal::SIGKILL).expect("kill the library");
    cluster.await_log("library restarted", 1, Duration::from_secs(60));
    let killed = started.elapsed();
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let run_for = started.elapsed();
    // What operators see: `dispatchctl status --schedules` and the Prometheus counters.
    let status = status(cluster.pid());
    let body = scrape(&metrics_addr(&cluster));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();

    let record = std::fs::read_to_string(&out.0).expect("the record file");
    let one = runs(&record, "one");
    let twice: Vec<_> = one.iter().filter(|(_, w)| w.len() > 1).collect();
    let missed = missing(&one);
    let all = runs(&record, "all");
    let dup_all: Vec<_> = all
        .iter()
        .filter(|(_, w)| w.iter().collect::<BTreeSet<_>>().len() != w.len())
        .collect();
    let four = all.values().filter(|w| w.len() == 4).count();
    let lib = runs(&record, "lib");
    let dup_lib: Vec<_> = lib.iter().filter(|(_, w)| w.len() > 1).collect();
    println!(
        "measured: {:?} run (reload done at {reloaded:?}, library killed at {killed:?}): \
         one-worker {} ticks, {} run twice, {} missing; every-worker {} ticks, {} with 4 runs, \
         {} with a duplicate; library {} ticks, {} run twice, {} missing (ticks falling while \
         the Library restarts wait for it only until the next tick)",
        run_for,
        one.len(),
        twice.len(),
        missed.len(),
        all.len(),
        four,
        dup_all.len(),
        lib.len(),
        dup_lib.len(),
        missing(&lib).len(),
    );
    for s in &status.schedules {
        println!(
            "measured: status of `{}` ({}, {}): {} runs, {} failed, {} skipped, {} missed, last \
             run {:?}, next in {:?} ms",
            s.name,
            s.trigger,
            s.target,
            s.runs,
            s.failures,
            s.skips,
            s.missed,
            s.last_run,
            s.next_run_ms.map(|n| n as i64 - now_ms() as i64)
        );
    }
    let names: BTreeSet<&str> = status.schedules.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["all", "lib", "one"]));
    for s in &status.schedules {
        assert!(s.runs >= 30, "{s:?}");
        let last = s.last_run.as_ref().expect("a last run");
        assert!(
            last.error.is_none() && last.process.contains("pid"),
            "{s:?}"
        );
        assert!(
            s.next_run_ms.is_some_and(|n| n + 1_000 >= now_ms()),
            "{s:?}"
        );
    }
    let one_status = status
        .schedules
        .iter()
        .find(|s| s.name == "one")
        .expect("one");
    let runs_metric = sample(&body, "dispatch_schedule_runs_total{schedule=\"one\"}");
    println!("measured: dispatch_schedule_runs_total{{schedule=\"one\"}} = {runs_metric:?}");
    assert!(
        runs_metric.is_some_and(|n| n >= one_status.runs as f64 - 1.0),
        "{body}"
    );
    assert!(
        body.contains("dispatch_schedule_skips_total{schedule=\"one\",reason=\"missed\"} 0"),
        "{body}"
    );
    assert!(one.len() >= 30, "too few ticks ran: {}", one.len());
    let spread: BTreeSet<&String> = one.values().flatten().collect();
    println!(
        "measured: one-worker ticks ran on {} distinct worker processes",
        spread.len()
    );
    assert!(
        spread.len() >= 4,
        "one-worker ticks not spread over idle workers: {spread:?}"
    );
    assert!(twice.is_empty(), "one-worker ticks run twice: {twice:?}");
    assert!(missed.is_empty(), "one-worker ticks missed: {missed:?}");
    assert!(
        dup_all.is_empty(),
        "a worker ran an every-worker tick twice: {dup_all:?}"
    );
    assert!(
        all.values().all(|w| w.len() <= 4),
        "more than 4 runs of a tick"
    );
    // Each tick on every ready worker: 4, except a tick falling exactly as a reload swaps a
    // worker or as the cluster stops.
    assert!(
        four * 10 >= all.len() * 8,
        "{four} of {} ticks ran on 4 workers",
        all.len()
    );
    assert!(dup_lib.is_empty(), "library ticks run twice: {dup_lib:?}");
}

/// `tick -> ms late` of schedule `name`.
fn lateness(record: &str, name: &str) -> Vec<(u64, u64)> {
    record
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(name)).then_some(())?;
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn options_overlap_timeout_panic_cron_immediate_and_jitter() {
    let out = TempPath::new("dispatch-schedules-options");
    let cluster = Cluster::start_bin(fixture(), &["options", &out.as_str()], &[]);
    cluster.await_log("cluster ready", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let status = status(cluster.pid());
    cluster.signal(Signal::SIGTERM);
    cluster.wait(Duration::from_secs(60)).assert_success();
    let record = std::fs::read_to_string(&out.0).expect("the record file");
    let of = |name: &str| {
        status
            .schedules
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no schedule {name}"))
    };
    for s in &status.schedules {
        println!(
            "measured: `{}` {}: {} runs, {} failed, {} skipped, {} missed, {} going, last {:?}",
            s.name, s.trigger, s.runs, s.failures, s.skips, s.missed, s.running, s.last_run
        );
    }
    // Skip: a 500 ms run every 200 ms leaves out the ticks that fall while it goes.
    let slow = of("slow");
    assert!(slow.runs >= 3 && slow.skips >= slow.runs, "{slow:?}");
    // Allow: every tick runs, overlapping.
    let allow = of("allow");
    assert!(
        allow.skips == 0 && allow.runs >= 15 && allow.running >= 2,
        "{allow:?}"
    );
    // Timeout: every run cancelled after 100 ms and counted failed.
    let timeout = of("timeout");
    let last = timeout.last_run.as_ref().expect("a timed-out run");
    assert!(
        last.error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{timeout:?}"
    );
    assert!(
        timeout.failures >= 10 && timeout.failures + 1 >= timeout.runs,
        "{timeout:?}"
    );
    // Panic: a failed run, the process lives on.
    let panics = of("panics");
    assert!(
        panics.failures >= 10
            && panics.last_run.as_ref().and_then(|l| l.error.as_deref()) == Some("panicked"),
        "{panics:?}"
    );
    // Cron in a time zone, seconds field: whole seconds, once per worker per tick.
    let cron = runs(&record, "cron");
    assert!(cron.len() >= 3, "{cron:?}");
    assert!(cron.keys().all(|t| t % 1000 == 0), "{cron:?}");
    assert!(cron.values().all(|w| w.len() <= 2), "{cron:?}");
    // Immediate: one run at start of an hourly schedule.
    assert_eq!(of("once").runs, 1);
    assert_eq!(runs(&record, "once").len(), 1);
    // A run whose process dies: run and failed, never run again (the worker is restarted).
    let dies = of("dies");
    assert_eq!(
        runs(&record, "dies").values().map(Vec::len).sum::<usize>(),
        1
    );
    assert!(
        dies.runs == 1
            && dies.failures == 1
            && dies
                .last_run
                .as_ref()
                .and_then(|l| l.error.as_deref())
                .is_some_and(|e| e.contains("exited during the run")),
        "{dies:?}"
    );
    // Jitter: each run up to 300 ms after its tick (plus scheduling delay), ticks on the grid.
    let jitter = lateness(&record, "jitter");
    let worst = jitter.iter().map(|(_, late)| *late).max().unwrap_or(0);
    let spread: BTreeSet<u64> = jitter.iter().map(|(_, late)| late / 50).collect();
    println!("measured: jitter 300 ms: {} runs, latest {worst} ms after its tick, {} distinct 50 ms bins", jitter.len(), spread.len());
    assert!(jitter.len() >= 8, "{jitter:?}");
    assert!(jitter.iter().all(|(t, _)| t % 400 == 0), "{jitter:?}");
    assert!(worst < 300 + 2_000, "a jittered run came {worst} ms late");
    assert!(spread.len() >= 2, "no jitter seen: {jitter:?}");
    let ticks: BTreeSet<u64> = jitter.iter().map(|(t, _)| *t).collect();
    assert_eq!(ticks.len(), jitter.len(), "a jittered tick ran twice");
}
