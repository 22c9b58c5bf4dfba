//! Seed 001's weather example, once per fleet: every worker needs the weather of a third-party
//! API, refreshed every 30 minutes. Fetched N times (once per worker) it costs N calls; Egg's
//! agent makes it one per host. Here it is one per **fleet**: the refresh is a fleet-wide
//! schedule running in one host's Library per tick (claimed in the fleet's Redis), which writes
//! the result to a Redis key and publishes it; every host's Library follows that key (config
//! sync) and hands each new value to its workers.
//!
//! ```sh
//! redis-server --port 6379 &
//! # two "hosts" (two clusters on one machine), refreshing every 2 s for the demo:
//! cargo run --example schedule -- --host a --every-ms 2000 &
//! cargo run --example schedule -- --host b --every-ms 2000 &
//! # host a: fetched the weather of Paris (tick 1796142400000): 14.2 °C
//! # host a worker 0 reads v2: Paris 14.2 °C, fetched by host a
//! # host b worker 1 reads v2: Paris 14.2 °C, fetched by host a     (and every other worker)
//! ```
//!
//! The upstream API is simulated (`fetch_weather`): swap in an HTTP call.

use anyhow::Result;
use dispatch::prelude::*;
use dispatch::{Schedule, Target};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const KEY: &str = "weather:paris";
const CHANNEL: &str = "weather:paris";

/// What every worker reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Weather {
    city: String,
    /// `None` until the first refresh.
    celsius: Option<f64>,
    /// The tick of the refresh that fetched it (0: nothing fetched yet).
    tick: u64,
    fetched_by: String,
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The third-party API, simulated: a temperature that moves with time.
async fn fetch_weather(tick: u64) -> Result<f64> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let minutes = (tick / 60_000) % 1440;
    Ok(
        ((minutes as f64 / 1440.0 * std::f64::consts::TAU).sin() * 8.0 + 12.0 * 10.0).round()
            / 10.0,
    )
}

/// The refresh: fetch once, write the key, tell every host's Library.
async fn refresh(url: String, host: String, tick: u64) -> Result<()> {
    let celsius = fetch_weather(tick).await?;
    let weather = Weather {
        city: "Paris".into(),
        celsius: Some(celsius),
        tick,
        fetched_by: host.clone(),
    };
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("SET")
        .arg(KEY)
        .arg(serde_json::to_string(&weather)?)
        .query_async::<()>(&mut conn)
        .await?;
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg("changed")
        .query_async::<i64>(&mut conn)
        .await?;
    println!("host {host}: fetched the weather of Paris (tick {tick}): {celsius} °C");
    Ok(())
}

fn main() -> Result<()> {
    let url = arg("--redis").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let host = arg("--host").unwrap_or_else(|| "a".into());
    let every = Duration::from_millis(arg("--every-ms").map_or(Ok(30 * 60 * 1000), |v| v.parse())?);
    let workers = arg("--workers").map_or(Ok(2), |n| n.parse())?;
    let (task_url, task_host) = (url.clone(), host.clone());
    let nothing_yet = Weather {
        city: "Paris".into(),
        celsius: None,
        tick: 0,
        fetched_by: String::new(),
    };
    Cluster::new()
        .name("weather")
        .workers(workers)
        .fleet(url.clone())
        .fleet_host(host.clone())
        .shared_config(ConfigSource::<Weather>::redis(url, KEY, CHANNEL).fallback(nothing_yet))
        .schedule(
            Schedule::every("refresh-weather", every)
                .on(Target::Library)
                .fleet_wide()
                .immediate(true)
                .timeout(Duration::from_secs(10))
                .run(move |ctx| refresh(task_url.clone(), task_host.clone(), ctx.tick())),
        )
        .run(move |worker: Worker| async move {
            let mut versions = SharedConfig::<Weather>::get().watch();
            loop {
                tokio::select! {
                    Some(w) = versions.next() => match w.value.celsius {
                        Some(celsius) => println!(
                            "host {host} worker {} reads v{}: {} {celsius} °C, fetched by host {}",
                            worker.id(),
                            w.version,
                            w.value.city,
                            w.value.fetched_by
                        ),
                        None => println!("host {host} worker {}: no weather yet", worker.id()),
                    },
                    () = worker.shutdown() => return Ok::<_, anyhow::Error>(()),
                }
            }
        })?;
    Ok(())
}
