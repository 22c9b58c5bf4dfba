//! The contract between `#[library_service]` and the Library: what the macro registers (a
//! type-erased service, its methods and their signatures), the manifest built from every
//! registration, and how a panic in a method becomes a message for its caller.

mod feed;
mod handover;
mod manifest;
pub(crate) mod panic;
mod registration;

pub use feed::{Feed, OpenFuture, Overflow, RawFeed, StreamSpec};
pub use handover::{Handover, HandoverError};
pub use manifest::{Manifest, ManifestMismatch, ServiceManifest};
pub(crate) use panic::message as panic_message;
pub(crate) use registration::registered;
pub use registration::{CallFuture, ErasedService, InitFuture, MethodInfo, ServiceRegistration};
