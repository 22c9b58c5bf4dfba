//! What `#[library_service]` registers: a type-erased service the Library can construct and call.

use crate::error::RemoteError;
use futures::future::BoxFuture;
use std::sync::Arc;

/// The future of one call on the Library's side: the encoded reply or a failure.
pub type CallFuture = BoxFuture<'static, Result<Vec<u8>, RemoteError>>;

/// The future that constructs a service in the Library: the instance, or the init error's message.
pub type InitFuture = BoxFuture<'static, Result<Arc<dyn ErasedService>, String>>;

/// A service as the Library sees it: something that answers `method(args)` with encoded bytes.
///
/// Implemented by the code `#[library_service]` generates; not meant to be implemented by hand.
/// `Any`, so a service in the Library can reach another one's instance by its type
/// ([`Library`](crate::Library)'s in-process clients).
pub trait ErasedService: std::any::Any + Send + Sync + 'static {
    /// Starts the call of `method` with bincode-encoded `args`: the arguments are decoded now,
    /// from the request's bytes where they lie, and the future owns the decoded values. An
    /// unknown method yields [`RemoteError::UnknownMethod`], arguments that do not decode
    /// [`RemoteError::Codec`].
    fn call(self: Arc<Self>, method: &str, args: &[u8]) -> CallFuture;

    /// Runs the service's close hook, if it has one. Called once, when the Library stops.
    fn close(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    /// Whether the service has [`Handover`](super::Handover) hooks (`#[library_service(handover)]`).
    fn has_handover(&self) -> bool {
        false
    }

    /// Runs the service's snapshot hook, if it has one (else an empty snapshot).
    fn snapshot(self: Arc<Self>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Runs the service's restore hook, if it has one.
    fn restore(self: Arc<Self>, _state: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// How the Library runs `method` if it is a streaming method (returns a `Feed`), else
    /// `None`.
    fn stream_spec(&self, _method: &str) -> Option<super::feed::StreamSpec> {
        None
    }

    /// Runs the streaming method `method` with bincode-encoded `args`: its feed. A method that
    /// is not a streaming method yields [`RemoteError::UnknownMethod`].
    fn open_stream(self: Arc<Self>, method: &str, _args: Vec<u8>) -> super::feed::OpenFuture {
        let err = RemoteError::UnknownMethod {
            service: String::new(),
            method: method.to_owned(),
        };
        Box::pin(futures::future::ready(Err(err)))
    }
}

/// One method of a service, as the manifest lists it.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The method's name.
    pub name: &'static str,
    /// Its signature as written (`async fn add(a: i64, b: i64) -> i64`), normalised; the manifest
    /// fingerprint is computed over these. A one-way method's starts with `#[oneway] `.
    pub signature: &'static str,
}

/// How a one-way method's signature starts (`#[oneway] fn log(line: String)`): the Library
/// acknowledges its calls at once and runs them detached, and an Agent built without the mark
/// has another manifest.
pub(crate) const ONEWAY_PREFIX: &str = "#[oneway] ";

impl MethodInfo {
    /// Whether the method is one-way (`#[oneway]`).
    pub fn is_oneway(&self) -> bool {
        self.signature.starts_with(ONEWAY_PREFIX)
    }
}

/// A service registered with `inventory` by `#[library_service]`.
#[derive(Debug)]
pub struct ServiceRegistration {
    /// The service's name on the wire (`demo`).
    pub name: &'static str,
    /// The Rust type it was declared on, for logs.
    pub type_name: &'static str,
    /// Its remote methods.
    pub methods: &'static [MethodInfo],
    /// Constructs the one instance (by `Default` or the `init` function).
    pub init: fn() -> InitFuture,
}

inventory::collect!(ServiceRegistration);

/// Every service linked into this binary, sorted by name.
pub(crate) fn registered() -> Vec<&'static ServiceRegistration> {
    let mut all: Vec<_> = inventory::iter::<ServiceRegistration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all
}
