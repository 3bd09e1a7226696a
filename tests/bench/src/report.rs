//! The results: a table on stdout, results.md and results.json.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::node::{LogSummary, StopInfo};
use crate::scenarios::Outcome;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Memory {
    /// VmRSS half a second after /health answered, MiB.
    pub idle_rss_mib: Option<f64>,
    /// VmRSS after the last scenario, MiB.
    pub final_rss_mib: Option<f64>,
    /// VmHWM (peak RSS over the node's life) after the last scenario, MiB.
    pub peak_rss_mib: Option<f64>,
    /// The node's user + system CPU over the whole run, seconds.
    pub cpu_seconds: Option<f64>,
}

/// What replication costs: RF=3 acks=all throughput over RF=1 acks=1 at one value size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ratio {
    pub value_bytes: usize,
    pub rf1_acks1_records_per_sec: f64,
    pub rf3_acksall_records_per_sec: f64,
    /// rf3_acksall_records_per_sec / rf1_acks1_records_per_sec.
    pub ratio: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Results {
    pub started_unix: u64,
    pub bootstrap: String,
    pub librdkafka: String,
    pub cpus: usize,
    pub git_commit: Option<String>,
    pub time_limit_seconds: u64,
    pub outcomes: Vec<Outcome>,
    pub memory: Option<Memory>,
    pub node_stop: Option<StopInfo>,
    pub node_log: Option<LogSummary>,
    pub other_errors: Vec<String>,
    pub replication_ratios: Vec<Ratio>,
}

impl Results {
    pub fn total_errors(&self) -> u64 {
        self.outcomes.iter().map(|o| o.errors).sum::<u64>() + self.other_errors.len() as u64
    }
}

