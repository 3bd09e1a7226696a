//! The results of `runnel experiment replication`: one row per (RF, acks) cell, rendered as
//! a terminal table, Markdown, CSV and JSON.

use crate::cluster_target::TargetKind;
use std::fmt::Write as _;

use serde::Serialize;

use super::load::Acks;
use crate::cli::table::Table;

/// The steady load of a cell, no faults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Clean {
    /// Records acknowledged (acks=0: written to the socket).
    pub(crate) records: u64,
    pub(crate) seconds: f64,
    pub(crate) records_per_s: f64,
    /// Record values only, 10^6 bytes.
    pub(crate) mb_per_s: f64,
    /// Per request, send to answer; `None` with acks=0, which gets no answer.
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) last_error: Option<String>,
}

/// The same load with the partition leader SIGKILLed mid-run and restarted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Fault {
    /// The node killed (the partition leader when the fault struck).
    pub(crate) killed_node: Option<i32>,
    /// Records written (acks=0) or acknowledged.
    pub(crate) sent: u64,
    /// Acknowledged records; `None` with acks=0.
    pub(crate) acked: Option<u64>,
    /// Distinct records of the run read back; `None` when the read failed.
    pub(crate) found: Option<u64>,
    /// Acknowledged records not read back; `None` with acks=0 or when the read failed.
    pub(crate) lost_acked: Option<u64>,
    pub(crate) errors: u64,
    pub(crate) read_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Row {
    pub(crate) rf: i16,
    pub(crate) acks: Acks,
    pub(crate) min_insync_replicas: i16,
    pub(crate) clean: Clean,
    pub(crate) fault: Option<Fault>,
}

/// How the matrix was run; printed above the table and kept in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Settings {
    pub(crate) target: TargetKind,
    pub(crate) nodes: u16,
    pub(crate) record_size: usize,
    pub(crate) batch: u64,
    pub(crate) in_flight: usize,
    pub(crate) duration_s: u64,
    pub(crate) max_records: u64,
    pub(crate) partitions: i32,
    pub(crate) fault_runs: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Report {
    pub(crate) settings: Settings,
    pub(crate) rows: Vec<Row>,
}

const HEADERS: [&str; 14] = [
    "RF",
    "acks",
    "min ISR",
    "records",
    "rec/s",
    "MB/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "killed",
    "sent",
    "acked",
    "found",
    "lost acked",
];
/// Every column but the first three holds a number.
const NUMERIC: [usize; 11] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];

const CSV_HEADERS: [&str; 16] = [
    "rf",
    "acks",
    "min_insync_replicas",
    "records",
    "seconds",
    "records_per_s",
    "mb_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "fault_killed_node",
    "fault_sent",
    "fault_acked",
    "fault_found",
    "fault_lost_acked",
    "fault_errors",
];

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

fn or_empty<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |x| x.to_string())
}

fn ms(v: Option<f64>) -> String {
    or_dash(v.map(|x| format!("{x:.2}")))
}

/// The cells of one row as shown to people.
fn cells(r: &Row) -> Vec<String> {
    let c = &r.clean;
    let mut cells = vec![
        r.rf.to_string(),
        r.acks.label().to_owned(),
        r.min_insync_replicas.to_string(),
        c.records.to_string(),
        format!("{:.0}", c.records_per_s),
        format!("{:.1}", c.mb_per_s),
        ms(c.p50_ms),
        ms(c.p99_ms),
        c.errors.to_string(),
    ];
    match &r.fault {
        Some(f) => cells.extend([
            or_dash(f.killed_node),
            f.sent.to_string(),
            or_dash(f.acked),
            f.found.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            match (f.acked, f.lost_acked) {
                (None, _) => "-".to_owned(),
                (Some(_), None) => "?".to_owned(),
                (Some(_), Some(n)) => n.to_string(),
            },
        ]),
        None => cells.extend(std::iter::repeat_n("-".to_owned(), 5)),
    }
    cells
}

/// The table for a terminal.
pub(crate) fn render_table(rows: &[Row]) -> String {
    let mut t = Table::new(HEADERS).right(&NUMERIC);
    for r in rows {
        t.row(cells(r));
    }
    t.render()
}

