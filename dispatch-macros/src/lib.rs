//! The `#[library_service]` attribute of [`dispatch`](https://docs.rs/dispatch): use it through
//! `dispatch::prelude::*`, not from this crate.
//!
//! The attribute reads an inherent impl block in three steps, one module each: `ast` borrows the
//! user's tokens so every message can point at them, `valid` checks the rules and collects every
//! mistake into a `ctxt::Ctxt`, and `expand` emits the code (or, on a mistake, the errors and the
//! impl block unchanged, from `fallback`).

mod agent_methods;
mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod signature;
mod valid;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Declares a Library service: one instance, in the Library process, that every worker calls.
///
/// Put it on the inherent `impl` block of the service type:
///
/// ```no_run
/// use dispatch::prelude::*;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Default)]
/// pub struct Demo {
///     hits: AtomicU64,
/// }
///
/// #[library_service] // served as "demo", built with `Default`
/// impl Demo {
///     /// Runs on the Library's runtime.
///     pub async fn get_name(&self) -> String {
///         self.hits.fetch_add(1, Ordering::Relaxed);
///         "get name".into()
///     }
///     /// A plain `fn` runs inline: keep it short.
///     pub fn add(&self, a: i64, b: i64) -> i64 {
///         a + b
///     }
///     /// A plain `fn` marked `#[blocking]` runs on tokio's blocking pool.
///     #[blocking]
///     pub fn hash(&self, data: Vec<u8>) -> u64 {
///         data.iter().map(|b| u64::from(*b)).sum()
///     }
///     /// A `Result<T, E>` gives the caller `E` typed, in `dispatch::Error::Service`.
///     pub async fn parse(&self, s: String) -> Result<u32, String> {
///         s.parse().map_err(|_| format!("not a number: {s}"))
///     }
///     fn helper(&self) {} // not `pub`: stays local
/// }
///
/// // In a worker (with `DemoAgentExt` in scope):
/// # async fn worker() -> Result<(), dispatch::Error> {
/// let name: String = Agent::get().demo().get_name().await?;
/// let sum = Agent::get().demo().with_timeout(std::time::Duration::from_millis(50)).add(1, 2).await?;
/// let parsed: Result<u32, dispatch::Error<String>> = Agent::get().demo().parse("1".into()).await;
/// # Ok(()) }
/// ```
///
/// # Remote methods
///
/// Every `pub` method with a `self` receiver is remote; other methods (private, `pub(crate)`,
/// associated functions) stay local. A remote method:
/// - takes `&self`: one instance serves every worker at once, so state needs interior
///   mutability (a `Mutex`, atomics);
/// - is not generic, and its arguments and return value are owned types that implement serde's
///   `Serialize` and `Deserialize` (`String`, not `&str`; no `impl Trait`);
/// - is an `async fn` whose future is `Send`, or a plain `fn`, which runs inline in the Library
///   unless marked `#[blocking]`;
/// - returns `T`, which the caller gets as `Result<T, dispatch::Error>`, or `Result<T, E>`, which
///   the caller gets as `Result<T, dispatch::Error<E>>` with `E` in `Error::Service`.
///
/// Each mistake is a compile error at the offending token that says how to fix it, all of them
/// in one compile.
///
/// # Arguments
///
/// All optional, comma-separated:
/// - `name = "…"`: the service's name on the wire and of its accessor on `Agent`; a snake_case
///   identifier. Default: the type's name in snake_case (`MyService` → `my_service`).
/// - `init = path::to::f`: builds the instance in the Library, instead of `Default`. `f` is an
///   `async fn() -> Result<Self, E>` with `E: Display` (connect to a database, read a file); its
///   error aborts the cluster's start with that message.
/// - `close = method`: a method of this impl block taking `&self` and returning `()`, `async` or
///   not, called once when the Library stops. It is not remote, even if `pub`.
/// - `crate = path`: where the `dispatch` crate is, if not at `::dispatch` (for a renamed
///   dependency or a crate re-exporting it).
///
/// # Generated
///
/// Next to the impl block, for a type `Demo` served as `demo`:
/// - `pub struct DemoClient<'a>`, a `Copy` client with one `pub async fn` per remote method
///   (same name, same arguments, `Self` spelled `Demo`), plus
///   `with_timeout(self, Duration) -> Self` and `service_name(&self) -> &str`;
/// - `pub trait DemoAgentExt { fn demo(&self) -> DemoClient<'_>; }`, implemented for `Agent`:
///   bring it into scope where workers call the service;
/// - the Library's dispatcher (`ErasedService`) and the service's registration, which the
///   Library finds at start: keep services in a crate the binary references, or the linker
///   drops them.
#[proc_macro_attribute]
pub fn library_service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::library_service(args.into(), input.into()).into()
}
