//! Config sync over Redis, once per host: the Library reads `--key` and re-reads it on every
//! message on `--channel`; every worker prints each version it gets.
//!
//! ```sh
//! redis-server --port 6379 &
//! redis-cli SET app:config '{"greeting":"hello","rate":10}'
//! cargo run --example config_sync -- --redis redis://127.0.0.1:6379 --key app:config \
//!     --channel app:config --workers 2
//! # worker 0 config v1: {"greeting":"hello","rate":10}
//! redis-cli SET app:config '{"greeting":"hi","rate":20}' && redis-cli PUBLISH app:config x
//! # worker 0 config v2: {"greeting":"hi","rate":20}   (and worker 1)
//! ```
//!
//! `--file PATH` reads a JSON or TOML file instead (changes are picked up); `--memory JSON`
//! keeps the config in the Library's memory, and `--set JSON` has worker 0 change it once
//! started (a message to the Library, which validates and publishes it). `--fallback JSON`
//! starts with that value when Redis is unreachable at start.

use anyhow::{Context, Result};
use dispatch::prelude::*;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The application's configuration: whatever does not parse into it is rejected.
#[derive(Debug, Serialize, Deserialize)]
struct AppConfig {
    greeting: String,
    #[serde(default)]
    rate: u32,
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> Result<()> {
    let workers = arg("--workers").map_or(Ok(2), |n| n.parse())?;
    let source = match (arg("--file"), arg("--memory")) {
        (Some(path), _) => ConfigSource::<AppConfig>::file(path),
        (None, Some(json)) => {
            ConfigSource::memory(serde_json::from_str(&json).context("--memory")?)
        }
        (None, None) => ConfigSource::redis(
            arg("--redis").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            arg("--key").unwrap_or_else(|| "app:config".into()),
            arg("--channel").unwrap_or_else(|| "app:config".into()),
        ),
    };
    let source = match arg("--fallback") {
        Some(json) => source.fallback(serde_json::from_str(&json).context("--fallback")?),
        None => source,
    };
    Cluster::new()
        .workers(workers)
        .shared_config(source.validate(|c| match c.greeting.is_empty() {
            true => Err("the greeting is empty".into()),
            false => Ok(()),
        }))
        .run(|worker: Worker| async move {
            // Here before any code of the worker runs: the config is already there.
            let config = SharedConfig::<AppConfig>::get();
            let mut versions = config.watch();
            if let (0, Some(json)) = (worker.id(), arg("--set")) {
                config.set(serde_json::from_str(&json)?)?;
            }
            loop {
                tokio::select! {
                    Some(config) = versions.next() => println!(
                        "worker {} config v{}: {}",
                        worker.id(),
                        config.version,
                        serde_json::to_string(&config.value)?
                    ),
                    () = worker.shutdown() => return Ok::<_, anyhow::Error>(()),
                }
            }
        })?;
    Ok(())
}