/// The table as GitHub Markdown, numbers right-aligned.
pub(crate) fn render_markdown_table(rows: &[Row]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(&HEADERS.map(str::to_owned));
    let rule: Vec<String> = (0..HEADERS.len())
        .map(|c| if NUMERIC.contains(&c) { "---:" } else { "---" }.to_owned())
        .collect();
    out.push_str(&line(&rule));
    for r in rows {
        out.push_str(&line(&cells(r)));
    }
    out
}

/// What the columns mean; shared by the terminal output and the Markdown file.
pub(crate) const LEGEND: &str = "\
records, rec/s, MB/s: the steady run's acknowledged records (acks=0: records written to the \
socket) and their rate; MB/s counts record values, 10^6 bytes. p50/p99: per produce request, \
send to answer (acks=0 gets no answer: '-'). errors: failed requests of the steady run. \
killed, sent, acked, found, lost acked: the fault run, same load on a new topic with the \
partition leader killed mid-run (SIGKILL, or docker kill on compose) and started again; 'found' counts distinct records of the run \
read back from the start of the partition, 'lost acked' the acknowledged records missing \
(acks=0 has no acknowledgements: compare sent with found). '?': the read-back failed.";

fn settings_line(s: &Settings) -> String {
    format!(
        "{} nodes ({}), {} partition per topic, {} B records, {} records per request, {} \
         requests in flight, {} s per run (at most {} records){}.",
        s.nodes,
        match s.target {
            TargetKind::Local => "local processes",
            TargetKind::Compose => "docker-compose containers",
        },
        s.partitions,
        s.record_size,
        s.batch,
        s.in_flight,
        s.duration_s,
        s.max_records,
        if s.fault_runs { "" } else { ", no fault runs" }
    )
}

/// The whole text report for a terminal.
pub(crate) fn render(report: &Report) -> String {
    let mut out = format!("{}\n\n", settings_line(&report.settings));
    out.push_str(&render_table(&report.rows));
    let _ = write!(out, "\n{LEGEND}\n");
    out.push_str(&problems(&report.rows));
    out
}

/// The Markdown file.
pub(crate) fn render_markdown(report: &Report) -> String {
    let mut out = String::from("# Replication experiment\n\n");
    let _ = writeln!(
        out,
        "`runnel experiment replication`: {}\n",
        settings_line(&report.settings)
    );
    out.push_str(&render_markdown_table(&report.rows));
    let _ = write!(out, "\n{LEGEND}\n");
    let problems = problems(&report.rows);
    if !problems.is_empty() {
        let _ = write!(out, "\n{problems}");
    }
    out
}

/// The last error of each run that had one.
fn problems(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let cell = format!("RF={} acks={}", r.rf, r.acks.label());
        if let Some(e) = &r.clean.last_error {
            let _ = writeln!(out, "- {cell}, steady run, last error: {e}");
        }
        if let Some(e) = r.fault.as_ref().and_then(|f| f.read_error.as_ref()) {
            let _ = writeln!(out, "- {cell}, fault run, read-back failed: {e}");
        }
    }
    out
}

