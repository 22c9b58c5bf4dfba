//! The Library process: constructs every service once, listens on the data socket, reports ready
//! with its manifest, serves Agents until the master tells it to stop, then runs close hooks.

use crate::cluster::ClusterConfig;
use crate::cluster_error::ClusterError;
use crate::control::{ControlWriter, ToChild, ToMaster};
use crate::messenger::Messenger;
use crate::role::ChildEnv;
use crate::server::{self, ServeConfig};
use crate::services::Services;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

/// Exit code of a Library whose services failed to initialise.
pub(crate) const EXIT_INIT_FAILED: i32 = 2;

/// The Library's whole life; returns its exit code.
pub(crate) async fn run(env: ChildEnv, cluster: &ClusterConfig) -> i32 {
    match serve(env, cluster).await {
        Ok(()) => 0,
        Err(ClusterError::LibraryInit { .. }) => EXIT_INIT_FAILED,
        Err(e) => {
            tracing::error!("library stopped: {e}");
            1
        }
    }
}

async fn serve(env: ChildEnv, cluster: &ClusterConfig) -> Result<(), ClusterError> {
    let (control, mut init) = crate::control::join_master(&env).await?;
    let config = ServeConfig::from_init(&init);
    let (sender, mut receiver) = control.split();
    let outbox = ControlWriter::spawn(sender);
    // Services may send messages from their init already.
    let messenger = Messenger::install(outbox.clone());
    messenger.preload(
        std::mem::take(&mut init.members),
        std::mem::take(&mut init.published),
    );
    let started = async {
        for setup in &cluster.library_setup {
            setup
                .run()
                .await
                .map_err(|e| format!("library setup failed: {e}"))?;
        }
        Services::start_with(
            crate::wire::payload_limit(config.max_frame),
            init.method_metrics,
        )
        .await
    };
    let services = match started.await {
        Ok(s) => Arc::new(s),
        Err(reason) => {
            tracing::error!("{reason}");
            outbox.send(ToMaster::Failed {
                reason: reason.clone(),
            });
            outbox.flush().await;
            return Err(ClusterError::LibraryInit { message: reason });
        }
    };
    let listener = bind(&init.library_socket)?;
    let summary = services.manifest().summary();
    tracing::info!(
        socket = %init.library_socket.display(),
        "library ready, hosting {summary}"
    );
    outbox.send(ToMaster::Ready { services: summary });

    let stop = async {
        loop {
            match receiver.recv::<ToChild>().await {
                Ok(Some(msg)) => match messenger.handle(msg) {
                    Some(ToChild::Shutdown) => return "the master asked it to stop",
                    Some(ToChild::StatsRequest { id }) => {
                        let (calls, in_flight) = services.call_counts();
                        outbox.send(ToMaster::Stats {
                            id,
                            calls,
                            in_flight,
                            methods: services.method_stats(),
                        });
                    }
                    _ => continue,
                },
                Ok(None) => return "the master is gone",
                Err(_) => return "its control socket broke",
            }
        }
    };
    let why = tokio::select! {
        () = server::accept_loop(listener, Arc::clone(&services), Arc::new(config)) => "the listener ended",
        why = stop => why,
    };
    tracing::info!("library stopping: {why}; closing services");
    services.log_method_stats();
    services.close().await;
    let _ = std::fs::remove_file(&init.library_socket);
    Ok(())
}

/// Binds the data socket, readable and writable by this user only.
fn bind(path: &std::path::Path) -> Result<tokio::net::UnixListener, ClusterError> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| {
        ClusterError::io(
            format!("cannot bind the library socket {}", path.display()),
            e,
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ClusterError::io("cannot restrict the library socket to its owner", e))?;
    Ok(listener)
}
