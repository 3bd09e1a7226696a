//! What a chaos run prints: a progress line per second while it runs, then the verdict as a
//! table for people or one JSON object for machines.

use serde::Serialize;

use super::checker::PartitionVerdict;
use super::extras;
use super::faults::{FaultEvent, IsolationProbe, Schedule};
use crate::cli::table::Table;
use crate::cluster_target::TargetKind;

/// Said in the report of a run with --no-idempotence.
pub(crate) const NO_IDEMPOTENCE: &str =
    "produced without idempotence: duplicates from retries are possible and counted apart";
/// Said in the report of an idempotent run.
pub(crate) const IDEMPOTENCE: &str =
    "produced idempotently: retries resend the same batch, so any second copy of an \
     acknowledged record counts as duplicated";

/// One partition's line of the report.
#[derive(Debug, Serialize)]
pub(crate) struct PartitionRow {
    pub(crate) partition: i32,
    #[serde(flatten)]
    pub(crate) verdict: PartitionVerdict,
    pub(crate) produce_errors: u64,
    pub(crate) abandoned_batches: u64,
    pub(crate) last_produce_error: Option<String>,
    /// Why the partition could not be read back; its acknowledged records count as lost.
    pub(crate) read_error: Option<String>,
    /// The longest stretch without an ack in this partition.
    pub(crate) longest_unavailable_s: f64,
    /// Records acknowledged while a majority of the nodes was down that are not there.
    pub(crate) lost_acked_during_quorum_loss: usize,
    /// The high watermark the replicas were compared below (local runs).
    pub(crate) high_watermark: Option<i64>,
    /// How many replicas' log files were compared.
    pub(crate) replicas_compared: usize,
    /// Where the replicas' batches below the high watermark differ: must be nothing.
    pub(crate) replica_divergence: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) target: TargetKind,
    pub(crate) topic: String,
    pub(crate) schedule: Schedule,
    pub(crate) seed: u64,
    pub(crate) nodes: u16,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i16,
    pub(crate) min_insync_replicas: u16,
    pub(crate) idempotent: bool,
    pub(crate) note: &'static str,
    /// Seconds the workload produced.
    pub(crate) produced_for_s: f64,
    pub(crate) per_partition: Vec<PartitionRow>,
    pub(crate) totals: PartitionVerdict,
    pub(crate) produce_errors: u64,
    /// The longest stretch without any acknowledged produce.
    pub(crate) longest_unavailable_s: f64,
    /// From the last fault action to the first acknowledged produce after it.
    pub(crate) time_to_recover_s: Option<f64>,
    /// Produces acknowledged while a majority of the nodes was down.
    pub(crate) acks_during_quorum_loss: usize,
    /// Of the records acknowledged while a majority was down, those not read back.
    pub(crate) lost_acked_during_quorum_loss: usize,
    /// The stretches (seconds since the start) in which a majority of the nodes was down.
    pub(crate) quorum_loss: Vec<(f64, f64)>,
    /// partition-leader, partition-one-way, kill-during-partition: what the leader cut off
    /// from the other nodes acknowledged to a client that could still reach it (must be
    /// nothing).
    pub(crate) isolated_leader: Option<IsolationProbe>,
    /// After a quorum loss, seconds from the first restarted node being healthy to the first
    /// acknowledged produce while the others were still down; `None` without such a stretch
    /// or ack.
    pub(crate) recovered_with_one_node_back_s: Option<f64>,
    /// Seconds from the end of producing until the cluster was settled again; `None` if it
    /// did not settle in time.
    pub(crate) settled_after_s: Option<f64>,
    /// Why lost acknowledged records do not fail this run (lose-unflushed-quorum on a topic
    /// without flush.messages=1); `None` when any loss fails it.
    pub(crate) loss_allowed: Option<String>,
    /// The --topic-config settings of the chaos topic.
    pub(crate) topic_configs: Vec<String>,
    pub(crate) faults: Vec<FaultEvent>,
    /// The checks beside the main topic: the compacted topic, the consumer group's commits,
    /// the sampled high watermarks and committed offsets, the records a consumer was given.
    #[serde(flatten)]
    pub(crate) side: extras::Verdicts,
    /// False on any lost, duplicated or reordered acknowledged record, an ack during a
    /// quorum loss, an ack from an isolated leader, replicas whose batches below the high
    /// watermark differ, or a failed side check (a compacted key missing or older than its
    /// last ack, an acknowledged commit lost, a high watermark or committed offset that went
    /// backwards, a record a consumer was given that is gone or changed).
    pub(crate) passed: bool,
}

/// The progress line printed each second.
pub(crate) fn progress(elapsed: f64, acked: u64, errors: u64, up: usize, nodes: usize) -> String {
    format!("[{elapsed:6.1}s] acked {acked}  errors {errors}  nodes up {up}/{nodes}")
}

/// Sums the partitions' verdicts; the lost sample is left empty.
pub(crate) fn totals(rows: &[PartitionRow]) -> PartitionVerdict {
    let mut t = PartitionVerdict::default();
    for r in rows {
        let v = &r.verdict;
        t.acked += v.acked;
        t.read += v.read;
        t.lost += v.lost;
        t.duplicated += v.duplicated;
        t.retry_duplicates += v.retry_duplicates;
        t.reordered += v.reordered;
        t.unacked_appeared += v.unacked_appeared;
    }
    t
}

