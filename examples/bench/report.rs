//! Results: one row per measurement, the issue's targets, and the two outputs (a table, or one
//! JSON object per line with `--json`).

use crate::driver::Report;
use crate::{Job, Workload};
use anyhow::{ensure, Result};

/// One line of output.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) job: Job,
    pub(crate) calls: Option<Calls>,
    pub(crate) metric: Option<Metric>,
    /// calls/s over the calls/s of the floor it is compared to (same run).
    pub(crate) vs_floor: Option<f64>,
    /// calls/s over the calls/s of plain tarpc doing the same calls (same run).
    pub(crate) vs_tarpc: Option<f64>,
    /// Library CPU per call over plain tarpc's server CPU per call (same run).
    pub(crate) server_cpu_vs_tarpc: Option<f64>,
    /// Worker CPU per call over plain tarpc's client CPU per call (same run).
    pub(crate) client_cpu_vs_tarpc: Option<f64>,
    /// `threads`: calls/s over the calls/s of the current-thread Library (same round).
    pub(crate) vs_current_thread: Option<f64>,
    /// With `--rounds` above 1: the headline value (calls/s or the metric) of each round that
    /// measured one, in round order; the row shows their median.
    pub(crate) round_values: Vec<f64>,
    pub(crate) target: Option<Target>,
    /// Extra facts, printed under the row in the table and as `details` in JSON.
    pub(crate) details: Vec<String>,
    pub(crate) error: Option<String>,
}

/// Throughput and latency of a call workload.
#[derive(Debug)]
pub(crate) struct Calls {
    /// Sum over the measuring processes.
    pub(crate) per_sec: f64,
    /// The highest p50 of the measuring processes.
    pub(crate) p50_us: f64,
    /// The highest p99 of the measuring processes.
    pub(crate) p99_us: f64,
    /// CPU time per call in the Library (floor, tarpc: the server).
    pub(crate) server_cpu_us: f64,
    /// CPU time per call in the workers (floor, tarpc: the clients).
    pub(crate) client_cpu_us: f64,
}

/// The result of a workload that is not a call rate.
#[derive(Debug)]
pub(crate) enum Metric {
    StartupMs {
        median_ms: f64,
        samples_ms: Vec<f64>,
    },
    RssKib {
        total_kib: u64,
    },
    RecoveryMs {
        median_ms: f64,
        samples_ms: Vec<f64>,
    },
}

/// A target of the issue and whether this row meets it.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) text: String,
    pub(crate) met: bool,
}

impl Row {
    fn new(job: Job) -> Row {
        Row {
            job,
            calls: None,
            metric: None,
            vs_floor: None,
            vs_tarpc: None,
            server_cpu_vs_tarpc: None,
            client_cpu_vs_tarpc: None,
            vs_current_thread: None,
            round_values: Vec::new(),
            target: None,
            details: Vec::new(),
            error: None,
        }
    }

    /// A workload that could not be measured.
    pub(crate) fn failed(job: Job, error: String) -> Row {
        Row {
            error: Some(error),
            ..Row::new(job)
        }
    }

    /// A row from the `calls=… secs=… p50_ns=… p99_ns=…` lines of `expected` processes.
    pub(crate) fn calls(job: Job, reports: &[Report], expected: usize) -> Result<Row> {
        ensure!(
            reports.len() == expected,
            "{} of {expected} processes reported a result",
            reports.len()
        );
        let mut calls = Calls {
            per_sec: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            server_cpu_us: 0.0,
            client_cpu_us: 0.0,
        };
        // The server is shared: its CPU rate over the (aligned) windows, over the total call
        // rate. Each client's CPU is its own.
        let (mut server_ns_per_sec, mut client_ns, mut total_calls) = (0.0, 0.0, 0.0);
        for report in reports {
            let secs = report.num("secs")?;
            calls.per_sec += report.num("calls")? / secs;
            calls.p50_us = calls.p50_us.max(report.num("p50_ns")? / 1e3);
            calls.p99_us = calls.p99_us.max(report.num("p99_ns")? / 1e3);
            server_ns_per_sec += report.num("peer_cpu_ns")? / secs / expected as f64;
            client_ns += report.num("own_cpu_ns")?;
            total_calls += report.num("calls")?;
        }
        calls.server_cpu_us = server_ns_per_sec / calls.per_sec / 1e3;
        calls.client_cpu_us = client_ns / total_calls / 1e3;
        let mut row = Row::new(job);
        if expected > 1 {
            row.details.push(format!(
                "calls/s summed over {expected} processes; p50/p99: the highest of theirs"
            ));
        }
        row.calls = Some(calls);
        Ok(row)
    }

