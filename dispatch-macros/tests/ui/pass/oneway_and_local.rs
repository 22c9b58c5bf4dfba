//! One-way methods and the in-process client: `Library::get().<service>()` has the same
//! methods and result types as the worker's `Agent::get().<service>()`.

use dispatch::prelude::*;
use dispatch::Library;

#[derive(Default)]
pub struct Audit;

#[library_service]
impl Audit {
    #[oneway]
    pub async fn record(&self, _line: String) {}
    #[oneway]
    pub fn touch(&self) -> () {}
    pub fn count(&self) -> u64 {
        0
    }
    pub async fn parse(&self, s: String) -> Result<u64, String> {
        s.parse().map_err(|_| s)
    }
    #[blocking]
    pub fn heavy(&self, n: u64) -> u64 {
        n
    }
}

#[derive(Default)]
pub struct Front;

#[library_service]
impl Front {
    pub async fn relay(&self) -> Result<u64, String> {
        let audit = Library::get().audit();
        let () = audit.record("line".into()).await.map_err(|e| e.to_string())?;
        audit.touch().await.map_err(|e| e.to_string())?;
        let n: Result<u64, dispatch::Error> = audit.count().await;
        let parsed: Result<u64, dispatch::Error<String>> = audit.parse("1".into()).await;
        let heavy: Result<u64, dispatch::Error> = audit.heavy(2).await;
        Ok(n.unwrap_or(0) + parsed.unwrap_or(0) + heavy.unwrap_or(0))
    }
}

async fn worker() -> Result<(), dispatch::Error> {
    let sent: Result<(), dispatch::Error> = Agent::get().audit().record("line".into()).await;
    sent?;
    Agent::get().audit().touch().await
}

fn main() {
    let _ = worker;
}
