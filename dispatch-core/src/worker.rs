//! An app worker: connects its Agent, reports ready, runs the application's code.

use crate::agent::{Agent, AgentConfig};
use crate::cluster_error::ClusterError;
use crate::control::{ControlChannel, ToChild, ToMaster};
use crate::role::ChildEnv;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// What the application's worker function is given: who this worker is, its Agent, and a
/// signal for when to stop.
#[derive(Debug, Clone)]
pub struct Worker {
    id: u32,
    agent: &'static Agent,
    stopping: watch::Receiver<bool>,
    cluster_ready: watch::Receiver<bool>,
}

impl Worker {
    /// This worker's id, from 0 to the number of workers − 1.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// This process's pid.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// The Agent, connected to the Library (the same as [`Agent::get`]).
    pub fn agent(&self) -> &'static Agent {
        self.agent
    }

    /// Resolves when the master asks this worker to stop (graceful shutdown): finish what is in
    /// flight and return from the worker function. Workers still running after the grace period
    /// are killed.
    pub async fn shutdown(&self) {
        wait_true(self.stopping.clone()).await;
    }

    /// Whether the master has asked this worker to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves when every process of the cluster is ready (Egg's `egg-ready`).
    pub async fn cluster_ready(&self) {
        wait_true(self.cluster_ready.clone()).await;
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: the control socket closed, so stop waiting.
    let _ = rx.wait_for(|v| *v).await;
}

/// The exit code of a worker that could not join the cluster.
pub(crate) const EXIT_START_FAILED: i32 = 2;

/// The worker's whole life; returns its exit code.
pub(crate) async fn run<F, Fut, E>(env: ChildEnv, app: F) -> i32
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (worker, control) = match join(&env).await {
        Ok(joined) => joined,
        Err((e, control)) => {
            tracing::error!("worker could not start: {e}");
            if let Some(mut control) = control {
                let _ = control
                    .send(&ToMaster::Failed {
                        reason: e.to_string(),
                    })
                    .await;
            }
            return EXIT_START_FAILED;
        }
    };
    let _control_task = control;
    match app(worker).await {
        Ok(()) => {
            tracing::debug!("worker finished");
            0
        }
        Err(e) => {
            let e = e.into();
            tracing::error!("worker failed: {e}");
            1
        }
    }
}

type JoinError = (ClusterError, Option<ControlChannel>);

/// Takes the control socket, connects the Agent, reports ready, and starts the task that turns
/// the master's messages into the [`Worker`]'s signals.
async fn join(env: &ChildEnv) -> Result<(Worker, tokio::task::JoinHandle<()>), JoinError> {
    let stream =
        crate::spawn::inherited_control(env.control_fd, env.master_pid).map_err(|e| (e, None))?;
    let mut control = ControlChannel::new(stream);
    let init = match control.recv::<ToChild>().await {
        Ok(Some(ToChild::Init(init))) => init,
        Ok(other) => {
            let e = ClusterError::Protocol {
                message: format!("expected the init message from the master, got {other:?}"),
            };
            return Err((e, Some(control)));
        }
        Err(e) => return Err((e, Some(control))),
    };
    let config = AgentConfig {
        socket: init.library_socket.clone(),
        token: init.token.clone(),
        worker_id: env.worker_id,
        max_frame: usize::try_from(init.max_frame).unwrap_or(usize::MAX),
        call_timeout: Duration::from_millis(init.call_timeout_ms),
        handshake_timeout: Duration::from_millis(init.handshake_timeout_ms),
    };
    let agent = match Agent::connect(&config).await {
        Ok(agent) => agent.install(),
        Err(e) => return Err((e, Some(control))),
    };
    if let Err(e) = control
        .send(&ToMaster::Ready {
            services: String::new(),
        })
        .await
    {
        return Err((e, Some(control)));
    }
    let (stopping_tx, stopping) = watch::channel(false);
    let (ready_tx, cluster_ready) = watch::channel(false);
    let (_sender, mut receiver) = control.split();
    let task = tokio::spawn(async move {
        let _sender = _sender;
        loop {
            match receiver.recv::<ToChild>().await {
                Ok(Some(ToChild::ClusterReady)) => {
                    ready_tx.send_replace(true);
                }
                Ok(Some(ToChild::Shutdown)) => {
                    tracing::info!("asked to stop");
                    stopping_tx.send_replace(true);
                }
                Ok(Some(ToChild::Init(_))) => {}
                Ok(None) | Err(_) => {
                    // The master is gone (it would have killed us by PDEATHSIG if it died).
                    tracing::error!("the master closed the control socket; exiting");
                    std::process::exit(1);
                }
            }
        }
    });
    let worker = Worker {
        id: env.worker_id,
        agent,
        stopping,
        cluster_ready,
    };
    tracing::info!("worker ready");
    Ok((worker, task))
}
