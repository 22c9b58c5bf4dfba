//! Finding the running clusters of this user: the runtime dirs of live masters that hold an
//! admin socket.

use super::{AdminError, Request, Response, NAME_FILE, RETIRING_FILE, SOCKET, UPGRADING_FILE};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

/// A cluster found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its name.
    pub name: String,
    /// Its master's pid.
    pub master_pid: u32,
    /// Its runtime dir.
    pub dir: PathBuf,
    /// The uid owning it.
    pub owner: u32,
    /// A master started by an upgrade that has not taken over yet (the old master of the
    /// same name is the one to talk to).
    pub upgrading: bool,
    /// A master that handed over to a new one in an upgrade and is stopping.
    pub retiring: bool,
}

impl Found {
    /// How much a master is the one to talk to among masters of the same name: a plain one,
    /// then one taking over in an upgrade, then one retiring.
    fn standing(&self) -> u8 {
        match (self.retiring, self.upgrading) {
            (false, false) => 0,
            (false, true) => 1,
            (true, _) => 2,
        }
    }
}

/// Every cluster of this user found.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// All clusters found, by master pid.
    pub clusters: Vec<Found>,
    /// Where they were looked for.
    pub looked_in: Vec<PathBuf>,
}

/// Looks for running clusters where masters create their runtime dirs.
///
/// # Errors
/// None today; kept for future sources.
pub fn discover() -> Result<Discovered, AdminError> {
    let mut looked_in = vec![crate::process::runtime_dir::base_dir()];
    if !looked_in.contains(&std::env::temp_dir()) {
        looked_in.push(std::env::temp_dir());
    }
    let mut clusters = Vec::new();
    for base in &looked_in {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = crate::process::runtime_dir::master_pid_of(&name.to_string_lossy())
            else {
                continue;
            };
            let dir = entry.path();
            let Ok(meta) = dir.symlink_metadata() else {
                continue;
            };
            if !meta.is_dir() || !crate::process::runtime_dir::pid_alive(pid as i32) {
                continue;
            }
            // Only our own dirs: anyone can create a dir named like ours in a shared temp dir
            // (even with our master's pid in its name), and it must not hide or stand in for
            // the real cluster (issue 12). A master of another user is not ours to operate.
            let you = nix::unistd::getuid().as_raw();
            if meta.uid() != you {
                tracing::debug!(
                    dir = %dir.display(),
                    owner = meta.uid(),
                    you,
                    "ignored a runtime dir of another user"
                );
                continue;
            }
            if !dir.join(SOCKET).exists() {
                continue;
            }
            let cluster_name = std::fs::read_to_string(dir.join(NAME_FILE))
                .map(|n| n.trim().to_owned())
                .unwrap_or_else(|_| "?".into());
            clusters.push(Found {
                name: cluster_name,
                master_pid: pid,
                upgrading: dir.join(UPGRADING_FILE).exists(),
                retiring: dir.join(RETIRING_FILE).exists(),
                dir,
                owner: meta.uid(),
            });
        }
    }
    clusters.sort_by_key(|c| c.master_pid);
    clusters.dedup_by_key(|c| c.master_pid);
    Ok(Discovered {
        clusters,
        looked_in,
    })
}

impl Discovered {
    /// The clusters of this user.
    pub fn mine(&self) -> Vec<&Found> {
        let you = nix::unistd::getuid().as_raw();
        self.clusters.iter().filter(|c| c.owner == you).collect()
    }

