//! The worker process's life: join the master, connect the Agent, run the setup steps, report
//! ready (unless the application does), run the application's code.

use super::agent::{Agent, AgentConfig};
use super::handle::{ReadySignal, Worker};
use crate::cluster_error::ClusterError;
use crate::process::link::Orders;
use crate::process::{exit, listeners, ChildEnv, Hooks, MasterLink, StopCause};
use crate::wire::ToMaster;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The worker's whole life; returns its exit code.
pub(crate) async fn run<F, Fut, E>(env: ChildEnv, hooks: &Hooks, app: F) -> i32
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let worker = match join(&env, hooks).await {
        Ok(Some(worker)) => worker,
        // Asked to stop before it was ready: nothing of the application ran yet.
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!("worker could not start: {e}");
            return exit::WORKER_START_FAILED;
        }
    };
    let outbox = worker.ready.outbox.clone();
    let code = match app(worker).await {
        Ok(()) => {
            tracing::debug!("worker finished");
            0
        }
        Err(e) => {
            let e = e.into();
            tracing::error!("worker failed: {e}");
            // The master quotes it if this worker cannot stay up.
            // Written by the bounded flush below.
            let _ = outbox.send(&ToMaster::Failed {
                reason: format!("worker failed: {e}"),
            });
            exit::FAILED
        }
    };
    // What the worker queued for the master (its ready report above all, when the app returns
    // at once) is written before the process exits, or the master would see an exit before
    // ready. Bounded: a master that does not read is not waited for.
    if tokio::time::timeout(FLUSH_AT_EXIT, outbox.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            "the master did not take this worker's last messages within {FLUSH_AT_EXIT:?}"
        );
    }
    code
}

/// How long an exiting worker waits for its messages to the master to be written.
const FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Joins the master, takes the listeners, connects the Agent, runs the setup steps and
/// reports ready (unless the application does). `None`: asked to stop meanwhile.
async fn join(env: &ChildEnv, hooks: &Hooks) -> Result<Option<Worker>, ClusterError> {
    let link = MasterLink::join(env).await?;
    let (listeners, unix_listeners) = listeners::inherited(env.listen_fds)?;
    let config = AgentConfig {
        socket: link.init.library_socket.clone(),
        token: link.init.token.clone(),
        worker_id: env.worker_id,
        settings: link.init.settings.clone(),
    };
    let patience = link.init.settings.worker_ready_timeout;
    let joined = async {
        // Installed first, so a setup step can call the Library.
        let agent = Agent::connect_within(&config, patience).await?.install();
        for setup in &hooks.worker_setup {
            setup.run().await.map_err(|e| ClusterError::Protocol {
                message: format!("worker setup failed: {e}"),
            })?;
        }
        Ok::<_, ClusterError>(agent)
    };
    let joined = tokio::select! {
        joined = joined => joined,
        cause = link.orders.stopped() => {
            tracing::info!("worker stopping during its setup: {}", cause.describe());
            return Ok(None);
        }
    };
    let agent = match joined {
        Ok(agent) => agent,
        Err(e) => {
            link.report_failure(e.to_string()).await;
            return Err(e);
        }
    };
    link.report_stats_with(Box::new(move || {
        let (calls, in_flight) = agent.call_counts();
        (calls, in_flight, Vec::new())
    }));
    link.report_busy_with(Box::new(move || (agent.call_counts().1, Vec::new())));
    link.run_tasks_from(hooks.tasks.clone());
    tokio::spawn(follow_orders(link.orders.clone(), agent));
    if let Some(orders) = link.take_handover_orders() {
        tokio::spawn(super::switch::follow(orders, agent, link.outbox.clone()));
    }
    let ready = Arc::new(ReadySignal {
        sent: AtomicBool::new(false),
        outbox: link.outbox.clone(),
    });
    if !link.init.settings.explicit_ready {
        ready.send();
    }
    Ok(Some(Worker {
        id: env.worker_id,
        agent,
        stop: link.orders.stop.clone(),
        cluster_ready: link.orders.cluster_ready.clone(),
        listeners: Arc::new(listeners),
        unix_listeners: Arc::new(unix_listeners),
        ready,
    }))
}

/// Acts on the master's orders for the worker's whole life: reconnects the Agent when the
/// Library is back, and ends the process when the master is gone (even while the application
/// drains after a stop).
async fn follow_orders(orders: Orders, agent: &'static Agent) {
    let asked = async {
        if orders.stopped().await == StopCause::Asked {
            tracing::info!("asked to stop");
        }
        std::future::pending::<()>().await;
    };
    let reconnect = async {
        loop {
            orders.library_back.notified().await;
            agent.reconnect_now();
        }
    };
    tokio::select! {
        () = asked => {}
        () = reconnect => {}
        () = orders.master_gone() => {
            // The master is gone (PDEATHSIG kills us too if it died).
            tracing::error!("the master closed the control socket; exiting");
            exit::exit(exit::FAILED);
        }
    }
}
