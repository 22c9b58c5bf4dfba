//! Workers serving HTTP on one port the master bound, calling a Library counter.
//!
//! Run with `cargo run --example http -- --port 8080 --workers 2`, then
//! `curl localhost:8080/` (the shared counter and the pid of the worker that answered) and
//! `curl localhost:8080/name`. `kill -HUP <master pid>` reloads the workers one at a time
//! without dropping a request (`dispatch::http::serve` drains each old worker: it stops
//! accepting, then serves every request its connections delivered or were about to);
//! `kill <master pid>` (or Ctrl-C) stops gracefully. `tests/reload.rs` checks it under load.

use anyhow::Result;
use axum::{http::StatusCode, routing::get, Router};
use dispatch::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter shared by every worker.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

#[library_service]
impl Counter {
    /// Adds one and returns the new total.
    pub fn incr(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The name service.
#[derive(Debug, Default)]
pub struct Demo;

#[library_service]
impl Demo {
    /// The service's name.
    pub async fn get_name(&self) -> String {
        "get name".into()
    }
}

async fn count() -> Result<String, (StatusCode, String)> {
    let n = Agent::get().counter().incr().await.map_err(unavailable)?;
    Ok(format!("{n} from pid {}\n", std::process::id()))
}

async fn name() -> Result<String, (StatusCode, String)> {
    Agent::get().demo().get_name().await.map_err(unavailable)
}

fn unavailable(e: dispatch::Error) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> Result<()> {
    let port: u16 = arg("--port").map_or(Ok(8080), |p| p.parse())?;
    let workers: usize = arg("--workers").map_or(Ok(2), |n| n.parse())?;
    Cluster::new()
        .workers(workers)
        .listen(format!("127.0.0.1:{port}"))
        .run(|worker: Worker| async move {
            let addr = worker.listener()?.local_addr()?;
            if worker.id() == 0 {
                let w = worker.clone();
                tokio::spawn(async move {
                    w.cluster_ready().await;
                    println!("listening on {addr}");
                });
            }
            let app = Router::new()
                .route("/", get(count))
                .route("/name", get(name));
            // Not `axum::serve(…).with_graceful_shutdown(…)`: on a reload it resets the
            // connections accepted just before, losing their requests. `dispatch::http::serve`
            // drains without losing one.
            dispatch::http::serve(&worker, app).await?;
            Ok::<_, anyhow::Error>(())
        })?;
    Ok(())
}
