//! The application's hooks into a child's start: setup steps run before the process reports
//! ready. They are code, not settings: every process has them because it runs the same `main`.

use futures::future::BoxFuture;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// A setup step run in a child before it reports ready; its error aborts that child's start.
#[derive(Clone)]
pub(crate) struct Setup(Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>);

impl Setup {
    /// A step running `f`; its error is reported by its `Display`.
    pub(crate) fn new<F, Fut, E>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        Setup(Arc::new(move || {
            let fut = f();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }))
    }

    /// Runs the step.
    pub(crate) async fn run(&self) -> Result<(), String> {
        (self.0)().await
    }
}

impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Setup")
    }
}

/// Every setup step the application declared, by the role that runs it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hooks {
    /// Run in the Library before its services are constructed.
    pub(crate) library_setup: Vec<Setup>,
    /// Run in every worker after its Agent is connected, before it reports ready.
    pub(crate) worker_setup: Vec<Setup>,
    /// Every schedule's code, by name: run where the master orders (issue 17).
    pub(crate) tasks: crate::schedule::Tasks,
}
