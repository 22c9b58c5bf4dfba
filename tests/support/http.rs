//! A small HTTP/1.1 client and a load generator: one new connection per request, so the
//! kernel spreads requests over the cluster's workers.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `GET path` on `addr`: the status code and the body.
pub fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub at: Instant,
    pub ok: bool,
    /// `200 <counter> <pid>`, `503 <error>` or the I/O error.
    pub detail: String,
}

/// Requests sent by [`Load`], in order of completion.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok).count()
    }
    pub fn failed(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !o.ok).collect()
    }
    /// The worker pids that answered after `since`.
    pub fn pids_after(&self, since: Instant) -> HashSet<String> {
        self.outcomes
            .iter()
            .filter(|o| o.ok && o.at >= since)
            .filter_map(|o| o.detail.split_whitespace().nth(2).map(str::to_owned))
            .collect()
    }
}

/// `threads` clients sending `GET /` back to back until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: &str, threads: usize) -> Load {
        Load::paced(addr, threads, Duration::ZERO)
    }

    /// As [`Load::start`], each client pausing `pause` after each request.
    pub fn paced(addr: &str, threads: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let threads = (0..threads)
            .map(|_| {
                let (addr, stop, report) =
                    (addr.to_owned(), Arc::clone(&stop), Arc::clone(&report));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let (ok, detail) = match get(&addr, "/") {
                            Ok((200, body)) => (true, format!("200 {body}")),
                            Ok((code, body)) => (false, format!("{code} {body}")),
                            Err(e) => (false, e.to_string()),
                        };
                        if let Ok(mut r) = report.lock() {
                            r.outcomes.push(Outcome {
                                at: Instant::now(),
                                ok,
                                detail,
                            });
                        }
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            threads,
        }
    }

    /// Requests completed so far.
    pub fn count(&self) -> usize {
        self.report.lock().map(|r| r.outcomes.len()).unwrap_or(0)
    }

    /// Stops the clients and returns every outcome.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Arc::try_unwrap(self.report)
            .ok()
            .and_then(|m| m.into_inner().ok())
            .unwrap_or_default()
    }
}
