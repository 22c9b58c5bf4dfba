//! A service's state carried across a Library handover: the optional [`Handover`] hooks.

use std::future::Future;

/// The error a handover hook returns: any error, as its message.
pub type HandoverError = Box<dyn std::error::Error + Send + Sync>;

/// A service's state carried from the old Library to the new one during a Library handover
/// (`dispatchctl reload --library`, [`ClusterHandle::reload_library`](crate::ClusterHandle::reload_library),
/// Library recycling).
///
/// Implement it on the service type and name it in the attribute:
/// `#[library_service(handover)]`. During a handover, the new Library constructs the service
/// as usual (`Default` or `init`), then holds every call to it at its gate. Once every worker
/// sends its calls to the new Library and the calls in flight on the old one finished, the old
/// Library calls [`snapshot`](Handover::snapshot) (nothing calls it any more, so the snapshot
/// is exact), the bytes travel to the new Library over the control plane, and the new Library
/// calls [`restore`](Handover::restore) before it admits the held calls. A counter incremented
/// without pause during the handover loses no increment.
///
/// The snapshots of all services together must fit in one control message (about 1 MiB);
/// bigger ones fail the snapshot with an error saying so, and the new Library starts from its
/// fresh state (the handover itself still completes without failing a call). Larger state
/// belongs in a store both Libraries reach (a file, a database), with only its key here.
///
/// ```
/// use dispatch::{library_service, Handover, HandoverError};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Default)]
/// pub struct Counter(AtomicU64);
///
/// #[library_service(handover)]
/// impl Counter {
///     pub fn incr(&self) -> u64 {
///         self.0.fetch_add(1, Ordering::SeqCst) + 1
///     }
/// }
///
/// impl Handover for Counter {
///     async fn snapshot(&self) -> Result<Vec<u8>, HandoverError> {
///         Ok(self.0.load(Ordering::SeqCst).to_le_bytes().to_vec())
///     }
///     async fn restore(&self, state: Vec<u8>) -> Result<(), HandoverError> {
///         let bytes: [u8; 8] = state.as_slice().try_into()?;
///         self.0.store(u64::from_le_bytes(bytes), Ordering::SeqCst);
///         Ok(())
///     }
/// }
/// ```
pub trait Handover: Send + Sync + 'static {
    /// The service's state, in the old Library, after its last call.
    fn snapshot(&self) -> impl Future<Output = Result<Vec<u8>, HandoverError>> + Send;

    /// Takes over `state` (what [`snapshot`](Handover::snapshot) returned in the old Library),
    /// in the new one, before its first call. An error is logged, and the service serves from
    /// the state it was constructed with.
    fn restore(&self, state: Vec<u8>) -> impl Future<Output = Result<(), HandoverError>> + Send;
}
