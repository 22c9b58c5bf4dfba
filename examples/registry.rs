//! A service-registry client held once per host, the use case of Egg.js's `cluster-client`:
//! the Library holds the one connection to the registry (simulated here) and opens ONE
//! upstream watch per service name, however many workers subscribe to it; every worker
//! subscribed to a name gets every change of its addresses, a late one the current list first;
//! the last worker leaving a name closes its upstream watch. Kill the Library
//! (`kill -9 <library pid>`) while it runs: the workers' streams go on after a
//! `StreamResumed` notice, without code of their own.
//!
//! ```text
//! cargo run --example registry [-- --workers 4 --seconds 3]
//! ```

use dispatch::prelude::*;
use dispatch::{Feed, Publisher};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The registry upstream, simulated: service name → addresses, changed by `tick`.
#[derive(Debug, Default)]
struct Upstream {
    services: Mutex<HashMap<String, Vec<String>>>,
}

impl Upstream {
    /// The addresses of `name` now.
    fn lookup(&self, name: &str) -> Vec<String> {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services.get(name).cloned().unwrap_or_default()
    }

    /// One change upstream: generation `n` of `name`'s addresses.
    fn tick(&self, name: &str, n: u64) -> Vec<String> {
        let addresses: Vec<String> = (0..1 + n % 3)
            .map(|i| format!("10.0.{}.{}:5432", n % 7, 10 + i))
            .collect();
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services.insert(name.to_owned(), addresses.clone());
        addresses
    }
}

/// The registry client: one per host, in the Library.
#[derive(Debug, Default)]
pub struct Registry {
    upstream: Arc<Upstream>,
    addresses: Publisher<String, Vec<String>>,
}

async fn connect() -> Result<Registry, std::convert::Infallible> {
    let registry = Registry::default();
    // The simulated upstream changes a service's addresses every 250 ms and notifies the
    // watches open on it (a real client would get these from the registry's own push).
    let (upstream, addresses) = (Arc::clone(&registry.upstream), registry.addresses.clone());
    tokio::spawn(async move {
        for n in 1.. {
            tokio::time::sleep(Duration::from_millis(250)).await;
            for name in addresses.keys() {
                let list = upstream.tick(&name, n);
                addresses.publish(&name, list).await;
            }
        }
    });
    println!(
        "library (pid {}): registry client connected",
        std::process::id()
    );
    Ok(registry)
}

#[library_service(init = connect)]
impl Registry {
    /// The addresses of service `name`: the current list, then every change. One upstream
    /// watch per name for the whole host; a slow worker skips to the latest list.
    #[subscription(buffer = 16, policy = keep_latest)]
    pub fn subscribe(&self, name: String) -> Feed<Vec<String>> {
        println!("library: upstream watch OPENED for {name:?}");
        let current = self.upstream.lookup(&name);
        self.addresses
            .feed(name.clone())
            .starting_with(current)
            .on_close(move || println!("library: upstream watch CLOSED for {name:?}"))
    }

    /// The addresses of `name` now (a unary call, for comparison).
    pub fn get(&self, name: String) -> Vec<String> {
        self.upstream.lookup(&name)
    }
}

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), ClusterError> {
    let workers = arg("--workers", 4) as usize;
    let seconds = arg("--seconds", 3);
    Cluster::new()
        .workers(workers)
        .run(move |worker: Worker| async move {
            // Workers 0, 1, 2, …: "db", "cache", "db", "cache", …: several per name.
            let name = if worker.id().is_multiple_of(2) {
                "db"
            } else {
                "cache"
            };
            // A late subscriber gets the current list first.
            tokio::time::sleep(Duration::from_millis(300 * u64::from(worker.id()))).await;
            let mut changes = Agent::get().registry().subscribe(name.into()).await?;
            let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let mut seen = 0;
            while let Ok(Some(change)) = tokio::time::timeout_at(until, changes.next()).await {
                match change {
                    Ok(addresses) => {
                        seen += 1;
                        println!("worker {}: {name} → {addresses:?}", worker.id());
                    }
                    Err(notice) if notice.is_stream_notice() => {
                        println!("worker {}: {name}: {notice}", worker.id());
                    }
                    Err(e) => return Err(e),
                }
            }
            println!("worker {}: {seen} updates of {name}; leaving", worker.id());
            Ok(())
        })
}
