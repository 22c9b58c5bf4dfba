//! The `config` workload: how long a configuration change takes from Redis to every worker.
//! The driver starts its own `redis-server`; worker 0 SETs and PUBLISHes `--calls` changes
//! (20 ms apart), each carrying its send time; every worker reports the delay to its update.

use crate::{now_ns, Job};
use anyhow::{bail, ensure, Context, Result};
use dispatch::prelude::*;
use dispatch::{ConfigSource, SharedConfig};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key and the channel.
const KEY: &str = "bench:config";

/// One change: its round and when worker 0 sent it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BenchConfig {
    round: u64,
    sent_ns: u64,
}

/// The cluster's config source, for the job's Redis.
pub(crate) fn source(url: &str) -> ConfigSource<BenchConfig> {
    ConfigSource::redis(url, KEY, KEY)
}

/// A `redis-server` of the driver's, on a free loopback port; killed on drop.
pub(crate) struct Redis {
    child: Child,
    pub(crate) url: String,
}

impl Redis {
    /// Starts it, waits until it answers, and stores round 0.
    pub(crate) fn start() -> Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("the config workload needs redis-server (apt-get install redis-server)")?;
        let redis = Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let first = connect(&redis.url).and_then(|mut conn| {
                set(
                    &mut conn,
                    &BenchConfig {
                        round: 0,
                        sent_ns: 0,
                    },
                    false,
                )
            });
            match first {
                Ok(()) => return Ok(redis),
                Err(_) if Instant::now() < give_up => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => bail!("redis-server did not answer: {e:#}"),
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(url: &str) -> Result<redis::Connection> {
    Ok(redis::Client::open(url)?.get_connection()?)
}

/// SET the key (and PUBLISH the change).
fn set(conn: &mut redis::Connection, value: &BenchConfig, publish: bool) -> Result<()> {
    redis::cmd("SET")
        .arg(KEY)
        .arg(serde_json::to_string(value)?)
        .query::<()>(conn)?;
    if publish {
        redis::cmd("PUBLISH")
            .arg(KEY)
            .arg("changed")
            .query::<i64>(conn)?;
    }
    Ok(())
}

/// A worker's part: worker 0 sends the changes; everyone measures.
pub(crate) async fn work(worker: &Worker, job: &Job, url: &str) -> Result<String> {
    let rounds = job.calls.clamp(1, 100);
    let config = SharedConfig::<BenchConfig>::get();
    let mut versions = config.watch();
    crate::cluster::barrier(job.workers as u64).await?;
    if worker.id() == 0 {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut conn = connect(&url)?;
            for round in 1..=rounds {
                set(
                    &mut conn,
                    &BenchConfig {
                        round,
                        sent_ns: now_ns(),
                    },
                    true,
                )?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut delays = Vec::with_capacity(rounds as usize);
    while delays.len() < rounds as usize {
        let next = tokio::time::timeout(Duration::from_secs(10), versions.next())
            .await
            .context("config changes stopped arriving")?
            .context("the config watch ended")?;
        if next.value.round > 0 {
            delays.push(now_ns().saturating_sub(next.value.sent_ns));
        }
    }
    ensure!(!delays.is_empty(), "no change arrived");
    delays.sort_unstable();
    let at = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    Ok(format!(
        "calls={} secs={:.6} p50_ns={} p99_ns={} peer_cpu_ns=0 own_cpu_ns=0",
        delays.len(),
        started.elapsed().as_secs_f64(),
        at(0.50),
        at(0.99)
    ))
}
