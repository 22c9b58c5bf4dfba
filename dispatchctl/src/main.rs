//! `dispatchctl`: operate the running clusters of this user.
//!
//! ```text
//! dispatchctl list
//! dispatchctl [--cluster NAME|PID] status [--methods] [--schedules] [--json]
//! dispatchctl [--cluster NAME|PID] reload [--library]
//! dispatchctl [--cluster NAME|PID] scale N|+K|-K
//! dispatchctl [--cluster NAME|PID] stop
//! dispatchctl [--cluster NAME|PID] upgrade
//! ```
//!
//! `upgrade` replaces every process of the cluster, the master included, by the build now on
//! disk at the path the cluster was started from; it returns when the new master has taken
//! over (printing its pid), or exits 1 with the reason when the new build failed and the old
//! cluster serves on. Later commands find the new master by the cluster's name.

use anyhow::{bail, Context, Result};
use dispatch_core::admin::{discover, Request, Response, Scale};
use dispatch_core::ClusterStatus;

const USAGE: &str =
    "usage: dispatchctl [--cluster NAME|PID] <list | status [--methods] [--schedules] [--json] | reload [--library] | scale N|+K|-K | stop | upgrade>";

fn main() {
    if let Err(e) = run() {
        eprintln!("dispatchctl: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cluster = take_value(&mut args, "--cluster")?;
    let json = take_flag(&mut args, "--json");
    let methods = take_flag(&mut args, "--methods");
    let schedules = take_flag(&mut args, "--schedules");
    // `reload --library`: a Library handover instead of a rolling reload of the workers.
    let library = take_flag(&mut args, "--library");
    let (command, count) = match args.as_slice() {
        [scale, count] if scale == "scale" => (scale.as_str(), Some(count.as_str())),
        [one] => (one.as_str(), None),
        [] => bail!("{USAGE}"),
        more => bail!("unexpected arguments {more:?}\n{USAGE}"),
    };
    let request = match (command, count) {
        ("scale", Some(count)) => Some(Request::Scale(count.parse::<Scale>()?)),
        ("scale", None) => bail!("scale needs a worker count: N, +K or -K\n{USAGE}"),
        (command, _) => command_request(command, methods, library)?,
    };
    let found = discover()?;
    let Some(request) = request else {
        return list(&found);
    };
    let target = found.select(cluster.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    match runtime.block_on(target.request(request))? {
        Response::Status(status) if json => {
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        Response::Status(status) => {
            print!("{}", render_status(&status, methods));
            print!("{}", render_fleet(&status, schedules));
        }
        Response::Done(what) => println!("{} (pid {}): {what}", target.name, target.master_pid),
        Response::Refused(why) => {
            bail!("{} (pid {}) refused: {why}", target.name, target.master_pid)
        }
    }
    Ok(())
}

/// The request of a one-word command; `None` for `list`.
fn command_request(command: &str, methods: bool, library: bool) -> Result<Option<Request>> {
    Ok(match command {
        "list" => None,
        "status" => Some(Request::Status { methods }),
        "reload" if library => Some(Request::ReloadLibrary),
        "reload" => Some(Request::Reload),
        "stop" => Some(Request::Stop),
        "upgrade" => Some(Request::Upgrade),
        other => bail!("unknown command `{other}`\n{USAGE}"),
    })
}

/// `dispatchctl list`: this user's running clusters.
fn list(found: &dispatch_core::admin::Discovered) -> Result<()> {
    let mine = found.mine();
    if mine.is_empty() {
        println!("no cluster is running for this user");
    }
    for c in mine {
        let phase = if c.retiring {
            " (retiring after an upgrade)"
        } else if c.upgrading {
            " (upgrading: taking over)"
        } else {
            ""
        };
        println!(
            "{:<20} master pid {:<8} {}{phase}",
            c.name,
            c.master_pid,
            c.dir.display()
        );
    }
    Ok(())
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn take_value(args: &mut Vec<String>, flag: &str) -> Result<Option<String>> {
    let Some(at) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    if at + 1 >= args.len() {
        bail!("{flag} needs a value\n{USAGE}");
    }
    let value = args.remove(at + 1);
    args.remove(at);
    Ok(Some(value))
}

/// The human view of a status: the processes, and with `methods` the Library's methods.
fn render_status(status: &ClusterStatus, methods: bool) -> String {
    let mut out = String::new();
    let listening = if status.listeners.is_empty() {
        String::new()
    } else {
        format!(", listening on {}", status.listeners.join(", "))
    };
    out.push_str(&format!(
        "cluster {} (master pid {}, {} worker{}, up {}{listening})\n",
        status.name,
        status.master_pid,
        status.workers,
        if status.workers == 1 { "" } else { "s" },
        duration(status.uptime_ms)
    ));
    let mut unknown = false;
    let mut or_unknown = |v: Option<String>| {
        v.unwrap_or_else(|| {
            unknown = true;
            "?".into()
        })
    };
    let rows: Vec<[String; 9]> = status
        .processes
        .iter()
        .map(|p| {
            [
                p.role.clone(),
                p.worker_id.map_or("-".into(), |id| id.to_string()),
                p.pid.to_string(),
                p.state.clone(),
                p.restarts.to_string(),
                duration(p.uptime_ms),
                or_unknown(p.rss_kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))),
                or_unknown(p.calls.map(|c| c.to_string())),
                or_unknown(p.in_flight.map(|c| c.to_string())),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "ROLE",
            "ID",
            "PID",
            "STATE",
            "RESTARTS",
            "UPTIME",
            "RSS",
            "CALLS",
            "IN FLIGHT",
        ],
        &rows,
    );
    if unknown {
        out.push_str("? = the process did not answer in time (starting, busy or hung)\n");
    }
    for p in &status.processes {
        if let Some(handover) = &p.last_handover {
            out.push_str(&format!("library: last {handover}\n"));
        }
    }
    // Why each slot's worker was last recycled (a recycle is not a restart).
    for p in &status.processes {
        if let (Some(id), Some(why)) = (p.worker_id, &p.last_recycle) {
            let count = match p.recycles {
                0 => "no time".to_owned(),
                1 => "once".to_owned(),
                n => format!("{n} times"),
            };
            out.push_str(&format!("worker {id} recycled {count}, last: {why}\n"));
        }
    }
    if methods {
        out.push('\n');
        let rows: Vec<[String; 5]> = status
            .methods
            .iter()
            .map(|m| {
                let errors: Vec<String> =
                    m.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
                let never = m.calls == 0;
                [
                    format!("{}.{}", m.service, m.method),
                    m.calls.to_string(),
                    if errors.is_empty() {
                        "0".into()
                    } else {
                        errors.join(" ")
                    },
                    if never { "-".into() } else { latency(m.p50_us) },
                    if never { "-".into() } else { latency(m.p99_us) },
                ]
            })
            .collect();
        table(
            &mut out,
            &["METHOD", "CALLS", "ERRORS", "P50", "P99"],
            &rows,
        );
        if rows.iter().any(|r| r[3] == "-") {
            out.push_str("- = never called\n");
        }
    }
    out
}

/// The schedules (with `schedules`) and the fleet singletons (whenever there are any).
fn render_fleet(status: &ClusterStatus, schedules: bool) -> String {
    let mut out = String::new();
    if schedules {
        out.push('\n');
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let rows: Vec<[String; 8]> = status
            .schedules
            .iter()
            .map(|s| {
                let last = match &s.last_run {
                    None => "-".to_owned(),
                    Some(l) => format!(
                        "{} ago on {}, {}: {}",
                        duration(now.saturating_sub(l.tick)),
                        l.process,
                        duration(l.elapsed_ms),
                        l.error.as_deref().unwrap_or("ok")
                    ),
                };
                let next = s.next_run_ms.map_or("-".to_owned(), |n| {
                    format!("in {}", duration(n.saturating_sub(now)))
                });
                [
                    s.name.clone(),
                    s.trigger.clone(),
                    format!("{}{}", s.target, if s.fleet { " (fleet)" } else { "" }),
                    s.runs.to_string(),
                    s.failures.to_string(),
                    format!("{}/{}/{}", s.skips, s.missed, s.elsewhere),
                    next,
                    last,
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "SCHEDULE",
                "TRIGGER",
                "TARGET",
                "RUNS",
                "FAILED",
                "SKIP/MISS/ELSEWHERE",
                "NEXT",
                "LAST RUN",
            ],
            &rows,
        );
    }
    if !status.singletons.is_empty() {
        out.push('\n');
        let rows: Vec<[String; 3]> = status
            .singletons
            .iter()
            .map(|s| {
                [
                    s.service.clone(),
                    if s.active { "active" } else { "standby" }.to_owned(),
                    s.leader.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        table(&mut out, &["SINGLETON", "HERE", "LEADER"], &rows);
    }
    out
}

fn table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A latency in µs, in the unit that reads best: µs below 1 ms, ms below 1 s, then s.
fn latency(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.1} ms", us as f64 / 1_000.0),
        _ => format!("{:.2} s", us as f64 / 1_000_000.0),
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_core::{MethodStats, ProcessStatus};

    fn process(role: &str, id: Option<u32>, pid: u32, answered: bool) -> ProcessStatus {
        ProcessStatus {
            role: role.into(),
            worker_id: id,
            pid,
            state: "ready".into(),
            restarts: 0,
            uptime_ms: 61_000,
            rss_kib: Some(10_240),
            calls: answered.then_some(42),
            in_flight: answered.then_some(0),
            last_failure: None,
            recycles: 0,
            last_recycle: None,
            queued_bytes: 0,
            queued_messages: 0,
            queue_budget_bytes: 64 << 20,
            last_handover: None,
        }
    }

    fn method(name: &str, calls: u64, p50_us: u64, p99_us: u64) -> MethodStats {
        MethodStats {
            service: "demo".into(),
            method: name.into(),
            calls,
            errors: Vec::new(),
            p50_us,
            p99_us,
            latency_buckets: Vec::new(),
            latency_sum_us: 0,
        }
    }

    #[test]
    fn status_methods_output_has_units_dashes_and_legends() {
        let status = ClusterStatus {
            name: "app".into(),
            master_pid: 100,
            uptime_ms: 3_723_000,
            listeners: vec!["127.0.0.1:8080".into()],
            workers: 1,
            processes: vec![
                process("library", None, 101, true),
                process("worker", Some(0), 102, false),
            ],
            methods: vec![
                method("add", 10, 12, 980),
                method("slow", 3, 1_310_720, 2_500_000_000),
                method("never", 0, 0, 0),
            ],
            schedules: Vec::new(),
            singletons: Vec::new(),
        };
        let expected = "\
cluster app (master pid 100, 1 worker, up 1h02m, listening on 127.0.0.1:8080)
ROLE     ID  PID  STATE  RESTARTS  UPTIME  RSS       CALLS  IN FLIGHT
library  -   101  ready  0         1m01s   10.0 MiB  42     0
worker   0   102  ready  0         1m01s   10.0 MiB  ?      ?
? = the process did not answer in time (starting, busy or hung)

METHOD      CALLS  ERRORS  P50     P99
demo.add    10     0       12 µs   980 µs
demo.slow   3      0       1.31 s  2500.00 s
demo.never  0      0       -       -
- = never called
";
        assert_eq!(render_status(&status, true), expected);
    }

    #[test]
    fn status_says_why_each_worker_was_last_recycled() {
        let mut recycled = process("worker", Some(1), 103, true);
        recycled.recycles = 3;
        recycled.last_recycle = Some("rss 130 MiB > 100 MiB".into());
        let status = ClusterStatus {
            name: "app".into(),
            master_pid: 100,
            uptime_ms: 1_000,
            listeners: Vec::new(),
            workers: 2,
            processes: vec![process("worker", Some(0), 102, true), recycled],
            methods: Vec::new(),
            schedules: Vec::new(),
            singletons: Vec::new(),
        };
        let out = render_status(&status, false);
        assert!(
            out.starts_with("cluster app (master pid 100, 2 workers, up 1s)\n"),
            "{out}"
        );
        assert!(
            out.ends_with("worker 1 recycled 3 times, last: rss 130 MiB > 100 MiB\n"),
            "{out}"
        );
    }

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(latency(999), "999 µs");
        assert_eq!(latency(1_000), "1.0 ms");
        assert_eq!(latency(1_310_720), "1.31 s");
        assert_eq!(latency(250_000), "250.0 ms");
    }
}
