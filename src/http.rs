//! Serving HTTP with [axum] on the cluster's shared listener, with a drain that loses no
//! request on a rolling reload or a graceful stop (feature `axum`).
//!
//! `axum::serve(…).with_graceful_shutdown(…)` is not enough on a shared listener: when a
//! worker is asked to stop, hyper's graceful shutdown closes every connection that has not yet
//! delivered a request, and a connection accepted a moment before usually has its request in
//! flight. Its client sees the connection reset without a response (measured: 4 to 12 requests
//! lost in 40 reloads of `examples/http` under load). [`serve`] drains in this order instead:
//!
//! 1. stop accepting (the connections still queued on the shared socket go to the other
//!    workers, which keep accepting);
//! 2. let every connection finish the request it is serving; a connection that has not yet
//!    delivered its first request gets up to [`FIRST_REQUEST_WAIT`] to do so, and that request
//!    is served;
//! 3. then close each connection (hyper's graceful shutdown: no more keep-alive), and return
//!    once every one is closed.
//!
//! An idle keep-alive connection is closed at once: a client that sends on it at that moment
//! sees it closed, as with any HTTP/1.1 server closing an idle connection, and retries (HTTP
//! clients retry idempotent requests on a reused connection that closes).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use dispatch::prelude::*;
//!
//! fn main() -> Result<(), ClusterError> {
//!     Cluster::new()
//!         .listen("127.0.0.1:8080")
//!         .run(|worker: Worker| async move {
//!             let app = Router::new().route("/", get(|| async { "hello" }));
//!             dispatch::http::serve(&worker, app).await
//!         })
//! }
//! ```

use axum::Router;
use dispatch_core::Worker;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower_service::Service;

/// How long a draining connection that has not delivered its first request is given to do so.
pub const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(2);

/// Serves `app` on the worker's first shared listener ([`Worker::listener`]) until the worker
/// is asked to stop ([`Worker::shutdown`]: a graceful stop or a rolling reload), then drains as
/// the [module](self) says and returns.
///
/// # Errors
/// When the cluster has no listener ([`Cluster::listen`](crate::Cluster::listen)).
///
/// Each request is counted for [`Recycle::max_requests`](crate::Recycle::max_requests)
/// ([`Worker::count_request`]).
pub async fn serve(worker: &Worker, app: Router) -> io::Result<()> {
    let listener = worker.listener().map_err(io::Error::other)?;
    let stopping = worker.clone();
    let stop = async move { stopping.shutdown().await };
    drain_after(listener, app, stop, Some(worker.clone())).await;
    Ok(())
}

/// Serves `app` on `listener` until `stop` resolves, then drains as the [module](self) says.
/// Requests are not counted for recycling: call [`Worker::count_request`] in a middleware, or
/// use [`serve`].
pub async fn serve_until(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    drain_after(listener, app, stop, None).await;
}

/// [`serve_until`], counting each request on `counted`'s worker.
async fn drain_after(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    counted: Option<Worker>,
) {
    let (drain, draining) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let counted = counted.clone();
                    connections.spawn(connection(stream, app.clone(), draining.clone(), counted));
                }
                Err(e) => accept_failed(&e).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    drop(listener);
    drain.send_replace(true);
    while connections.join_next().await.is_some() {}
}

/// An accept error: a connection reset before it was accepted costs nothing; running out of
/// descriptors or memory is logged, and accepting pauses a moment (as `axum::serve` does).
async fn accept_failed(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("cannot accept an HTTP connection: {e}; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One connection: served until it closes; when the worker drains, finishes its request (or
/// waits for its first one) before closing.
async fn connection(
    stream: TcpStream,
    app: Router,
    mut draining: watch::Receiver<bool>,
    counted: Option<Worker>,
) {
    let _ = stream.set_nodelay(true);
    // A permit once a request has been delivered (kept: `notify_one` stores one).
    let delivered = Arc::new(Notify::new());
    let seen = Arc::clone(&delivered);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        seen.notify_one();
        if let Some(worker) = &counted {
            worker.count_request();
        }
        let mut app = app.clone();
        async move { app.call(request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = draining.wait_for(|d| *d) => {}
    }
    tokio::select! {
        _ = conn.as_mut() => return,
        () = delivered.notified() => {}
        () = tokio::time::sleep(FIRST_REQUEST_WAIT) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
