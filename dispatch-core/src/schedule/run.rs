//! A child's side of a schedule: run the task the master ordered, bounded by its timeout, and
//! report how it ended. The run is its own task, so a panic in it is a failed run, not a dead
//! process.

use super::{TaskContext, Tasks};
use crate::wire::{ControlWriter, TaskOrder, TaskReport, ToMaster};
use std::time::Instant;

/// Starts the run `order` asks for; its report goes to the master through `outbox`.
pub(crate) fn start_run(tasks: &Tasks, order: TaskOrder, outbox: ControlWriter) {
    let task = tasks.0.get(&order.schedule).cloned();
    tokio::spawn(async move {
        let started = Instant::now();
        let result = match task {
            None => Err(format!(
                "this process has no code for schedule `{}`: does every process build the same \
                 Cluster (schedules declared before `Cluster::run`, not by role)?",
                order.schedule
            )),
            Some(task) => {
                let ctx = TaskContext {
                    schedule: order.schedule.clone(),
                    tick: order.tick,
                    run: order.run,
                };
                let mut handle = tokio::spawn(task(ctx));
                let joined = match order.timeout {
                    Some(limit) => match tokio::time::timeout(limit, &mut handle).await {
                        Ok(joined) => joined,
                        Err(_) => {
                            handle.abort();
                            Ok(Err(format!("timed out after {limit:?}: cancelled")))
                        }
                    },
                    None => handle.await,
                };
                match joined {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => Err("panicked".to_owned()),
                    Err(_) => Err("cancelled".to_owned()),
                }
            }
        };
        if let Err(why) = &result {
            tracing::warn!(
                schedule = %order.schedule,
                tick = order.tick,
                "scheduled run failed: {why}"
            );
        }
        let report = TaskReport {
            run: order.run,
            result,
            elapsed: started.elapsed(),
        };
        // Only a closed socket refuses it, and then the master is gone.
        let _ = outbox.send(&ToMaster::TaskDone(report));
    });
}
