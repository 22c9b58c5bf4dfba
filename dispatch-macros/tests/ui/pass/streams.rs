//! Streaming methods: a keyed subscription over a `Publisher`, a plain stream, an async one,
//! and their client stubs.

use dispatch::prelude::*;
use dispatch::{Feed, Publisher, RemoteStream};

#[derive(Default)]
pub struct Registry {
    addresses: Publisher<String, Vec<String>>,
}

#[library_service]
impl Registry {
    /// The addresses of `name`, shared by every worker watching it.
    #[subscription(buffer = 16, buffer_bytes = 65536, policy = keep_latest, slow_after_ms = 500)]
    pub fn watch(&self, name: String) -> Feed<Vec<String>> {
        self.addresses.feed(name).on_close(|| {})
    }

    #[subscription(policy = close)]
    pub async fn watch_async(&self, name: String) -> Feed<Vec<String>> {
        self.addresses.feed(name)
    }

    #[stream(buffer = 4, policy = drop_oldest)]
    pub fn count(&self, n: u64) -> Feed<u64> {
        Feed::new(futures::stream::iter(0..n))
    }

    pub fn plain(&self) -> Feed<Self2> {
        Feed::empty()
    }

    pub async fn announce(&self, name: String, addresses: Vec<String>) -> usize {
        self.addresses.publish(&name, addresses).await
    }
}

pub type Self2 = (u8, String);

#[allow(dead_code)]
async fn callers() -> Result<(), Error> {
    let watch: RemoteStream<Vec<String>> = Agent::get().registry().watch("db".into()).await?;
    drop(watch);
    let count: RemoteStream<u64> = Agent::get().registry().count(3).await?;
    drop(count);
    let _: RemoteStream<(u8, String)> = Agent::get().registry().plain().await?;
    Ok(())
}

fn main() {}
