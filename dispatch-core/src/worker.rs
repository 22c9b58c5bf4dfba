//! An app worker: connects its Agent, reports ready, runs the application's code.

use crate::agent::{Agent, AgentConfig};
use crate::cluster::ClusterConfig;
use crate::cluster_error::ClusterError;
use crate::control::{ControlReceiver, ControlWriter, ToChild, ToMaster};
use crate::messenger::Messenger;
use crate::role::ChildEnv;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the application's worker function is given: who this worker is, its Agent, its shared
/// listeners, and the signals for when the cluster is ready and when to stop.
#[derive(Debug, Clone)]
pub struct Worker {
    id: u32,
    agent: &'static Agent,
    stopping: watch::Receiver<bool>,
    cluster_ready: watch::Receiver<bool>,
    listeners: Arc<Vec<std::net::TcpListener>>,
    ready: Arc<ReadySignal>,
}

/// Reports this worker ready to the master, once.
#[derive(Debug)]
struct ReadySignal {
    sent: AtomicBool,
    outbox: ControlWriter,
}

impl ReadySignal {
    fn send(&self) {
        if !self.sent.swap(true, Ordering::SeqCst) {
            self.outbox.send(ToMaster::Ready {
                services: String::new(),
            });
            tracing::info!("worker ready");
        }
    }
}

impl Worker {
    /// This worker's id, from 0 to the number of workers − 1. A restarted or reloaded worker
    /// keeps the id of the one it replaces.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// This process's pid.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// This process's messenger (the same as [`Messenger::get`]).
    pub fn messenger(&self) -> &'static Messenger {
        Messenger::get()
    }

    /// The Agent, connected to the Library (the same as [`Agent::get`]).
    pub fn agent(&self) -> &'static Agent {
        self.agent
    }

    /// The first shared listener set with [`Cluster::listen`](crate::Cluster::listen), as a
    /// tokio listener. Each call returns a new handle on the same socket.
    ///
    /// # Errors
    /// When the cluster has no listener, or the descriptor cannot be duplicated.
    pub fn listener(&self) -> Result<tokio::net::TcpListener, ClusterError> {
        self.listeners()?
            .into_iter()
            .next()
            .ok_or_else(|| ClusterError::Protocol {
                message: "this cluster has no listener: call Cluster::listen(addr)".into(),
            })
    }

    /// Every shared listener, in the order of the `Cluster::listen` calls.
    ///
    /// # Errors
    /// When a descriptor cannot be duplicated or registered with tokio.
    pub fn listeners(&self) -> Result<Vec<tokio::net::TcpListener>, ClusterError> {
        self.listeners
            .iter()
            .map(|l| {
                let copy = l
                    .try_clone()
                    .map_err(|e| ClusterError::io("cannot duplicate a shared listener", e))?;
                tokio::net::TcpListener::from_std(copy)
                    .map_err(|e| ClusterError::io("cannot register a shared listener", e))
            })
            .collect()
    }

    /// Reports this worker ready. Needed only with
    /// [`Cluster::explicit_ready`](crate::Cluster::explicit_ready); otherwise the worker was
    /// reported ready when its Agent connected, and this does nothing.
    pub fn ready(&self) {
        self.ready.send();
    }

    /// Resolves when the master asks this worker to stop (graceful shutdown, or a rolling
    /// reload replacing it): finish what is in flight and return from the worker function.
    /// Workers still running after the grace period are killed.
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
pub(crate) async fn run<F, Fut, E>(env: ChildEnv, config: &ClusterConfig, app: F) -> i32
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let worker = match join(&env, config).await {
        Ok(worker) => worker,
        Err(e) => {
            tracing::error!("worker could not start: {e}");
            return EXIT_START_FAILED;
        }
    };
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

/// Takes the control socket and the listeners, connects the Agent, reports ready (unless the
/// application does), and starts the tasks that carry the master's messages.
async fn join(env: &ChildEnv, cluster: &ClusterConfig) -> Result<Worker, ClusterError> {
    let (control, mut init) = crate::control::join_master(env).await?;
    let listeners = crate::listeners::inherited(env.listen_fds)?;
    let (sender, receiver) = control.split();
    let outbox = ControlWriter::spawn(sender);
    let messenger = Messenger::install(outbox.clone());
    messenger.preload(
        std::mem::take(&mut init.members),
        std::mem::take(&mut init.published),
    );
    let config = AgentConfig {
        socket: init.library_socket.clone(),
        token: init.token.clone(),
        worker_id: env.worker_id,
        max_frame: usize::try_from(init.max_frame).unwrap_or(usize::MAX),
        call_timeout: Duration::from_millis(init.call_timeout_ms),
        handshake_timeout: Duration::from_millis(init.handshake_timeout_ms),
    };
    let patience = Duration::from_millis(init.worker_ready_timeout_ms);
    let (stopping_tx, stopping) = watch::channel(false);
    let (ready_tx, cluster_ready) = watch::channel(false);
    let joined = async {
        // Installed first, so a setup step can call the Library.
        let agent = Agent::connect_within(&config, patience).await?.install();
        // The master's messages from now on: the published values it replays right after the
        // init message reach the messenger while a setup step waits for them.
        tokio::spawn(follow_master(
            receiver,
            agent,
            messenger,
            outbox.clone(),
            stopping_tx,
            ready_tx,
        ));
        for setup in &cluster.worker_setup {
            setup.run().await.map_err(|e| ClusterError::Protocol {
                message: format!("worker setup failed: {e}"),
            })?;
        }
        Ok::<_, ClusterError>(agent)
    };
    let agent = match joined.await {
        Ok(agent) => agent,
        Err(e) => {
            outbox.send(ToMaster::Failed {
                reason: e.to_string(),
            });
            outbox.flush().await;
            return Err(e);
        }
    };
    let ready = Arc::new(ReadySignal {
        sent: AtomicBool::new(false),
        outbox,
    });
    if !cluster.explicit_ready {
        ready.send();
    }
    Ok(Worker {
        id: env.worker_id,
        agent,
        stopping,
        cluster_ready,
        listeners: Arc::new(listeners),
        ready,
    })
}

/// Turns the master's messages into the worker's signals, for the worker's whole life.
async fn follow_master(
    mut receiver: ControlReceiver,
    agent: &'static Agent,
    messenger: &'static Messenger,
    outbox: ControlWriter,
    stopping: watch::Sender<bool>,
    cluster_ready: watch::Sender<bool>,
) {
    loop {
        let msg = receiver
            .recv::<ToChild>()
            .await
            .map(|m| m.map(|m| messenger.handle(m)));
        match msg {
            Ok(Some(None)) => {}
            Ok(Some(Some(ToChild::ClusterReady))) => {
                cluster_ready.send_replace(true);
            }
            Ok(Some(Some(ToChild::LibraryRestarted))) => agent.reconnect_now(),
            Ok(Some(Some(ToChild::StatsRequest { id }))) => {
                let (calls, in_flight) = agent.call_counts();
                outbox.send(ToMaster::Stats {
                    id,
                    calls,
                    in_flight,
                    methods: Vec::new(),
                });
            }
            Ok(Some(Some(ToChild::Shutdown))) => {
                tracing::info!("asked to stop");
                stopping.send_replace(true);
            }
            Ok(Some(Some(_))) => {}
            Ok(None) | Err(_) => {
                // The master is gone (PDEATHSIG kills us too if it died).
                tracing::error!("the master closed the control socket; exiting");
                std::process::exit(1);
            }
        }
    }
}