    /// The cluster named `wanted` or with that master pid; with `None`, the only one of this
    /// user.
    ///
    /// # Errors
    /// No cluster, none matching, several to choose from, or another user's.
    pub fn select(&self, wanted: Option<&str>) -> Result<Found, AdminError> {
        let you = nix::unistd::getuid().as_raw();
        let list = |cs: &[&Found]| -> String {
            let names: Vec<String> = cs
                .iter()
                .map(|c| format!("{} (pid {})", c.name, c.master_pid))
                .collect();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        };
        let all: Vec<&Found> = self.clusters.iter().filter(|c| c.owner == you).collect();
        // During an upgrade two masters share a name: the one to talk to is the one serving
        // (the old one until the new one has taken over, then the new one).
        let mine: Vec<&Found> = all
            .iter()
            .copied()
            .filter(|c| {
                !all.iter()
                    .any(|o| o.name == c.name && o.standing() < c.standing())
            })
            .collect();
        let chosen = match wanted {
            Some(w) => {
                // A master pid is one cluster; a name may be several: then choosing one of
                // them silently could stop the wrong one.
                let by_pid = all.iter().find(|c| c.master_pid.to_string() == w);
                let by_name: Vec<&Found> = mine.iter().copied().filter(|c| c.name == w).collect();
                match (by_pid, by_name.as_slice()) {
                    (Some(c), _) => *c,
                    (None, [one]) => *one,
                    (None, []) => {
                        return Err(AdminError::NotFound {
                            wanted: w.to_owned(),
                            running: list(&mine),
                        })
                    }
                    (None, many) => {
                        return Err(AdminError::AmbiguousName {
                            name: w.to_owned(),
                            count: many.len(),
                            running: list(many),
                        })
                    }
                }
            }
            None => match mine.as_slice() {
                [] => {
                    return Err(AdminError::NoCluster {
                        looked_in: self
                            .looked_in
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
                [one] => *one,
                many => {
                    return Err(AdminError::Ambiguous {
                        count: many.len(),
                        running: list(many),
                    })
                }
            },
        };
        if chosen.owner != you {
            return Err(AdminError::PermissionDenied {
                dir: chosen.dir.display().to_string(),
                owner: chosen.owner,
                you,
            });
        }
        Ok(chosen.clone())
    }
}

impl Found {
    /// Sends `request` to the cluster's master and returns its answer (within 10 s; an upgrade
    /// is answered when it is over, bounded by the master's own deadlines, so within 10 min).
    ///
    /// # Errors
    /// When the master cannot be reached or does not answer properly.
    pub async fn request(&self, request: Request) -> Result<Response, AdminError> {
        let pid = self.master_pid;
        let request_kind = match request {
            Request::Upgrade => RequestKind::Upgrade,
            _ => RequestKind::Other,
        };
        let fail = |problem: String| AdminError::Master { pid, problem };
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(self.dir.join(SOCKET))
                .await
                .map_err(|e| fail(format!("cannot be reached: {e}")))?;
            let mut framed = crate::wire::framed(stream, super::MAX_ADMIN_FRAME);
            let bytes = crate::wire::codec::encode(&request).map_err(|e| fail(e.to_string()))?;
            framed
                .send(Bytes::from(bytes))
                .await
                .map_err(|e| fail(format!("cannot be written to: {e}")))?;
            let frame = framed
                .next()
                .await
                .ok_or_else(|| fail("closed the connection without answering".into()))?
                .map_err(|e| fail(format!("cannot be read from: {e}")))?;
            crate::wire::codec::decode::<Response>(&frame)
                .map_err(|e| fail(format!("sent an undecodable answer: {e}")))
        };
        let limit = match request_kind {
            RequestKind::Upgrade => Duration::from_secs(600),
            RequestKind::Other => Duration::from_secs(10),
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| fail(format!("did not answer within {limit:?}")))?
    }
}

enum RequestKind {
    Upgrade,
    Other,
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    fn found(pid: u32, upgrading: bool, retiring: bool) -> Found {
        Found {
            name: "app".into(),
            master_pid: pid,
            dir: PathBuf::from(format!("/tmp/dispatch-{pid}-x")),
            owner: nix::unistd::getuid().as_raw(),
            upgrading,
            retiring,
        }
    }

    fn select(clusters: Vec<Found>, wanted: Option<&str>) -> u32 {
        Discovered {
            clusters,
            looked_in: Vec::new(),
        }
        .select(wanted)
        .expect("one is chosen")
        .master_pid
    }

    #[test]
    fn the_name_leads_to_the_master_serving_during_an_upgrade() {
        // Before the new master is ready: the old one.
        let before = vec![found(10, false, false), found(20, true, false)];
        assert_eq!(select(before.clone(), Some("app")), 10);
        assert_eq!(select(before, None), 10);
        // Once the old one retires: the new one, whether or not it has cleared its mark.
        assert_eq!(
            select(
                vec![found(10, false, true), found(20, true, false)],
                Some("app")
            ),
            20
        );
        assert_eq!(
            select(vec![found(10, false, true), found(20, false, false)], None),
            20
        );
        // A pid still selects either.
        assert_eq!(
            select(
                vec![found(10, false, true), found(20, false, false)],
                Some("10")
            ),
            10
        );
    }
}
