//! The Library's side of the generated code, run in-process: the registration, the init
//! function, each kind of method through `ErasedService::call`, and the close hook.

use dispatch::__private::{
    decode_args, encode_reply, inventory, ErasedService, RemoteError, ServiceRegistration,
};
use dispatch::library_service;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The error of [`Counter::parse`].
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct ParseErr(String);

/// A service with every kind of remote method.
#[derive(Debug)]
pub struct Counter {
    hits: AtomicU64,
}

static CLOSED: AtomicBool = AtomicBool::new(false);

async fn connect() -> Result<Counter, String> {
    Ok(Counter {
        hits: AtomicU64::new(10),
    })
}

#[library_service(name = "counter", init = connect, close = shutdown)]
impl Counter {
    /// Counts a hit.
    pub async fn hit(&self) -> u64 {
        self.hits.fetch_add(1, Ordering::Relaxed) + 1
    }
    /// Adds inline.
    pub fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    /// Sums on the blocking pool.
    #[blocking]
    pub fn sum(&self, data: Vec<u8>) -> u64 {
        data.iter().map(|b| u64::from(*b)).sum()
    }
    /// Fails with its own error.
    pub async fn parse(&self, s: String) -> Result<u32, ParseErr> {
        s.parse().map_err(|_| ParseErr(s))
    }
    /// Destructures its argument.
    pub fn swap(&self, (a, b): (u8, u16)) -> (u16, u8) {
        (b, a)
    }
    /// Panics on the blocking pool.
    #[blocking]
    pub fn boom(&self) {
        panic!("boom")
    }
    /// Called once when the Library stops; not remote.
    pub fn shutdown(&self) {
        CLOSED.store(true, Ordering::SeqCst);
    }
}

fn registration() -> &'static ServiceRegistration {
    inventory::iter::<ServiceRegistration>
        .into_iter()
        .find(|r| r.name == "counter")
        .expect("the service is registered")
}

async fn call<A: Serialize, R: serde::de::DeserializeOwned>(
    service: &Arc<dyn ErasedService>,
    method: &str,
    args: &A,
) -> Result<R, RemoteError> {
    let args = encode_reply(args)?;
    let reply = Arc::clone(service).call(method, &args).await?;
    decode_args("counter", method, &reply)
}

#[test]
fn registration_lists_remote_methods_with_signatures() {
    let reg = registration();
    assert_eq!(reg.type_name, "Counter");
    let methods: Vec<(&str, &str)> = reg.methods.iter().map(|m| (m.name, m.signature)).collect();
    assert_eq!(
        methods,
        [
            ("hit", "async fn hit() -> u64"),
            ("add", "fn add(a: i64, b: i64) -> i64"),
            ("sum", "fn sum(data: Vec<u8>) -> u64"),
            (
                "parse",
                "async fn parse(s: String) -> Result<u32, ParseErr>"
            ),
            ("swap", "fn swap(arg0: (u8, u16)) -> (u16, u8)"),
            ("boom", "fn boom()"),
        ]
    );
}

#[tokio::test]
async fn every_kind_of_method_answers() {
    let service = (registration().init)().await.expect("init");
    assert_eq!(call::<_, u64>(&service, "hit", &()).await, Ok(11));
    assert_eq!(
        call::<_, i64>(&service, "add", &(2_i64, 3_i64)).await,
        Ok(5)
    );
    assert_eq!(
        call::<_, u64>(&service, "sum", &(vec![1_u8, 2, 3],)).await,
        Ok(6)
    );
    let parsed = call::<_, Result<u32, ParseErr>>(&service, "parse", &("x".to_owned(),)).await;
    assert_eq!(parsed, Ok(Err(ParseErr("x".into()))));
    assert_eq!(
        call::<_, (u16, u8)>(&service, "swap", &((1_u8, 2_u16),)).await,
        Ok((2, 1))
    );
    let panicked = call::<_, ()>(&service, "boom", &()).await;
    assert!(matches!(panicked, Err(RemoteError::Panicked { message, .. }) if message == "boom"));
}

#[tokio::test]
async fn unknown_methods_and_bad_arguments_are_errors() {
    let service = (registration().init)().await.expect("init");
    let unknown = call::<_, ()>(&service, "shutdown", &()).await;
    assert_eq!(
        unknown,
        Err(RemoteError::UnknownMethod {
            service: "counter".into(),
            method: "shutdown".into()
        })
    );
    let bad = call::<_, i64>(&service, "add", &("not", "numbers")).await;
    assert!(matches!(bad, Err(RemoteError::Codec { .. })), "{bad:?}");
}

#[tokio::test]
async fn close_runs_the_hook() {
    let service = (registration().init)().await.expect("init");
    service.close().await;
    assert!(CLOSED.load(Ordering::SeqCst));
}
