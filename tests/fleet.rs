//! Fleet-wide work on one real `redis-server` (issue 17): three clusters (three masters, as
//! three hosts) share it. A fleet-wide schedule runs each tick on exactly one host, and goes on
//! on another host when the master that ran the last tick is SIGKILLed.
//!
//! `redis-server` must be installed (`.ci/run` installs Debian's package when it is missing).

#![cfg(feature = "redis")]

#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use redis_server::RedisServer;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Cluster, TempPath};

const PERIOD: u64 = 500;
/// `Cluster::fleet_lease` in the fixture.
const LEASE: Duration = Duration::from_secs(2);

fn fixture() -> &'static str {
    env!("CARGO_BIN_EXE_dispatch-schedules-fixture")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `tick -> hosts` of the fleet schedule.
fn runs(record: &str) -> BTreeMap<u64, Vec<String>> {
    runs_of(record, "fleet")
}

/// `tick -> hosts` of schedule `name`.
fn runs_of(record: &str, name: &str) -> BTreeMap<u64, Vec<String>> {
    let mut by_tick: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in record.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(name) {
            continue;
        }
        let tick: u64 = parts.next().and_then(|t| t.parse().ok()).expect("a tick");
        by_tick
            .entry(tick)
            .or_default()
            .push(parts.next().expect("a host").to_owned());
    }
    by_tick
}

