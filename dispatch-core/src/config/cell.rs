//! One process's copy of a configuration: the latest version and the watches that get each new
//! one.

use super::shared::Versioned;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

type Watcher<T> = mpsc::UnboundedSender<Arc<Versioned<T>>>;

/// The latest version and its watchers.
pub(super) struct Cell<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    latest: Option<Arc<Versioned<T>>>,
    watchers: Vec<Watcher<T>>,
}

impl<T> Cell<T> {
    pub(super) fn new() -> Self {
        Cell {
            state: Mutex::new(State {
                latest: None,
                watchers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the state consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn latest(&self) -> Option<Arc<Versioned<T>>> {
        self.lock().latest.clone()
    }

    /// The latest version, 0 before the first value.
    pub(super) fn version(&self) -> u64 {
        self.lock().latest.as_ref().map_or(0, |v| v.version)
    }

    /// Takes `value` if it is newer than the latest, and hands it to every watch. Returns
    /// whether it was newer.
    pub(super) fn update(&self, value: Versioned<T>) -> bool {
        let mut state = self.lock();
        if state
            .latest
            .as_ref()
            .is_some_and(|l| l.version >= value.version)
        {
            return false;
        }
        let value = Arc::new(value);
        state.latest = Some(Arc::clone(&value));
        state
            .watchers
            .retain(|w| w.send(Arc::clone(&value)).is_ok());
        true
    }

    /// A new watch: the latest value first (if any), then every newer one.
    pub(super) fn watch(&self) -> mpsc::UnboundedReceiver<Arc<Versioned<T>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        if let Some(latest) = &state.latest {
            let _ = tx.send(Arc::clone(latest));
        }
        state.watchers.push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_gets_the_latest_then_every_newer_version_never_an_older_one() {
        let cell = Cell::new();
        assert!(cell.latest().is_none());
        assert!(cell.update(Versioned {
            version: 1,
            value: "a"
        }));
        let mut watch = cell.watch();
        assert!(cell.update(Versioned {
            version: 2,
            value: "b"
        }));
        assert!(!cell.update(Versioned {
            version: 2,
            value: "stale"
        }));
        assert!(!cell.update(Versioned {
            version: 1,
            value: "older"
        }));
        assert!(cell.update(Versioned {
            version: 5,
            value: "c"
        }));
        let got: Vec<(u64, &str)> = std::iter::from_fn(|| watch.try_recv().ok())
            .map(|v| (v.version, v.value))
            .collect();
        assert_eq!(got, vec![(1, "a"), (2, "b"), (5, "c")]);
        assert_eq!(cell.version(), 5);
    }

    #[test]
    fn a_dropped_watch_is_forgotten() {
        let cell = Cell::new();
        drop(cell.watch());
        cell.update(Versioned {
            version: 1,
            value: (),
        });
        assert!(cell.lock().watchers.is_empty());
    }
}
