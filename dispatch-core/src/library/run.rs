//! The Library process's life: join the master, construct every service once, listen on the
//! data socket, report ready with the manifest, serve Agents until told to stop, then run the
//! services' close hooks.

use super::accept::{accept_loop, ServeConfig};
use super::hosted::Services;
use crate::cluster_error::ClusterError;
use crate::process::exit;
use crate::process::{ChildEnv, Hooks, MasterLink};
use crate::wire::{self, ToMaster};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

/// The Library's whole life; returns its exit code.
pub(crate) async fn run(env: ChildEnv, hooks: &Hooks) -> i32 {
    match serve(env, hooks).await {
        Ok(()) => 0,
        Err(ClusterError::LibraryInit { .. }) => exit::LIBRARY_INIT_FAILED,
        Err(e) => {
            tracing::error!("library stopped: {e}");
            exit::FAILED
        }
    }
}

async fn serve(env: ChildEnv, hooks: &Hooks) -> Result<(), ClusterError> {
    let link = MasterLink::join(&env).await?;
    let settings = &link.init.settings;
    let started = async {
        for setup in &hooks.library_setup {
            setup
                .run()
                .await
                .map_err(|e| format!("library setup failed: {e}"))?;
        }
        Services::start_with(
            wire::payload_limit(settings.max_frame),
            settings.method_metrics,
        )
        .await
    };
    let started = tokio::select! {
        started = started => started,
        cause = link.orders.stopped() => {
            // Stopped during its init: nothing is serving yet, nothing to close.
            tracing::info!("library stopping during its init: {}", cause.describe());
            return Ok(());
        }
    };
    let started = started.and_then(|mut s| {
        let electors = lead_singletons(&mut s, &link)?;
        Ok((s, electors))
    });
    let (services, electors) = match started {
        Ok((s, electors)) => (Arc::new(s), electors),
        Err(reason) => {
            tracing::debug!("{reason}");
            link.report_failure(reason.clone()).await;
            return Err(ClusterError::LibraryInit { message: reason });
        }
    };
    // Every service exists: from now on they can reach each other in-process.
    super::local::install(Arc::clone(&services));
    if link.init.handover && services.hold_for_handover() {
        tracing::info!(
            "library started by a handover: calls to services with handover hooks wait until \
             their state is restored"
        );
    }
    if let Some(orders) = link.take_handover_orders() {
        tokio::spawn(super::handover::follow(
            orders,
            Arc::clone(&services),
            link.outbox.clone(),
        ));
    }
    let socket = &link.init.library_socket;
    let listener = bind(socket)?;
    let summary = services.manifest().summary();
    if services.manifest().services.is_empty() {
        tracing::warn!(
            "the library hosts no services: no #[library_service] is linked into this binary. \
             If the services live in another crate, make sure the binary uses it (a crate \
             nothing references is not linked: add `use that_crate as _;`)"
        );
    }
    tracing::info!(socket = %socket.display(), "library ready, hosting {summary}");
    let reporting = Arc::clone(&services);
    link.report_stats_with(Box::new(move || {
        let (calls, in_flight) = reporting.call_counts();
        (calls, in_flight, reporting.method_stats())
    }));
    let busy = Arc::clone(&services);
    link.report_busy_with(Box::new(move || {
        (busy.call_counts().1, busy.in_flight_by_method())
    }));
    link.run_tasks_from(hooks.tasks.clone());
    // Only a closed socket refuses it, and then the master is gone anyway.
    let _ = link.outbox.send(&ToMaster::Ready { services: summary });

    let config = Arc::new(ServeConfig::new(link.init.token.clone(), settings.clone()));
    let why = tokio::select! {
        () = accept_loop(listener, Arc::clone(&services), config) => "the listener ended",
        cause = link.orders.stopped() => cause.describe(),
    };
    tracing::info!("library stopping: {why}; closing services");
    release_singletons(electors).await;
    services.log_method_stats();
    services.close().await;
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// The electors of the fleet singletons, each stopped (releasing its lease) by its sender.
#[cfg(feature = "redis")]
type Electors = Vec<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>>;
#[cfg(not(feature = "redis"))]
type Electors = ();

/// Starts an elector for each fleet singleton (issue 17) and gates its calls on it.
fn lead_singletons(services: &mut Services, link: &MasterLink) -> Result<Electors, String> {
    let settings = &link.init.settings;
    let Some(fleet) = settings.fleet.as_ref().filter(|f| !f.singletons.is_empty()) else {
        return Ok(Default::default());
    };
    if fleet.url.is_empty() {
        return Err(format!(
            "fleet singletons ({}) need the fleet's Redis: call Cluster::fleet(url)",
            fleet.singletons.len()
        ));
    }
    #[cfg(feature = "redis")]
    {
        let mut electors = Vec::new();
        for (service, wait) in &fleet.singletons {
            let lead = super::fleet::Leadership::new(*wait);
            services.lead(service, Arc::clone(&lead))?;
            electors.push(super::fleet::elect(
                fleet,
                &settings.name(),
                service,
                lead,
                link.outbox.clone(),
            ));
        }
        Ok(electors)
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = services;
        Err(format!(
            "fleet singletons ({}) need the `redis` feature of dispatch",
            fleet.singletons.len()
        ))
    }
}

/// Stops the electors, each releasing its lease (bounded: a second at most).
async fn release_singletons(electors: Electors) {
    #[cfg(feature = "redis")]
    {
        let mut done = Vec::new();
        for elector in electors {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if elector.send(tx).is_ok() {
                done.push(rx);
            }
        }
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            futures::future::join_all(done),
        )
        .await;
    }
    #[cfg(not(feature = "redis"))]
    let () = electors;
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
