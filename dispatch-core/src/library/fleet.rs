//! Fleet singleton services (issue 17): a service named by `Cluster::fleet_singleton` is active
//! in one host's Library at a time. Each Library runs an elector per such service on a renewed
//! Redis lease (`crate::schedule::lease`): the holder serves the service's calls, the others
//! are on standby and answer `NotLeader` (or hold the call until they lead, by option).
//!
//! Safety: a Library serves only while its lease is trusted (`Leadership::active`: up to 80 %
//! of the lease after the renewal was sent), which ends before Redis lets anyone else take it.
//! Takeover: a standby looks again when the holder's lease runs out (its PTTL, plus 2 ms), and
//! at least every tenth of the lease, so a dead leader is replaced a few milliseconds after its
//! lease ends: within one lease of its last renewal. A Library that stops releases its leases
//! at once.
//!
//! Without the `redis` feature there is no fleet, and most of this is unused.
#![cfg_attr(not(feature = "redis"), allow(unused_imports, dead_code))]

use crate::wire::{ControlWriter, ToMaster};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One singleton's state in this Library.
#[derive(Debug)]
pub(crate) struct Leadership {
    /// Until when this Library may serve the service (`None`: standby).
    until: watch::Sender<Option<Instant>>,
    /// The leading host as last read from Redis.
    leader: Mutex<Option<String>>,
    /// Whether a call on standby waits for leadership (up to the caller's deadline).
    pub(crate) wait: bool,
}

impl Leadership {
    pub(crate) fn new(wait: bool) -> Arc<Leadership> {
        Arc::new(Leadership {
            until: watch::channel(None).0,
            leader: Mutex::new(None),
            wait,
        })
    }

    /// Whether this Library leads now.
    pub(crate) fn active(&self) -> bool {
        self.until
            .borrow()
            .is_some_and(|until| Instant::now() < until)
    }

    /// The leading host, as last read.
    pub(crate) fn leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves once this Library leads (the caller bounds it by its deadline).
    pub(crate) async fn until_active(&self) {
        let mut rx = self.until.subscribe();
        loop {
            let until = *rx.borrow_and_update();
            match until {
                Some(until) if Instant::now() < until => return,
                _ => {
                    if rx.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

/// Runs the elector of `service` for the Library's life; returns a handle that releases it.
#[cfg(feature = "redis")]
pub(crate) fn elect(
    settings: &crate::settings::FleetSettings,
    cluster: &str,
    service: &str,
    leadership: Arc<Leadership>,
    outbox: ControlWriter,
) -> tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>> {
    use crate::schedule::lease::{connect, Lease};
    let host = settings
        .host
        .clone()
        .unwrap_or_else(|| format!("{}:{}", hostname(), std::os::unix::process::parent_id()));
    let key = format!("dispatch:{cluster}:leader:{service}");
    let ttl = settings.lease;
    let url = settings.url.clone();
    let service = service.to_owned();
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<tokio::sync::oneshot::Sender<()>>();
    tokio::spawn(async move {
        let mut lease = Lease::new(key, host.clone(), ttl);
        let mut conn = None;
        let limit = (ttl / 4).max(Duration::from_millis(50));
        let mut was: Option<(bool, Option<String>)> = None;
        let mut down = false;
        loop {
            if conn.is_none() {
                conn = connect(&url, limit).await.ok();
            }
            let outcome = match conn.as_mut() {
                Some(c) => match tokio::time::timeout(limit, step(&mut lease, c, &host)).await {
                    Ok(Ok(ok)) => Ok(ok),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {limit:?}")),
                },
                None => Err("cannot connect".to_owned()),
            };
            // On standby: look again when the leader's lease runs out (a dead leader is
            // replaced a few milliseconds after its lease ends), and at least every tenth.
            let mut pause = ttl / 10;
            let (active, leader) = match outcome {
                Ok((active, leader, trusted, left)) => {
                    if let Some(left) = left {
                        pause = pause.min(left + Duration::from_millis(2));
                    }
                    if down {
                        down = false;
                        tracing::info!(%service, "the fleet's Redis answers again");
                    }
                    // The lease's own trusted end: 80 % of the lease after the renewal was sent.
                    let until = trusted.filter(|_| active).map(Instant::from_std);
                    leadership.until.send_replace(until);
                    (active, leader)
                }
                Err(why) => {
                    // Unreachable: stop serving at once (another host may take over).
                    leadership.until.send_replace(None);
                    conn = None;
                    if !down {
                        down = true;
                        tracing::warn!(%service, "cannot reach the fleet's Redis ({why}): standing by");
                    }
                    (false, None)
                }
            };
            *leadership
                .leader
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = leader.clone();
            if was.as_ref() != Some(&(active, leader.clone())) {
                if active {
                    tracing::info!(
                        %service,
                        host = %host,
                        fencing_token = ?lease.token(),
                        "this host leads the fleet singleton"
                    );
                } else {
                    tracing::info!(%service, leader = ?leader, "fleet singleton on standby");
                }
                let _ = outbox.send(&ToMaster::FleetRole {
                    service: service.clone(),
                    active,
                    leader: leader.clone(),
                });
                was = Some((active, leader));
            }
            if active {
                pause = ttl / 4;
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                done = &mut stop => {
                    leadership.until.send_replace(None);
                    if let Some(c) = conn.as_mut() {
                        let _ = tokio::time::timeout(limit, lease.release(c)).await;
                    }
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    });
    stop_tx
}

/// One election step: renew or acquire, then read who leads (and, on standby, how long its
/// lease has left).
#[cfg(feature = "redis")]
async fn step(
    lease: &mut crate::schedule::lease::Lease,
    c: &mut redis::aio::MultiplexedConnection,
    host: &str,
) -> redis::RedisResult<(
    bool,
    Option<String>,
    Option<std::time::Instant>,
    Option<Duration>,
)> {
    let active = lease.step(c).await?;
    let (leader, left) = if active {
        (Some(host.to_owned()), None)
    } else {
        (lease.holder(c).await?, lease.remaining(c).await?)
    };
    Ok((active, leader, lease.trusted_until(), left))
}

#[cfg(feature = "redis")]
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}
