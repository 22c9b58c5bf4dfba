//! The Library's part in a handover (the master's `master/handover.rs` runs it): the old
//! Library takes its services' snapshots when told to, once no worker calls it any more; the
//! new one restores them, then admits the calls it held at its gate.

use super::hosted::Services;
use crate::wire::{ControlWriter, ToChild, ToMaster, MAX_MESSAGE};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the old Library waits for its calls still running (cut by their deadlines on the
/// worker's side, say) to end before it takes the snapshots anyway.
const QUIET_WAIT: Duration = Duration::from_secs(5);

/// The most bytes of snapshots, over every service: they travel in one control message, with
/// room for its envelope and the service names.
const SNAPSHOT_BUDGET: usize = MAX_MESSAGE - 4096;

/// Follows the master's handover orders for the Library's life.
pub(super) async fn follow(
    mut orders: mpsc::UnboundedReceiver<ToChild>,
    services: Arc<Services>,
    outbox: ControlWriter,
) {
    while let Some(order) = orders.recv().await {
        match order {
            ToChild::Snapshot => {
                let quiet = tokio::time::Instant::now() + QUIET_WAIT;
                while services.call_counts().1 > 0 && tokio::time::Instant::now() < quiet {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let running = services.call_counts().1;
                if running > 0 {
                    tracing::warn!(
                        "handover: {running} calls still run after {QUIET_WAIT:?}: taking the \
                         snapshots anyway"
                    );
                }
                let state = match services.snapshot(SNAPSHOT_BUDGET).await {
                    Ok(s) => {
                        tracing::info!("handover: took {} service snapshots", s.len());
                        Ok(s)
                    }
                    Err(e) => {
                        tracing::error!("handover: no snapshot: {e}");
                        Err(e.to_string())
                    }
                };
                let _ = outbox.send(&ToMaster::Snapshot { state });
            }
            ToChild::Restore { state } => {
                services.restore(state).await;
                let _ = outbox.send(&ToMaster::Restored);
            }
            // Not for a Library.
            _ => {}
        }
    }
}
