//! Every kind of method, a name override, an init function and a close hook.

use dispatch::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Serialize, Deserialize)]
pub struct ParseErr(String);

pub struct Counter {
    hits: AtomicU64,
}

async fn connect() -> Result<Counter, std::io::Error> {
    Ok(Counter {
        hits: AtomicU64::new(0),
    })
}

#[library_service(name = "counters", init = connect, close = shutdown)]
impl Counter {
    /// Documented: counts a hit.
    pub async fn hit(&self) -> u64 {
        self.hits.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub fn add(&self, a: i64, mut b: i64) -> i64 {
        b += a;
        b
    }
    #[blocking]
    pub fn hash(&self, data: Vec<u8>) -> u64 {
        data.iter().map(|b| u64::from(*b)).sum()
    }
    pub async fn parse(&self, s: String) -> Result<u32, ParseErr> {
        s.parse().map_err(|_| ParseErr(s))
    }
    pub fn pair(&self, (a, b): (u8, u8), _: String) -> Vec<Self> {
        let _ = (a, b);
        Vec::new()
    }
    pub async fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
    }
    pub async fn shutdown(&self) {}
    fn helper(&self) {}
    fn new_thing() -> u32 {
        1
    }
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.hits.load(Ordering::Relaxed))
    }
}
impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(|n| Counter {
            hits: AtomicU64::new(n),
        })
    }
}

#[allow(dead_code)]
async fn worker() -> Result<(), Box<dyn std::error::Error>> {
    let counters = Agent::get().counters();
    let _: u64 = counters.hit().await?;
    let _: i64 = counters.add(1, 2).await?;
    let _: u64 = counters
        .with_timeout(std::time::Duration::from_millis(50))
        .hash(vec![1])
        .await?;
    let parsed: Result<u32, dispatch::Error<ParseErr>> = counters.parse("1".into()).await;
    let _ = parsed;
    let _: Vec<Counter> = counters.pair((1, 2), String::new()).await?;
    counters.reset().await?;
    assert_eq!(counters.service_name(), "counters");
    Ok(())
}

fn main() {
    Counter {
        hits: AtomicU64::new(0),
    }
    .helper();
    let _ = Counter::new_thing();
}
