//! The whole model in one file: a Library hosting `Demo` and a stateful `Counter`, N workers
//! calling them. Run with `cargo run --example dispatch [-- --workers N]`.

use anyhow::Result;
use dispatch::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// A stateless service.
#[derive(Debug)]
pub struct Demo;

impl Demo {
    async fn start() -> Result<Demo, std::convert::Infallible> {
        println!("library: pid {}, services starting", std::process::id());
        Ok(Demo)
    }
}

#[library_service(init = Demo::start)]
impl Demo {
    /// The service's name.
    pub async fn get_name(&self) -> String {
        "get name".into()
    }
    /// `a + b`, computed in the Library.
    pub fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// One counter for the whole host: every worker increments the same instance.
#[derive(Debug, Default)]
pub struct Counter {
    value: AtomicU64,
    reported: AtomicU64,
}

#[library_service(close = summary)]
impl Counter {
    /// Adds one and returns the new total.
    pub fn incr(&self) -> u64 {
        self.value.fetch_add(1, Ordering::SeqCst) + 1
    }
    /// A worker tells how many increments it made; the close hook checks the sum.
    pub fn report(&self, increments: u64) {
        self.reported.fetch_add(increments, Ordering::SeqCst);
    }
    fn summary(&self) {
        let (total, sum) = (
            self.value.load(Ordering::SeqCst),
            self.reported.load(Ordering::SeqCst),
        );
        let verdict = if total == sum {
            "one shared instance"
        } else {
            "MISMATCH"
        };
        println!(
            "library: counter total {total} == sum of the workers' increments {sum}: {verdict}"
        );
    }
}

const INCREMENTS: u64 = 3;

fn main() -> Result<()> {
    let workers = std::env::args()
        .skip_while(|a| a != "--workers")
        .nth(1)
        .map_or(Ok(2), |n| n.parse())?;
    Cluster::new()
        .workers(workers)
        .run(|worker: Worker| async move {
            let agent = Agent::get();
            let name = agent.demo().get_name().await?;
            let sum = agent.demo().add(2, 3).await?;
            let mut seen = Vec::new();
            for _ in 0..INCREMENTS {
                seen.push(agent.counter().incr().await?);
            }
            agent.counter().report(INCREMENTS).await?;
            println!(
                "worker {} (pid {}): get_name → {name:?}, add(2, 3) → {sum}, incr → {seen:?}",
                worker.id(),
                worker.pid()
            );
            Ok::<_, anyhow::Error>(())
        })?;
    Ok(())
}