fn seconds(s: Option<f64>, none: &str) -> String {
    s.map_or_else(|| none.to_owned(), |s| format!("{s:.1} s"))
}

/// The report for people.
pub(crate) fn render(r: &Report) -> String {
    let mut out = format!(
        "chaos schedule {} (seed {}) on {} nodes ({}), topic {}: {} partitions, RF {}, \
         min.insync.replicas {}, produced for {:.1} s with acks=all\n{}\n\n",
        r.schedule.name(),
        r.seed,
        r.nodes,
        match r.target {
            TargetKind::Local => "local processes",
            TargetKind::Compose => "docker-compose containers",
        },
        r.topic,
        r.partitions,
        r.replication_factor,
        r.min_insync_replicas,
        r.produced_for_s,
        r.note,
    );
    let mut table = Table::new([
        "PARTITION",
        "ACKED",
        "READ",
        "LOST",
        "DUPLICATED",
        "REORDERED",
        "RETRY-DUPS",
        "UNACKED-APPEARED",
        "ERRORS",
        "MAX-GAP",
    ])
    .right(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let row = |name: String, v: &PartitionVerdict, errors: u64, gap: f64| {
        vec![
            name,
            v.acked.to_string(),
            v.read.to_string(),
            v.lost.to_string(),
            v.duplicated.to_string(),
            v.reordered.to_string(),
            v.retry_duplicates.to_string(),
            v.unacked_appeared.to_string(),
            errors.to_string(),
            format!("{gap:.1} s"),
        ]
    };
    for p in &r.per_partition {
        table.row(row(
            p.partition.to_string(),
            &p.verdict,
            p.produce_errors,
            p.longest_unavailable_s,
        ));
    }
    table.row(row(
        "total".to_owned(),
        &r.totals,
        r.produce_errors,
        r.longest_unavailable_s,
    ));
    out.push_str(&table.render());
    for p in &r.per_partition {
        if !p.verdict.lost_sample.is_empty() {
            out.push_str(&format!(
                "partition {}: lost sequence numbers (first {}): {:?}\n",
                p.partition,
                p.verdict.lost_sample.len(),
                p.verdict.lost_sample
            ));
        }
        for d in &p.replica_divergence {
            out.push_str(&format!(
                "partition {}: replicas diverge: {d}\n",
                p.partition
            ));
        }
        if let Some(e) = &p.read_error {
            out.push_str(&format!(
                "partition {}: cannot be read back: {e}\n",
                p.partition
            ));
        }
        if let Some(e) = &p.last_produce_error {
            out.push_str(&format!(
                "partition {}: last produce error: {e}\n",
                p.partition
            ));
        }
    }
    out.push_str(&format!(
        "\nlongest stretch without an ack: {:.1} s\ntime to recover after the last fault: {}\n\
         acks while a majority was down: {} ({} of their records lost)\n\
         cluster settled after the run: {}\n",
        r.longest_unavailable_s,
        seconds(
            r.time_to_recover_s,
            if r.faults.is_empty() {
                "no faults"
            } else {
                "never"
            }
        ),
        r.acks_during_quorum_loss,
        r.lost_acked_during_quorum_loss,
        seconds(r.settled_after_s, "not within the limit"),
    ));
    // Only these schedules bring one node back alone after a quorum loss.
    if matches!(
        r.schedule,
        Schedule::KillTwo | Schedule::LoseUnflushedQuorum
    ) {
        out.push_str(&format!(
            "produce recovered with one node back after: {}\n",
            seconds(r.recovered_with_one_node_back_s, "never")
        ));
    }
    if let Some(p) = &r.isolated_leader {
        out.push_str(&format!(
            "isolated leader (node {}): acknowledged {} of {} produces sent to it alone while cut off{}\n",
            p.node,
            p.acked,
            p.sent,
            p.last_error
                .as_ref()
                .map_or_else(String::new, |e| format!(" (last answer: {e})"))
        ));
    }
    if r.per_partition.iter().any(|p| p.replicas_compared > 0) {
        let diverged = r
            .per_partition
            .iter()
            .filter(|p| !p.replica_divergence.is_empty())
            .count();
        out.push_str(&format!(
            "replicas compared byte for byte below the high watermark: {} replica logs, {diverged} partition(s) diverged\n",
            r.per_partition.iter().map(|p| p.replicas_compared).sum::<usize>()
        ));
    }
    out.push_str(&r.side.render());
    if !r.topic_configs.is_empty() {
        out.push_str(&format!("topic configs: {}\n", r.topic_configs.join(", ")));
    }
    if let Some(why) = &r.loss_allowed {
        out.push_str(&format!(
            "acknowledged records lost: {} (not counted as a failure: {why})\n",
            r.totals.lost
        ));
    }
    if !r.faults.is_empty() {
        out.push_str("\nfault timeline:\n");
        for f in &r.faults {
            out.push_str(&format!("  {:6.1} s  {}\n", f.at, f.action));
        }
    }
    out.push_str(if r.passed {
        "\nPASSED: every acknowledged record is there, once and in order\n"
    } else {
        "\nFAILED: acknowledged records were lost, duplicated or reordered, acked without a quorum or by an isolated leader, replicas diverged, or a side check failed\n"
    });
    out
}
