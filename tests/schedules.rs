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
    let (Some(first), Some(last)) = (by_tick.keys().next(), by_tick.keys().last()) else {
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
    // The Library SIGKILLed; the master restarts it.
    let library = pid_after(&cluster.stderr(), "started the library").expect("the library's pid");
    kill(Pid::from_raw(library), Signal::SIGKILL).expect("kill the library");
    cluster.await_log("library restarted", 1, Duration::from_secs(60));
    let killed = started.elapsed();
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let run_for = started.elapsed();
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
    assert!(one.len() >= 30, "too few ticks ran: {}", one.len());
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