/// The commit of the repository, read without running git.
pub fn git_commit(root: &Path) -> Option<String> {
    let git = root.join(".git");
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(r) = head.strip_prefix("ref: ") else {
        return Some(head.to_string());
    };
    if let Ok(c) = std::fs::read_to_string(git.join(r)) {
        return Some(c.trim().to_string());
    }
    let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
    packed
        .lines()
        .find(|l| l.ends_with(r))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

const HEADERS: [&str; 12] = [
    "scenario",
    "records",
    "seconds",
    "records/s",
    "MiB/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "errors",
    "node RSS MiB",
    "node CPU s",
];

fn row(o: &Outcome) -> [String; 12] {
    let lat = o.latency_ms;
    let records = if o.hit_time_limit {
        format!("{} (time limit)", o.records)
    } else {
        o.records.to_string()
    };
    [
        o.scenario.clone(),
        records,
        format!("{:.2}", o.seconds),
        format!("{:.0}", o.records_per_sec),
        if o.latency_ms.is_some() {
            "-".into()
        } else {
            format!("{:.1}", o.mib_per_sec)
        },
        opt(lat.map(|l| l.p50), 2),
        opt(lat.map(|l| l.p99), 2),
        opt(lat.map(|l| l.p999), 2),
        opt(lat.map(|l| l.max), 2),
        o.errors.to_string(),
        opt(o.node_rss_mib, 1),
        opt(o.node_cpu_seconds, 1),
    ]
}

pub fn print_line(o: &Outcome) {
    let r = row(o);
    let mut s = format!(
        "{}: {} records in {} s = {} records/s",
        r[0], r[1], r[2], r[3]
    );
    if o.latency_ms.is_none() {
        let _ = write!(s, ", {} MiB/s", r[4]);
    } else {
        let _ = write!(
            s,
            ", p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            r[5], r[6], r[7], r[8]
        );
    }
    if o.errors > 0 {
        let _ = write!(s, ", {} ERRORS", o.errors);
    }
    eprintln!("{s}");
    for e in &o.error_samples {
        eprintln!("    error: {e}");
    }
    for w in &o.client_warning_samples {
        eprintln!("    librdkafka: {w}");
    }
}

fn table(results: &Results, markdown: bool) -> String {
    let rows: Vec<[String; 12]> = results.outcomes.iter().map(row).collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let cell = if i == 0 {
                format!("{c:<w$}")
            } else {
                format!("{c:>w$}")
            };
            if markdown {
                let _ = write!(s, "| {cell} ");
            } else {
                let _ = write!(s, "{}{cell}", if i == 0 { "" } else { "  " });
            }
        }
        if markdown {
            s.push('|');
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let head: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    out.push_str(&line(&head));
    out.push('\n');
    if markdown {
        let mut sep = String::new();
        for (i, w) in widths.iter().enumerate() {
            let dashes = "-".repeat(*w);
            let _ = write!(
                sep,
                "| {} ",
                if i == 0 {
                    dashes.clone()
                } else {
                    format!("{}:", &dashes[1..])
                }
            );
        }
        sep.push('|');
        out.push_str(&sep);
    } else {
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    }
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn summary(results: &Results) -> String {
    let mut s = String::new();
    for r in &results.replication_ratios {
        let _ = writeln!(
            s,
            "Replication cost at {} B: RF=3 acks=all / RF=1 acks=1 = {:.2} ({:.0} vs {:.0} records/s).",
            r.value_bytes, r.ratio, r.rf3_acksall_records_per_sec, r.rf1_acks1_records_per_sec
        );
    }
    if let Some(m) = &results.memory {
        let _ = writeln!(
            s,
            "Node memory: idle RSS {} MiB, final RSS {} MiB, peak RSS (VmHWM) {} MiB; node CPU over the run {} s.",
            opt(m.idle_rss_mib, 1),
            opt(m.final_rss_mib, 1),
            opt(m.peak_rss_mib, 1),
            opt(m.cpu_seconds, 1)
        );
    }
    if let Some(st) = &results.node_stop {
        let _ = writeln!(
            s,
            "Node stop: exit code {} {:.2} s after SIGTERM{}.",
            st.exit_code
                .map_or("none (signal)".to_string(), |c| c.to_string()),
            st.stop_seconds,
            if st.killed {
                " (had to be SIGKILLed)"
            } else {
                ""
            }
        );
    }
    if let Some(l) = &results.node_log {
        let _ = writeln!(
            s,
            "Node log: {} WARN, {} ERROR, {} panic line(s).",
            l.warn_lines, l.error_lines, l.panics
        );
        for x in &l.samples {
            let _ = writeln!(s, "    {x}");
        }
    }
    for o in &results.outcomes {
        if o.errors > 0 || o.client_warnings > 0 {
            let _ = writeln!(
                s,
                "{}: {} error(s), {} librdkafka warning(s)",
                o.scenario, o.errors, o.client_warnings
            );
            for e in o.error_samples.iter().chain(&o.client_warning_samples) {
                let _ = writeln!(s, "    {e}");
            }
        }
    }
    for e in &results.other_errors {
        let _ = writeln!(s, "Error: {e}");
    }
    let _ = writeln!(
        s,
        "Total errors: {}. librdkafka {}, {} CPU(s), commit {}, time limit {} s per scenario.",
        results.total_errors(),
        results.librdkafka,
        results.cpus,
        results.git_commit.as_deref().unwrap_or("unknown"),
        results.time_limit_seconds
    );
    s
}

pub fn print_table(results: &Results) {
    println!();
    print!("{}", table(results, false));
    println!();
    print!("{}", summary(results));
}

pub fn write(results: &Results, dir: &Path) -> Result<()> {
    let mut md = String::from("# Runnel benchmark results\n\n");
    let _ = writeln!(
        md,
        "Node: {}. Producer runs: one librdkafka producer, linger.ms=5, batch.size=1000000, no compression. \
         Latency: paced, acks=all, linger.ms=0, send() to delivery report. MiB/s counts record values only. \
         \"(time limit)\" marks a run ended by the time limit rather than the record count. \
         RF=3 rows: a separate 3-node cluster started once the single node is stopped, topics created with \
         replication.factor=3 and min.insync.replicas=2, the same producer settings; their node RSS and CPU \
         are summed over the nodes.\n",
        results.bootstrap
    );
    md.push_str(&table(results, true));
    md.push('\n');
    for line in summary(results).lines() {
        if let Some(rest) = line.strip_prefix("    ") {
            let _ = writeln!(md, "    - `{}`", rest.replace('`', "'"));
        } else {
            let _ = writeln!(md, "- {line}");
        }
    }
    std::fs::write(dir.join("results.md"), md).context("cannot write results.md")?;
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(dir.join("results.json"), json + "\n").context("cannot write results.json")?;
    Ok(())
}