#[test]
fn a_fleet_wide_schedule_runs_each_tick_on_one_host_and_survives_its_host() {
    let redis = RedisServer::start();
    let out = TempPath::new("dispatch-fleet-ticks");
    let url = redis.url();
    let mut hosts: BTreeMap<String, Cluster> = ["a", "b", "c"]
        .iter()
        .map(|h| {
            let host = format!("host-{h}");
            let c = Cluster::start_bin(fixture(), &["fleet", &out.as_str(), &url, &host], &[]);
            (host, c)
        })
        .collect();
    for c in hosts.values() {
        c.await_log("cluster ready", 1, Duration::from_secs(60));
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    // The host that ran the latest tick: it holds that tick's claim.
    let record = std::fs::read_to_string(&out.0).expect("the record file");
    let (last_tick, holders) = runs(&record).into_iter().next_back().expect("ticks ran");
    let victim = holders[0].clone();
    let killed_ms = now_ms();
    let cluster = hosts.remove(&victim).expect("the victim");
    let gone = cluster.kill_master(Duration::from_secs(10));
    assert!(gone.is_some(), "processes of {victim} outlived its master");
    std::thread::sleep(Duration::from_secs(20).saturating_sub(started.elapsed()));
    for (_, c) in hosts {
        c.signal(nix::sys::signal::Signal::SIGTERM);
        c.wait(Duration::from_secs(60)).assert_success();
    }

    let record = std::fs::read_to_string(&out.0).expect("the record file");
    let by_tick = runs(&record);
    let twice: Vec<_> = by_tick.iter().filter(|(_, h)| h.len() > 1).collect();
    let (first, last) = (
        *by_tick.keys().next().expect("ticks"),
        *by_tick.keys().next_back().expect("ticks"),
    );
    let missing: Vec<u64> = (first / PERIOD..=last / PERIOD)
        .map(|k| k * PERIOD)
        .filter(|t| !by_tick.contains_key(t))
        .collect();
    let missing_before_kill = missing.iter().filter(|t| **t <= last_tick).count();
    let after: Vec<(&u64, &Vec<String>)> =
        by_tick.range(killed_ms.saturating_sub(PERIOD)..).collect();
    let resumed = after
        .iter()
        .find(|(t, h)| **t >= killed_ms.saturating_sub(PERIOD) && h.iter().all(|h| *h != victim))
        .map(|(t, _)| **t);
    let gap = resumed.map(|t| Duration::from_millis(t.saturating_sub(killed_ms)));
    let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
    for h in by_tick.values().flatten() {
        *per_host.entry(h).or_default() += 1;
    }
    println!(
        "measured: {} ticks over {:?}, {} run twice, {} missing ({} before the kill: {missing:?}); \
         runs per host {per_host:?}; killed {victim} (ran tick {last_tick}); the next tick on \
         another host came {gap:?} after the kill (lease {LEASE:?})",
        by_tick.len(),
        Duration::from_millis(last - first),
        twice.len(),
        missing.len(),
        missing_before_kill,
    );
    assert!(twice.is_empty(), "ticks run on two hosts: {twice:?}");
    assert!(by_tick.len() >= 20, "too few ticks: {}", by_tick.len());
    assert_eq!(
        missing_before_kill, 0,
        "ticks missed while every host was up"
    );
    let gap = gap.expect("no tick ran on another host after the kill");
    assert!(
        gap <= LEASE,
        "ticks resumed {gap:?} after the kill (lease {LEASE:?})"
    );
    assert!(per_host.len() >= 2, "one host ran every tick: {per_host:?}");
}

#[test]
fn a_host_that_loses_the_fleets_redis_stops_claiming_ticks() {
    let mut redis = RedisServer::start();
    let out = TempPath::new("dispatch-fleet-lost");
    let cluster = Cluster::start_bin(
        fixture(),
        &["fleet", &out.as_str(), &redis.url(), "host-alone"],
        &[],
    );
    cluster.await_log("cluster ready", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    redis.kill();
    let killed_ms = now_ms();
    std::thread::sleep(Duration::from_secs(4));
    cluster.await_log("cannot reach the fleet's Redis", 1, Duration::from_secs(30));
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let by_tick = runs(&std::fs::read_to_string(&out.0).unwrap_or_default());
    let before = by_tick.range(..killed_ms).count();
    // A claim sent just before the kill may still be answered: one period of margin.
    let after: Vec<&u64> = by_tick
        .range(killed_ms + PERIOD..)
        .map(|(t, _)| t)
        .collect();
    println!(
        "measured: {before} ticks run before Redis was killed, {} in the 4 s after (claims \
         refused: the host runs no fleet-wide tick it could not claim)",
        after.len()
    );
    assert!(before >= 3, "too few ticks before the kill: {before}");
    assert!(after.is_empty(), "ticks ran without a claim: {after:?}");
}

// ---- fleet singleton -------------------------------------------------------------------------

/// The fixture's singleton lease.
const SINGLETON_LEASE: Duration = Duration::from_secs(1);

fn start_singleton(url: &str, host: &str) -> Cluster {
    Cluster::start_bin(fixture(), &["singleton", "fail", url, host], &[])
}

/// Whether `master`'s Library serves the singleton now (`None`: no answer).
fn active(runtime: &tokio::runtime::Runtime, master: u32) -> Option<bool> {
    use dispatch::admin::{discover, Request, Response};
    runtime.block_on(async {
        let found = discover().ok()?.select(Some(&master.to_string())).ok()?;
        match tokio::time::timeout(
            Duration::from_secs(5),
            found.request(Request::Status { methods: false }),
        )
        .await
        {
            Ok(Ok(Response::Status(status))) => Some(
                status
                    .singletons
                    .iter()
                    .any(|s| s.service == "noop" && s.active),
            ),
            _ => None,
        }
    })
}

/// Polls every host until exactly one is active (and returns it with the time it took),
/// failing at once if two ever are.
fn await_one_leader(
    runtime: &tokio::runtime::Runtime,
    hosts: &BTreeMap<String, Cluster>,
    limit: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let up: Vec<&String> = hosts
            .iter()
            .filter(|(_, c)| active(runtime, c.pid()) == Some(true))
            .map(|(h, _)| h)
            .collect();
        assert!(up.len() <= 1, "two hosts active at once: {up:?}");
        if let [one] = up.as_slice() {
            return ((*one).clone(), started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "no host became active within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fleet_singleton_is_active_on_one_host_and_fails_over_50_times() {
    let redis = RedisServer::start();
    let url = redis.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut next = 0;
    let mut hosts: BTreeMap<String, Cluster> = BTreeMap::new();
    let mut add = |hosts: &mut BTreeMap<String, Cluster>| {
        let host = format!("host-{next}");
        next += 1;
        let c = start_singleton(&url, &host);
        c.await_log("cluster ready", 1, Duration::from_secs(60));
        hosts.insert(host, c);
    };
    for _ in 0..3 {
        add(&mut hosts);
    }
    let (mut leader, took) = await_one_leader(&runtime, &hosts, Duration::from_secs(30));
    println!("measured: first election: {leader} active after {took:?}");
    // A standby host's call fails with the typed error naming the leader.
    let standby = hosts
        .keys()
        .find(|h| **h != leader)
        .expect("a standby")
        .clone();
    hosts[&standby].await_stdout("RESULT not_leader", 1, Duration::from_secs(30));
    hosts[&leader].await_stdout("RESULT served", 1, Duration::from_secs(30));
    let said = hosts[&standby].stdout();
    assert!(
        said.contains(&format!("RESULT not_leader leader={leader}")),
        "the standby's NotLeader does not name {leader}: {said}"
    );
    // A one-way call on the standby is queued, and its refusal logged by the standby's Library
    // as the call's failure (a one-way call has no reply to carry it).
    hosts[&standby].await_stdout("RESULT oneway_queued", 1, Duration::from_secs(30));
    hosts[&standby].await_log("one-way call noop.poke from", 1, Duration::from_secs(30));

    let mut takeovers = Vec::new();
    for round in 0..50 {
        let victim = hosts.remove(&leader).expect("the leader");
        let killed = Instant::now();
        assert!(
            victim.kill_master(Duration::from_secs(10)).is_some(),
            "{leader} left survivors"
        );
        let (new, _) = await_one_leader(&runtime, &hosts, Duration::from_secs(30));
        let took = killed.elapsed();
        assert_ne!(
            new, leader,
            "round {round}: the dead host still shows active"
        );
        takeovers.push(took);
        leader = new;
        add(&mut hosts);
    }
    takeovers.sort();
    let worst = takeovers.last().copied().unwrap_or_default();
    println!(
        "measured: 50 SIGKILLs of the leader, never two active; takeover median {:?}, worst \
         {worst:?} (lease {SINGLETON_LEASE:?}: a standby looks again when the lease runs out)",
        takeovers[takeovers.len() / 2]
    );
    // Bound: the lease after the last renewal, a tenth of it for the standby to try, and the
    // status polling; wide for a busy machine.
    assert!(worst < SINGLETON_LEASE * 10, "a takeover took {worst:?}");
    for (_, c) in hosts {
        c.signal(nix::sys::signal::Signal::SIGTERM);
        c.wait(Duration::from_secs(60)).assert_success();
    }
}

#[test]
fn with_standby_wait_a_call_waits_for_leadership() {
    let redis = RedisServer::start();
    let url = redis.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut hosts: BTreeMap<String, Cluster> = ["w0", "w1"]
        .iter()
        .map(|h| {
            let c = Cluster::start_bin(fixture(), &["singleton", "wait", &url, h], &[]);
            c.await_log("cluster ready", 1, Duration::from_secs(60));
            (h.to_string(), c)
        })
        .collect();
    let (leader, _) = await_one_leader(&runtime, &hosts, Duration::from_secs(30));
    let standby = hosts
        .keys()
        .find(|h| **h != leader)
        .expect("a standby")
        .clone();
    // The standby's calls wait (here past their 3 s deadline), never NotLeader.
    hosts[&standby].await_stdout("RESULT deadline", 1, Duration::from_secs(30));
    assert!(!hosts[&standby].stdout().contains("not_leader"));
    assert!(!hosts[&standby].stdout().contains("RESULT served"));
    let killed = Instant::now();
    let victim = hosts.remove(&leader).expect("the leader");
    assert!(victim.kill_master(Duration::from_secs(10)).is_some());
    hosts[&standby].await_stdout("RESULT served", 1, Duration::from_secs(30));
    println!(
        "measured: Standby::Wait: the standby's calls waited (deadline), then were served {:?} \
         after the leader's SIGKILL (lease {SINGLETON_LEASE:?})",
        killed.elapsed()
    );
    for (_, c) in hosts {
        c.signal(nix::sys::signal::Signal::SIGTERM);
        c.wait(Duration::from_secs(60)).assert_success();
    }
}

#[test]
fn catch_up_runs_the_latest_missed_tick_once_and_only_when_asked() {
    let redis = RedisServer::start();
    let out = TempPath::new("dispatch-fleet-catchup");
    let args = ["catchup", &out.as_str(), &redis.url(), "host-x"].map(str::to_owned);
    let start = || {
        let c = Cluster::start_bin(
            fixture(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        );
        c.await_log("cluster ready", 1, Duration::from_secs(60));
        c
    };
    let first = start();
    std::thread::sleep(Duration::from_millis(2500));
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.wait(Duration::from_secs(60)).assert_success();
    let stopped_ms = now_ms();
    // The whole "fleet" is down for more than two ticks.
    std::thread::sleep(Duration::from_millis(2600));
    let restart_ms = now_ms();
    let second = start();
    let ready_ms = now_ms();
    std::thread::sleep(Duration::from_millis(1500));
    second.signal(nix::sys::signal::Signal::SIGTERM);
    second.wait(Duration::from_secs(60)).assert_success();

    let record = std::fs::read_to_string(&out.0).expect("the record file");
    let caught = runs_of(&record, "caught");
    let plain = runs_of(&record, "plain");
    let after = |r: &BTreeMap<u64, Vec<String>>| -> BTreeSet<u64> {
        r.keys().copied().filter(|t| *t > stopped_ms).collect()
    };
    // What catch_up added: the ticks `caught` ran after the stop that `plain` did not.
    let extra: Vec<u64> = after(&caught).difference(&after(&plain)).copied().collect();
    let plain_replayed: Vec<u64> = after(&plain)
        .into_iter()
        .filter(|t| *t <= restart_ms)
        .collect();
    println!(
        "measured: down {} ms (ticks every 1 s); catch_up ran {extra:?} (restart at {restart_ms}, \
         ready by {ready_ms}); without catch_up replayed {plain_replayed:?}",
        restart_ms - stopped_ms,
    );
    assert!(caught.values().all(|h| h.len() == 1) && plain.values().all(|h| h.len() == 1));
    assert!(
        plain_replayed.is_empty(),
        "a tick missed while down was replayed without catch_up"
    );
    assert_eq!(
        extra.len(),
        1,
        "catch_up ran {extra:?}: want the latest missed tick, once"
    );
    assert!(
        extra[0] <= ready_ms && extra[0] + 1000 > restart_ms,
        "catch_up ran {extra:?}, not the latest tick before the start"
    );
}