/// One header line and one line per row; unknown or not-applicable values are empty. Every
/// field is a number or an acks label, so none needs quoting.
pub(crate) fn render_csv(rows: &[Row]) -> String {
    let mut out = CSV_HEADERS.join(",");
    out.push('\n');
    for r in rows {
        let c = &r.clean;
        let f = r.fault.as_ref();
        let fields = [
            r.rf.to_string(),
            r.acks.label().to_owned(),
            r.min_insync_replicas.to_string(),
            c.records.to_string(),
            format!("{:.3}", c.seconds),
            format!("{:.1}", c.records_per_s),
            format!("{:.3}", c.mb_per_s),
            or_empty(c.p50_ms.map(|x| format!("{x:.3}"))),
            or_empty(c.p99_ms.map(|x| format!("{x:.3}"))),
            c.errors.to_string(),
            or_empty(f.and_then(|f| f.killed_node)),
            or_empty(f.map(|f| f.sent)),
            or_empty(f.and_then(|f| f.acked)),
            or_empty(f.and_then(|f| f.found)),
            or_empty(f.and_then(|f| f.lost_acked)),
            or_empty(f.map(|f| f.errors)),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(acks: Acks, fault: Option<Fault>) -> Row {
        let answered = acks != Acks::None;
        Row {
            rf: 3,
            acks,
            min_insync_replicas: 2,
            clean: Clean {
                records: 20_000,
                seconds: 2.0,
                records_per_s: 10_000.0,
                mb_per_s: 10.24,
                p50_ms: answered.then_some(1.5),
                p99_ms: answered.then_some(12.25),
                errors: 0,
                last_error: None,
            },
            fault,
        }
    }

    fn fault(acked: Option<u64>, found: Option<u64>, lost: Option<u64>) -> Fault {
        Fault {
            killed_node: Some(2),
            sent: 900,
            acked,
            found,
            lost_acked: lost,
            errors: 4,
            read_error: found.is_none().then(|| "timed out, \"badly\"".to_owned()),
        }
    }

    #[test]
    fn table_shows_dashes_where_nothing_applies() {
        let rows = [
            row(Acks::All, Some(fault(Some(900), Some(880), Some(20)))),
            row(Acks::None, Some(fault(None, Some(850), None))),
            row(Acks::Leader, None),
        ];
        assert_eq!(
            render_table(&rows),
            "RF  acks  min ISR  records  rec/s  MB/s  p50 ms  p99 ms  errors  killed  sent  acked  found  lost acked\n\
             3   all   2          20000  10000  10.2    1.50   12.25       0       2   900    900    880          20\n\
             3   0     2          20000  10000  10.2       -       -       0       2   900      -    850           -\n\
             3   1     2          20000  10000  10.2    1.50   12.25       0       -     -      -      -           -\n"
        );
    }

    #[test]
    fn a_failed_read_back_is_a_question_mark_and_is_explained() {
        let rows = [row(Acks::Leader, Some(fault(Some(900), None, None)))];
        let cells = cells(&rows[0]);
        assert_eq!(cells[12..], ["?", "?"]);
        let report = Report {
            settings: Settings {
                target: TargetKind::Local,
                nodes: 3,
                record_size: 1024,
                batch: 16,
                in_flight: 4,
                duration_s: 2,
                max_records: 1000,
                partitions: 1,
                fault_runs: true,
            },
            rows: rows.to_vec(),
        };
        let md = render_markdown(&report);
        assert!(md.contains("- RF=3 acks=1, fault run, read-back failed: timed out"));
        assert!(render(&report).starts_with("3 nodes (local processes), 1 partition per topic"));
    }

    #[test]
    fn markdown_table_has_a_rule_and_one_line_per_row() {
        let rows = [row(Acks::All, Some(fault(Some(900), Some(900), Some(0))))];
        let md = render_markdown_table(&rows);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "| RF | acks | min ISR | records | rec/s | MB/s | p50 ms | p99 ms | errors | killed | sent | acked | found | lost acked |"
        );
        assert_eq!(
            lines[1],
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        assert_eq!(
            lines[2],
            "| 3 | all | 2 | 20000 | 10000 | 10.2 | 1.50 | 12.25 | 0 | 2 | 900 | 900 | 900 | 0 |"
        );
    }

    #[test]
    fn csv_leaves_unknowns_empty() {
        let rows = [
            row(Acks::All, Some(fault(Some(900), Some(880), Some(20)))),
            row(Acks::None, None),
        ];
        assert_eq!(
            render_csv(&rows),
            "rf,acks,min_insync_replicas,records,seconds,records_per_s,mb_per_s,p50_ms,p99_ms,errors,\
             fault_killed_node,fault_sent,fault_acked,fault_found,fault_lost_acked,fault_errors\n\
             3,all,2,20000,2.000,10000.0,10.240,1.500,12.250,0,2,900,900,880,20,4\n\
             3,0,2,20000,2.000,10000.0,10.240,,,0,,,,,,\n"
        );
    }

    #[test]
    fn json_names_acks_by_label() {
        let json = serde_json::to_value(row(Acks::All, None)).unwrap();
        assert_eq!(json["acks"], "all");
        assert_eq!(json["fault"], serde_json::Value::Null);
        assert_eq!(json["clean"]["p99_ms"], 12.25);
    }
}
