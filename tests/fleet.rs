//! Fleet-wide work on one real `redis-server` (issue 17): three clusters (three masters, as
//! three hosts) share it. A fleet-wide schedule runs each tick on exactly one host, and goes on
//! on another host when the master that ran the last tick is SIGKILLed.
//!
//! `redis-server` must be installed (`.ci/run` installs Debian's package when it is missing).

#![cfg(feature = "redis")]

mod support;
#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;
use std::collections::BTreeMap;
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
    let mut by_tick: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in record.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("fleet") {
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
    let (last_tick, holders) = runs(&record).into_iter().last().expect("ticks ran");
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
        *by_tick.keys().last().expect("ticks"),
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
    assert_eq!(missing_before_kill, 0, "ticks missed while every host was up");
    let gap = gap.expect("no tick ran on another host after the kill");
    assert!(gap <= LEASE, "ticks resumed {gap:?} after the kill (lease {LEASE:?})");
    assert!(per_host.len() >= 2, "one host ran every tick: {per_host:?}");
}
