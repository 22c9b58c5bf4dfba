//! `dispatchctl scale N|+K|-K` and [`ClusterHandle::scale`](crate::ClusterHandle::scale): the
//! change asked for, and why the master refuses one.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A change of the number of workers.
///
/// ```
/// use dispatch::admin::Scale;
/// assert_eq!("4".parse::<Scale>(), Ok(Scale::To(4)));
/// assert_eq!("+2".parse::<Scale>(), Ok(Scale::Up(2)));
/// assert_eq!("-1".parse::<Scale>(), Ok(Scale::Down(1)));
/// assert_eq!(Scale::Up(2).target(3), Some(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scale {
    /// Run exactly this many workers.
    To(u32),
    /// Run this many more.
    Up(u32),
    /// Run this many fewer.
    Down(u32),
}

impl Scale {
    /// The number of workers this asks for when `current` run; `None` below zero or past
    /// `u32::MAX`.
    pub fn target(self, current: u32) -> Option<u32> {
        match self {
            Scale::To(n) => Some(n),
            Scale::Up(k) => current.checked_add(k),
            Scale::Down(k) => current.checked_sub(k),
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scale::To(n) => write!(f, "{n}"),
            Scale::Up(k) => write!(f, "+{k}"),
            Scale::Down(k) => write!(f, "-{k}"),
        }
    }
}

impl FromStr for Scale {
    type Err = ScaleError;

    /// `N`, `+K` or `-K`.
    fn from_str(s: &str) -> Result<Self, ScaleError> {
        let bad = || ScaleError::Syntax {
            given: s.to_owned(),
        };
        let number = |n: &str| n.parse::<u32>().map_err(|_| bad());
        match s.as_bytes().first() {
            Some(b'+') => number(&s[1..]).map(Scale::Up),
            Some(b'-') => number(&s[1..]).map(Scale::Down),
            Some(_) => number(s).map(Scale::To),
            None => Err(bad()),
        }
    }
}

/// Why a scale was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// Not `N`, `+K` or `-K`.
    #[error(
        "`{given}` is not a worker count: give N, +K or -K (as `scale 4`, `scale +2`, `scale -1`)"
    )]
    Syntax {
        /// What was given.
        given: String,
    },
    /// The change would leave no worker (or fewer than none).
    #[error("cannot scale {change} from {current} workers: a cluster runs at least 1 worker (stop it with `dispatchctl stop`)")]
    TooFew {
        /// The change asked for.
        change: Scale,
        /// The workers the master runs (or will, once a queued change is applied).
        current: u32,
    },
    /// More workers than `Cluster::max_workers` allows.
    #[error(
        "cannot scale {change} from {current} workers: the limit is {max} (Cluster::max_workers)"
    )]
    TooMany {
        /// The change asked for.
        change: Scale,
        /// The workers the master runs (or will).
        current: u32,
        /// `Cluster::max_workers`.
        max: u32,
    },
    /// The cluster is starting or stopping.
    #[error("cannot scale now: {why}")]
    NotRunning {
        /// Starting, or stopping.
        why: String,
    },
}
