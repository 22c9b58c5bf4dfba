//! Services calling services: the Library's own handle on its live instances, through which the
//! in-process clients the macro generates (`DemoLocal`, `Library::get().demo()`) call a method
//! directly, without a socket, a connection or any encoding.

use super::hosted::Services;
use crate::error::{Error, RemoteError};
use crate::service::ErasedService;
use once_cell::sync::OnceCell;
use std::sync::Arc;

static LIBRARY: OnceCell<Library> = OnceCell::new();

/// The Library process's services, as the services themselves see them: a service method
/// reaches another service with `Library::get().<name>()`, a client with the same methods and
/// result types as the worker's `Agent::get().<name>()`, that calls the hosted instance
/// directly (no socket, no serialization). Bring the service's `…LibraryExt` trait into scope,
/// as `…AgentExt` for the Agent.
///
/// ```no_run
/// use dispatch::prelude::*;
/// use dispatch::Library;
///
/// #[derive(Default)]
/// pub struct Names;
///
/// #[library_service]
/// impl Names {
///     pub fn get_name(&self) -> String {
///         "dispatch".into()
///     }
/// }
///
/// #[derive(Default)]
/// pub struct Greeter;
///
/// #[library_service]
/// impl Greeter {
///     pub async fn greet(&self) -> Result<String, String> {
///         // In the Library: the `names` service's instance, called in-process.
///         let name = Library::get().names().get_name().await.map_err(|e| e.to_string())?;
///         Ok(format!("hello, {name}"))
///     }
/// }
/// ```
///
/// A local call goes through the same per-method metrics and panic containment as a call from
/// a worker: a panic in the called method comes back as [`Error::Panicked`]. It runs on the
/// caller's task, so there is no queue and no deadline: a method that calls itself, or a cycle
/// of services calling each other, recurses (rustc rejects a direct cycle of `async fn`s as a
/// future of infinite size), and a lock held across the call while the callee takes it again
/// deadlocks, as it would in any one process.
#[derive(Debug)]
pub struct Library {
    services: Arc<Services>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Library {
    /// The Library's services, from code running in the Library process (a service's methods,
    /// its close hook, tasks they spawn).
    ///
    /// # Panics
    /// Outside the Library process (in a worker, use `Agent::get()`), and in the Library before
    /// every service is constructed (in an `init` function or a `library_setup` step): the
    /// services a call could reach do not all exist yet. [`Library::try_get`] returns `None`
    /// instead.
    pub fn get() -> &'static Library {
        match LIBRARY.get() {
            Some(library) => library,
            None => panic!("{}", not_here()),
        }
    }

    /// [`Library::get`], or `None` outside the Library process or before its services are
    /// constructed.
    pub fn try_get() -> Option<&'static Library> {
        LIBRARY.get()
    }

    /// The live instance of the service `name`, typed `S`. For generated clients.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if this Library hosts no service `name` of type `S` (a binary
    /// built without it).
    #[doc(hidden)]
    pub fn __instance<S: ErasedService>(&self, name: &str) -> Result<Arc<S>, Error> {
        self.services
            .typed_instance::<S>(name)
            .ok_or_else(|| Error::Unavailable {
                reason: format!(
                    "the library hosts no service `{name}` of type `{}`",
                    std::any::type_name::<S>()
                ),
            })
    }

    /// Runs an in-process call of `service.method`, with the metrics and panic containment of
    /// a call from a worker. For generated clients.
    ///
    /// # Errors
    /// [`Error::Panicked`] if the method panicked.
    #[doc(hidden)]
    pub async fn __call<R>(
        &self,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = R>,
    ) -> Result<R, Error> {
        self.services
            .call_local(service, method, call, |_| false)
            .await
            .map_err(Error::from)
    }

    /// [`Library::call`] for a method returning `Result<T, E>`: its `Err(e)` comes back as
    /// [`Error::Service`]. For generated clients.
    ///
    /// # Errors
    /// [`Error::Service`] for the method's own error, [`Error::Panicked`] if it panicked.
    #[doc(hidden)]
    pub async fn __call_fallible<T, E>(
        &self,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Error<E>> {
        match self
            .services
            .call_local(service, method, call, Result::is_err)
            .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::Service(e)),
            Err(remote) => Err(remote.into()),
        }
    }

    /// A one-way call in-process: run now on the caller's task (nothing to queue or bound);
    /// a panic is logged, as the Library logs a worker's failed one-way call, and not returned.
    /// For generated clients.
    ///
    /// # Errors
    /// Never: the `Result` matches the worker's stub, whose call can fail to be sent.
    #[doc(hidden)]
    pub async fn __call_oneway(
        &self,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        if let Err(e) = self
            .services
            .call_local(service, method, call, |_| false)
            .await
        {
            log_oneway_failure(service, method, "in-process", &e);
        }
        Ok(())
    }
}

/// Makes the Library's services reachable in-process: called once they are all constructed.
pub(crate) fn install(services: Arc<Services>) {
    // Set once per process; a second Library in one process (the in-process tests) keeps the
    // first's.
    let _ = LIBRARY.set(Library { services });
}

/// The message of [`Library::get`] where there is no Library.
fn not_here() -> String {
    match crate::process::role() {
        crate::process::Role::Library => {
            "Library::get() called in the Library before its services \
             were all constructed (in an `init` function or a `library_setup` step): call other \
             services from methods, once the Library is serving (Library::try_get() returns None \
             until then)"
                .to_owned()
        }
        crate::process::Role::Worker { id } => where_not(&format!("worker {id}")),
        crate::process::Role::Master => where_not("the master, or a process outside a cluster"),
    }
}

/// [`not_here`] outside the Library, in `here`.
fn where_not(here: &str) -> String {
    format!(
        "Library::get() called outside the Library process (in {here}): services \
             reach each other in-process with Library::get().<service>() only inside the \
             Library; a worker calls them through its Agent: Agent::get().<service>() \
             (Library::try_get() returns None here)"
    )
}

/// Logs a one-way call that failed (it has no caller to return the error to), rate-limited:
/// at most [`ONEWAY_LOG_BURST`] lines a second, then one line counting the ones left out.
pub(crate) fn log_oneway_failure(service: &str, method: &str, caller: &str, e: &RemoteError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static IN_WINDOW: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WINDOW.swap(now, Ordering::Relaxed) != now {
        IN_WINDOW.store(0, Ordering::Relaxed);
    }
    if IN_WINDOW.fetch_add(1, Ordering::Relaxed) >= ONEWAY_LOG_BURST {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    let e: Error = e.clone().into();
    tracing::error!(
        "one-way call {service}.{method} from {caller} failed (not returned to the caller: a \
         one-way call has no reply): {e}{}",
        if suppressed > 0 {
            format!(" ({suppressed} more one-way failures were not logged)")
        } else {
            String::new()
        }
    );
}

/// The most one-way failures logged in one second.
const ONEWAY_LOG_BURST: u64 = 10;

#[cfg(test)]
mod tests {
    use super::Library;

    #[test]
    fn outside_the_library_get_panics_saying_where_it_works() {
        assert!(Library::try_get().is_none());
        let panic = std::panic::catch_unwind(|| {
            let _ = Library::get();
        })
        .expect_err("Library::get() outside the Library panics");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("outside the Library process (in the master")
                && message.contains("Agent::get().<service>()"),
            "{message}"
        );
    }
}
