//! `dispatchctl`: operate the running clusters of this user.
//!
//! ```text
//! dispatchctl list
//! dispatchctl [--cluster NAME|PID] status [--methods] [--json]
//! dispatchctl [--cluster NAME|PID] reload
//! dispatchctl [--cluster NAME|PID] stop
//! ```

use anyhow::{bail, Context, Result};
use dispatch_core::admin::{discover, Request, Response};
use dispatch_core::ClusterStatus;

const USAGE: &str =
    "usage: dispatchctl [--cluster NAME|PID] <list | status [--methods] [--json] | reload | stop>";

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
    let command = match args.as_slice() {
        [one] => one.as_str(),
        [] => bail!("{USAGE}"),
        more => bail!("unexpected arguments {more:?}\n{USAGE}"),
    };
    let request = match command {
        "list" => None,
        "status" => Some(Request::Status { methods }),
        "reload" => Some(Request::Reload),
        "stop" => Some(Request::Stop),
        other => bail!("unknown command `{other}`\n{USAGE}"),
    };
    let found = discover()?;
    let Some(request) = request else {
        let mine = found.mine();
        if mine.is_empty() {
            println!("no cluster is running for this user");
        }
        for c in mine {
            println!(
                "{:<20} master pid {:<8} {}",
                c.name,
                c.master_pid,
                c.dir.display()
            );
        }
        return Ok(());
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
        Response::Status(status) => print_status(&status, methods),
        Response::Done(what) => println!("{} (pid {}): {what}", target.name, target.master_pid),
        Response::Refused(why) => {
            bail!("{} (pid {}) refused: {why}", target.name, target.master_pid)
        }
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

fn print_status(status: &ClusterStatus, methods: bool) {
    let listening = if status.listeners.is_empty() {
        String::new()
    } else {
        format!(", listening on {}", status.listeners.join(", "))
    };
    println!(
        "cluster {} (master pid {}, up {}{listening})",
        status.name,
        status.master_pid,
        duration(status.uptime_ms)
    );
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
                p.rss_kib
                    .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                p.calls.map_or("?".into(), |c| c.to_string()),
                p.in_flight.map_or("?".into(), |c| c.to_string()),
            ]
        })
        .collect();
    table(
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
    if methods {
        println!();
        let rows: Vec<[String; 5]> = status
            .methods
            .iter()
            .map(|m| {
                let errors: Vec<String> =
                    m.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
                [
                    format!("{}.{}", m.service, m.method),
                    m.calls.to_string(),
                    if errors.is_empty() {
                        "0".into()
                    } else {
                        errors.join(" ")
                    },
                    format!("{} µs", m.p50_us),
                    format!("{} µs", m.p99_us),
                ]
            })
            .collect();
        table(&["METHOD", "CALLS", "ERRORS", "P50", "P99"], &rows);
    }
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
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