    /// A row for a startup, memory or recovery result.
    pub(crate) fn metric(job: Job, metric: Metric, details: Vec<String>) -> Row {
        Row {
            metric: Some(metric),
            details,
            ..Row::new(job)
        }
    }
}

/// The issue's target for this row, if it has one.
pub(crate) fn target(row: &Row, pinned: bool) -> Option<Target> {
    if row.error.is_some() {
        return None;
    }
    let ratio = row.vs_floor.unwrap_or(0.0);
    let per_sec = row.calls.as_ref().map_or(0.0, |c| c.per_sec);
    let (text, met) = match (row.job.workload, &row.metric) {
        (Workload::W1, _) if pinned => (
            ">= 0.6x floor, >= 45k/s".to_owned(),
            ratio >= 0.6 && per_sec >= 45_000.0,
        ),
        (Workload::W1, _) => (">= 0.6x floor".to_owned(), ratio >= 0.6),
        (Workload::W2, _) => (">= 340k calls/s".to_owned(), per_sec >= 340_000.0),
        (Workload::W3, _) => (">= 0.5x floor".to_owned(), ratio >= 0.5),
        (Workload::W3Large, _) => ("<= 2x the floor's time".to_owned(), ratio >= 0.5),
        (Workload::Startup, Some(Metric::StartupMs { median_ms, .. })) => {
            ("<= 100 ms".to_owned(), *median_ms <= 100.0)
        }
        (Workload::Rss, Some(Metric::RssKib { total_kib })) => {
            ("<= 24 MiB".to_owned(), *total_kib <= 24 * 1024)
        }
        (Workload::Recovery, Some(Metric::RecoveryMs { median_ms, .. })) => {
            ("<= 200 ms".to_owned(), *median_ms <= 200.0)
        }
        _ => return None,
    };
    Some(Target { text, met })
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The value a row is about: calls/s, or its metric.
fn headline(row: &Row) -> Option<f64> {
    if let Some(calls) = &row.calls {
        return Some(calls.per_sec);
    }
    match row.metric.as_ref()? {
        Metric::StartupMs { median_ms, .. } | Metric::RecoveryMs { median_ms, .. } => {
            Some(*median_ms)
        }
        Metric::RssKib { total_kib } => Some(*total_kib as f64),
    }
}

/// `job`'s rows of every round (in round order) as one row: each value the median of the
/// rounds that measured it, each ratio the median of the rounds' own ratios. The details are
/// those of the round whose headline value is the median (the lower one of an even count);
/// the rounds that failed are the row's error.
pub(crate) fn median_row(job: Job, rows: Vec<Row>) -> Row {
    let count = rows.len();
    let errors: Vec<String> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some(format!("round {} of {count}: {}", i + 1, r.error.as_ref()?)))
        .collect();
    let ok: Vec<Row> = rows.into_iter().filter(|r| r.error.is_none()).collect();
    if ok.is_empty() {
        return Row::failed(job, errors.join("; "));
    }
    let of = |f: &dyn Fn(&Row) -> Option<f64>| median(ok.iter().filter_map(f));
    let calls = ok.iter().all(|r| r.calls.is_some()).then(|| {
        let field = |f: fn(&Calls) -> f64| {
            median(ok.iter().filter_map(|r| r.calls.as_ref().map(f))).unwrap_or(f64::NAN)
        };
        Calls {
            per_sec: field(|c| c.per_sec),
            p50_us: field(|c| c.p50_us),
            p99_us: field(|c| c.p99_us),
            server_cpu_us: field(|c| c.server_cpu_us),
            client_cpu_us: field(|c| c.client_cpu_us),
        }
    });
    let samples = |r: &Row| match &r.metric {
        Some(Metric::StartupMs { samples_ms, .. } | Metric::RecoveryMs { samples_ms, .. }) => {
            samples_ms.clone()
        }
        _ => Vec::new(),
    };
    let all_samples: Vec<f64> = ok.iter().flat_map(samples).collect();
    let value = of(&headline).unwrap_or(f64::NAN);
    let metric = match &ok[0].metric {
        Some(Metric::StartupMs { .. }) => Some(Metric::StartupMs {
            median_ms: value,
            samples_ms: all_samples,
        }),
        Some(Metric::RecoveryMs { .. }) => Some(Metric::RecoveryMs {
            median_ms: value,
            samples_ms: all_samples,
        }),
        Some(Metric::RssKib { .. }) => Some(Metric::RssKib {
            total_kib: value.round() as u64,
        }),
        None => None,
    };
    let round_values: Vec<f64> = ok.iter().filter_map(headline).collect();
    let mut order: Vec<usize> = (0..ok.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| headline(&ok[i]).unwrap_or(f64::NAN);
        key(a).total_cmp(&key(b))
    });
    let middle = order[(ok.len() - 1) / 2];
    let mut details = ok[middle].details.clone();
    details.push(format!(
        "median of {} rounds: {} in round order",
        ok.len(),
        round_values
            .iter()
            .map(|v| brief_value(ok[0].calls.is_some(), ok[0].metric.as_ref(), *v))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Row {
        calls,
        metric,
        vs_floor: of(&|r| r.vs_floor),
        vs_tarpc: of(&|r| r.vs_tarpc),
        server_cpu_vs_tarpc: of(&|r| r.server_cpu_vs_tarpc),
        client_cpu_vs_tarpc: of(&|r| r.client_cpu_vs_tarpc),
        vs_current_thread: of(&|r| r.vs_current_thread),
        round_values,
        details,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        ..Row::new(job)
    }
}

/// A row's headline value in a few characters (`83,412 calls/s`, `41.2 ms`), for progress.
pub(crate) fn brief(row: &Row) -> String {
    match headline(row) {
        _ if row.error.is_some() => "ERROR".to_owned(),
        Some(value) => brief_value(row.calls.is_some(), row.metric.as_ref(), value),
        None => "-".to_owned(),
    }
}

/// `value` with the unit of a calls row or of `metric`.
fn brief_value(calls: bool, metric: Option<&Metric>, value: f64) -> String {
    match metric {
        _ if calls => format!("{} calls/s", grouped(value)),
        Some(Metric::StartupMs { .. } | Metric::RecoveryMs { .. }) => format!("{value:.1} ms"),
        Some(Metric::RssKib { .. }) => format!("{} KiB", grouped(value)),
        None => format!("{value}"),
    }
}

/// Prints rows as a table or as JSON lines.
pub(crate) struct Printer {
    json: bool,
    pin: Option<usize>,
    /// `--rounds`: every value printed is the median of this many.
    rounds: usize,
}

impl Printer {
    /// A printer for a run of `rounds` rounds.
    pub(crate) fn new(json: bool, pin: Option<usize>, rounds: usize) -> Printer {
        Printer { json, pin, rounds }
    }

    /// The table's title and header (nothing in JSON mode).
    pub(crate) fn preamble(&self) {
        if self.json {
            return;
        }
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let pinned = self
            .pin
            .map_or("not pinned".to_owned(), |c| format!("pinned to CPU {c}"));
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        let rounds = match self.rounds {
            1 => "1 round".to_owned(),
            n => format!(
                "{n} rounds (interleaved: every workload once per round), every value the median \
                 of the {n} rounds"
            ),
        };
        println!(
            "dispatch bench: {cpus} CPU(s) available, {pinned}, load average {} at start, {rounds}",
            load.join(" ")
        );
        println!(
            "srv/cli cpu: CPU µs per call in the Library (floor, tarpc: the server) and in a \
             worker (floor, tarpc: a client); unlike calls/s, barely affected by other load; \
             vs floor, vs tarpc: calls/s over theirs{}",
            if self.rounds > 1 {
                " of the same round, the median of the rounds' ratios"
            } else {
                ""
            }
        );
        println!(
            "{}",
            columns([
                "workload", "workers", "inflight", "payload", "calls/s", "p50 µs", "p99 µs",
                "srv cpu", "cli cpu", "result", "vs floor", "vs tarpc", "target", "met",
            ])
        );
    }

    pub(crate) fn row(&self, row: &Row) {
        if self.json {
            println!("{}", json(row, self.pin));
        } else {
            self.table_row(row);
        }
    }

    fn table_row(&self, row: &Row) {
        let dash = || "-".to_owned();
        let job = &row.job;
        let count = |n: usize| if n == 0 { dash() } else { n.to_string() };
        let calls = row.calls.as_ref();
        let result = match &row.metric {
            Some(Metric::StartupMs { median_ms, .. } | Metric::RecoveryMs { median_ms, .. }) => {
                format!("{median_ms:.1} ms")
            }
            Some(Metric::RssKib { total_kib }) => format!("{} KiB", grouped(*total_kib as f64)),
            None if row.error.is_some() => "ERROR".to_owned(),
            None => dash(),
        };
        let cells = [
            job.label(),
            count(job.workers),
            count(job.inflight),
            count(job.payload),
            calls.map_or_else(dash, |c| grouped(c.per_sec)),
            calls.map_or_else(dash, |c| format!("{:.1}", c.p50_us)),
            calls.map_or_else(dash, |c| format!("{:.1}", c.p99_us)),
            calls.map_or_else(dash, |c| format!("{:.2}", c.server_cpu_us)),
            calls.map_or_else(dash, |c| format!("{:.2}", c.client_cpu_us)),
            result,
            row.vs_floor.map_or_else(dash, |r| format!("{r:.2}x")),
            row.vs_tarpc.map_or_else(dash, |r| format!("{r:.2}x")),
            row.target.as_ref().map_or_else(dash, |t| t.text.clone()),
            row.target.as_ref().map_or(String::new(), |t| {
                if t.met { "yes" } else { "NO" }.to_owned()
            }),
        ];
        println!("{}", columns(cells.each_ref().map(String::as_str)));
        for detail in &row.details {
            println!("    {detail}");
        }
        if let Some(error) = &row.error {
            println!("    error: {error}");
        }
    }
}

/// One table line: the cells aligned under the header.
fn columns(cells: [&str; 14]) -> String {
    let [workload, workers, inflight, payload, per_sec, p50, p99, srv, cli, result, vs_floor, vs_tarpc, target, met] =
        cells;
    format!(
        "{workload:<16}{workers:>8}{inflight:>9}{payload:>8}{per_sec:>11}{p50:>9}{p99:>9}\
         {srv:>8}{cli:>8}{result:>12}{vs_floor:>9}{vs_tarpc:>9}  {target:<24}{met}"
    )
    .trim_end()
    .to_owned()
}

/// `12,345` for 12345.4.
fn grouped(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The row as one JSON object.
fn json(row: &Row, pin: Option<usize>) -> String {
    let job = &row.job;
    let calls = row.calls.as_ref();
    let mut fields = vec![
        ("workload", string(job.workload.name())),
        ("workers", job.workers.to_string()),
        ("inflight", job.inflight.to_string()),
        ("payload", job.payload.to_string()),
        ("calls_per_sec", number(calls.map(|c| c.per_sec), 0)),
        ("p50_us", number(calls.map(|c| c.p50_us), 2)),
        ("p99_us", number(calls.map(|c| c.p99_us), 2)),
    ];
    if let Some(calls) = calls {
        fields.push((
            "server_cpu_us_per_call",
            number(Some(calls.server_cpu_us), 3),
        ));
        fields.push((
            "client_cpu_us_per_call",
            number(Some(calls.client_cpu_us), 3),
        ));
    }
    match &row.metric {
        Some(Metric::StartupMs {
            median_ms,
            samples_ms,
        }) => {
            fields.push(("startup_ms", number(Some(*median_ms), 2)));
            fields.push(("samples_ms", numbers(samples_ms)));
        }
        Some(Metric::RssKib { total_kib }) => fields.push(("rss_kib", total_kib.to_string())),
        Some(Metric::RecoveryMs {
            median_ms,
            samples_ms,
        }) => {
            fields.push(("recovery_ms", number(Some(*median_ms), 2)));
            fields.push(("samples_ms", numbers(samples_ms)));
        }
        None => {}
    }
    if row.vs_floor.is_some() {
        fields.push(("vs_floor", number(row.vs_floor, 3)));
    }
    if row.vs_tarpc.is_some() {
        fields.push(("vs_tarpc", number(row.vs_tarpc, 3)));
        fields.push(("server_cpu_vs_tarpc", number(row.server_cpu_vs_tarpc, 3)));
        fields.push(("client_cpu_vs_tarpc", number(row.client_cpu_vs_tarpc, 3)));
    }
    if let Some(target) = &row.target {
        fields.push(("target", string(&target.text)));
        fields.push(("meets_target", target.met.to_string()));
    }
    fields.push(("pin", pin.map_or("null".to_owned(), |c| c.to_string())));
    if !row.details.is_empty() {
        fields.push(("details", string(&row.details.join("; "))));
    }
    if let Some(threads) = job.library_threads {
        fields.push(("library_threads", threads.to_string()));
    }
    if row.vs_current_thread.is_some() {
        fields.push(("vs_current_thread", number(row.vs_current_thread, 3)));
    }
    if !row.round_values.is_empty() {
        fields.push(("rounds", row.round_values.len().to_string()));
        let values: Vec<String> = row
            .round_values
            .iter()
            .map(|v| number(Some(*v), 2))
            .collect();
        fields.push(("round_values", format!("[{}]", values.join(","))));
    }
    if let Some(error) = &row.error {
        fields.push(("error", string(error)));
    }
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A JSON number with `decimals` digits, or `null`.
fn number(n: Option<f64>, decimals: usize) -> String {
    match n {
        Some(n) if n.is_finite() => format!("{n:.decimals$}"),
        _ => "null".to_owned(),
    }
}

fn numbers(ns: &[f64]) -> String {
    let items: Vec<String> = ns.iter().map(|n| number(Some(*n), 2)).collect();
    format!("[{}]", items.join(","))
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands_and_escapes_json() {
        assert_eq!(grouped(1_234_567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn rounds_fold_into_medians_of_values_and_of_ratios() {
        let args = crate::Args::parse(std::iter::empty()).expect("valid arguments");
        let job = Job::new(Workload::W1, &args);
        let row = |per_sec: f64, vs_floor: f64| Row {
            calls: Some(Calls {
                per_sec,
                p50_us: per_sec / 10.0,
                p99_us: 1.0,
                server_cpu_us: 1.0,
                client_cpu_us: 1.0,
            }),
            vs_floor: Some(vs_floor),
            ..Row::new(job)
        };
        let rows = vec![
            row(100.0, 0.9),
            Row::failed(job, "gone".into()),
            row(300.0, 0.5),
            row(200.0, 0.7),
        ];
        let folded = median_row(job, rows);
        let calls = folded.calls.as_ref().expect("calls");
        assert_eq!((calls.per_sec, calls.p50_us), (200.0, 20.0));
        assert_eq!(folded.vs_floor, Some(0.7));
        assert_eq!(folded.round_values, [100.0, 300.0, 200.0]);
        assert_eq!(folded.error.as_deref(), Some("round 2 of 4: gone"));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
