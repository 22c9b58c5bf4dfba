//! `examples/schedule.rs` run as a user runs it (issue 17): two "hosts" (two clusters) on one
//! real `redis-server`, refreshing seed 001's weather every second. Each tick is fetched by one
//! host only, and every worker of both hosts reads the refreshed value through config sync.

#![cfg(feature = "redis")]

#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use nix::sys::signal::Signal;
use redis_server::RedisServer;
use std::collections::BTreeMap;
use std::time::Duration;
use support::{example, Cluster};

#[test]
fn the_weather_is_fetched_once_per_tick_in_the_fleet_and_read_by_every_worker() {
    let redis = RedisServer::start();
    let url = redis.url();
    let hosts: Vec<Cluster> = ["a", "b"]
        .iter()
        .map(|h| {
            let c = Cluster::start_bin(
                example("schedule"),
                &[
                    "--redis",
                    &url,
                    "--host",
                    h,
                    "--every-ms",
                    "1000",
                    "--workers",
                    "2",
                ],
                &[],
            );
            c.await_log("cluster ready", 1, Duration::from_secs(60));
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let mut out = String::new();
    for c in hosts {
        c.signal(Signal::SIGTERM);
        let run = c.wait(Duration::from_secs(60));
        run.assert_success();
        out.push_str(&run.stdout);
    }
    // "host a: fetched the weather of Paris (tick 1796142263000): 11.3 °C"
    let mut fetched: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in out.lines().filter(|l| l.contains("fetched the weather")) {
        let host = line.split(':').next().unwrap_or_default().to_owned();
        let tick = line
            .split("(tick ")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .and_then(|t| t.parse().ok())
            .expect("a tick");
        fetched.entry(tick).or_default().push(host);
    }
    let twice: Vec<_> = fetched.iter().filter(|(_, h)| h.len() > 1).collect();
    // Each worker of each host printed the value fetched by some host.
    let readers = [
        "host a worker 0",
        "host a worker 1",
        "host b worker 0",
        "host b worker 1",
    ]
    .iter()
    .filter(|w| {
        out.lines()
            .any(|l| l.starts_with(*w) && l.contains("fetched by host"))
    })
    .count();
    println!(
        "measured: {} ticks fetched in 5 s by two hosts, {} fetched twice; {readers} of 4 workers \
         read a fetched value; fetches {:?}",
        fetched.len(),
        twice.len(),
        fetched
    );
    assert!(twice.is_empty(), "ticks fetched twice: {twice:?}");
    assert!(fetched.len() >= 3, "too few refreshes: {fetched:?}");
    assert_eq!(readers, 4, "{out}");
}
