//! The checks that run beside the main producers in every schedule: a compacted topic and
//! its producer ([`compacted`]), a consumer that commits offsets ([`consumer`]) and an
//! observer of high watermarks and committed offsets ([`observer`]). Started with the
//! producers, stopped with them, judged after the read-back.
//!
//! [`compacted`]: super::compacted
//! [`consumer`]: super::consumer
//! [`observer`]: super::observer

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use runnel_client::{offset_spec, Client};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::compacted::{self, CompactedVerdict};
use super::consumer::{self, CommitVerdict, ConsumerLog, VisibilityVerdict};
use super::observer::{self, MonotonicVerdict, Observations};
use super::pipeline::MAX_IN_FLIGHT;
use super::workload::{self, Counters, ProducerLog, Stream};
use crate::bounded_client::{self, REQUEST_TIMEOUT};

/// Bound on making the compacted topic ready, and on reading the committed offsets after the
/// run (the coordinator may still be moving).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer group of a run on `topic`.
fn group_name(topic: &str) -> String {
    format!("{topic}-group")
}

/// Creates the compacted topic beside `topic`, with the chaos topic's replication and
/// `extra_configs` (e.g. flush.messages), and waits until it has a leader.
pub(crate) async fn create_topics(
    admin: &mut Client,
    topic: &str,
    replication_factor: i16,
    extra_configs: &[(String, String)],
) -> anyhow::Result<()> {
    let name = compacted::topic_name(topic);
    let mut configs: Vec<(String, String)> = compacted::TOPIC_CONFIGS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    configs.extend(extra_configs.iter().cloned());
    admin
        .create_topics(&name, 1, replication_factor, &configs)
        .await
        .with_context(|| format!("cannot create the compacted topic {name}"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Ok(t)) = tokio::time::timeout(REQUEST_TIMEOUT, admin.topic_metadata(&name)).await
        {
            if t.partitions.iter().all(|p| p.leader >= 0) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("topic {name} has no leader after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The side workloads while they run.
pub(crate) struct Running {
    compacted: JoinHandle<ProducerLog>,
    consumer: JoinHandle<ConsumerLog>,
    observer: JoinHandle<Observations>,
}

/// What the side workloads saw.
pub(crate) struct Logs {
    compacted: ProducerLog,
    consumer: ConsumerLog,
    observed: Observations,
}

/// Starts the compacted producer, the consumer and the observer; they run until `stop`
/// turns true.
pub(crate) fn start(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    started: Instant,
    stop: &watch::Receiver<bool>,
) -> Running {
    let group = group_name(topic);
    Running {
        compacted: tokio::spawn(workload::produce_partition(
            bootstrap.to_owned(),
            Stream {
                topic: compacted::topic_name(topic),
                partition: 0,
                record: compacted::record,
            },
            true,
            started,
            stop.clone(),
            Arc::new(Counters::default()),
        )),
        consumer: tokio::spawn(consumer::consume(
            bootstrap.to_owned(),
            topic.to_owned(),
            partitions,
            group.clone(),
            stop.clone(),
        )),
        observer: tokio::spawn(observer::observe(
            bootstrap.to_owned(),
            topic.to_owned(),
            partitions,
            group,
            started,
            stop.clone(),
        )),
    }
}

impl Running {
    /// Waits (bounded) for the side workloads to stop once `stop` has turned true.
    pub(crate) async fn join(self, timeout: Duration) -> anyhow::Result<Logs> {
        let joined = tokio::time::timeout(timeout, async {
            Ok::<_, tokio::task::JoinError>(Logs {
                compacted: self.compacted.await?,
                consumer: self.consumer.await?,
                observed: self.observer.await?,
            })
        })
        .await
        .map_err(|_| anyhow!("the side workloads did not stop in time"))?;
        joined.context("a side workload failed")
    }
}

/// The verdicts of the side checks, as the report carries them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Verdicts {
    /// Produce requests in flight per partition producer (idempotent producers).
    pub(crate) max_in_flight: usize,
    pub(crate) compacted: CompactedVerdict,
    /// Acknowledged consumer-group commits against the committed offsets after the run.
    pub(crate) commits: CommitVerdict,
    /// The committed offsets sampled with OffsetFetch during the run.
    pub(crate) committed_offsets_sampled: MonotonicVerdict,
    /// The high watermarks sampled with ListOffsets during the run.
    pub(crate) high_watermarks_sampled: MonotonicVerdict,
    /// The records the consumer was given, against the read-back.
    pub(crate) consumed_stay_visible: VisibilityVerdict,
}

impl Verdicts {
    /// Whether a side check failed. `loss_allowed`: the schedule may lose acknowledged data
    /// (then losses are reported only); `offsets_loss_allowed`: the same for the committed
    /// offsets, whose internal topic is never fsynced on every append.
    pub(crate) fn violated(&self, loss_allowed: bool, offsets_loss_allowed: bool) -> bool {
        let data = self.compacted.violated()
            || self.high_watermarks_sampled.violated()
            || self.consumed_stay_visible.violated();
        let offsets = self.commits.violated() || self.committed_offsets_sampled.violated();
        (data && !loss_allowed) || (offsets && !(loss_allowed || offsets_loss_allowed))
    }

    /// The lines of the report for people.
    pub(crate) fn render(&self) -> String {
        let c = &self.compacted;
        let mut out = format!(
            "pipelined idempotent producers: up to {} produce requests in flight per partition\n\
             compacted topic {}: {} acked over {} keys, {} records read of {} offsets \
             ({} produce errors); keys missing {}, keys with an older value {}, offsets not \
             increasing {}\n",
            self.max_in_flight,
            c.topic,
            c.acked,
            c.keys,
            c.read,
            c.log_end_offset
                .map_or_else(|| "?".to_owned(), |o| o.to_string()),
            c.produce_errors,
            c.missing_keys,
            c.stale_keys,
            c.offsets_not_increasing,
        );
        if let Some(e) = &c.read_error {
            out.push_str(&format!("compacted topic: cannot be read back: {e}\n"));
        }
        let m = &self.commits;
        out.push_str(&format!(
            "consumer group commits: {} acknowledged ({} errors), {} partition(s) lost their last acknowledged commit\n",
            m.acknowledged_commits, m.commit_errors, m.lost
        ));
        if let Some(e) = &m.read_error {
            out.push_str(&format!(
                "committed offsets after the run: cannot be read: {e}\n"
            ));
        }
        for (name, v) in [
            (
                "committed offsets (OffsetFetch)",
                &self.committed_offsets_sampled,
            ),
            (
                "high watermarks (ListOffsets)",
                &self.high_watermarks_sampled,
            ),
        ] {
            out.push_str(&format!(
                "{name}: {} samples ({} errors), went backwards {}\n",
                v.samples, v.errors, v.went_backwards
            ));
        }
        let v = &self.consumed_stay_visible;
        out.push_str(&format!(
            "records a consumer was given: {} ({} fetch errors), gone since {}, changed since {}\n",
            v.seen, v.fetch_errors, v.vanished, v.changed
        ));
        for finding in c
            .sample
            .iter()
            .chain(&self.committed_offsets_sampled.went_backwards_sample)
            .chain(&self.high_watermarks_sampled.went_backwards_sample)
            .chain(&v.sample)
        {
            out.push_str(&format!("  {finding}\n"));
        }
        out
    }
}

/// Reads the compacted topic and the committed offsets back and judges every side check;
/// `reads` are the main topic's partitions as read back ((offset, sequence number); `None`
/// when a partition could not be read).
pub(crate) async fn judge(
    logs: Logs,
    bootstrap: &str,
    topic: &str,
    reads: &HashMap<i32, Vec<(i64, u64)>>,
) -> Verdicts {
    let Logs {
        compacted: compacted_log,
        consumer: consumer_log,
        observed,
    } = logs;
    let mut client = workload::connect(bootstrap).await;

    let name = compacted::topic_name(topic);
    let acked: Vec<u64> = compacted_log
        .acks
        .iter()
        .flat_map(|a| a.seqs.iter().copied())
        .collect();
    let read = match client.as_mut() {
        Ok(c) => read_compacted(c, &name).await,
        Err(e) => Err(format!("{e:#}")),
    };
    let mut compacted_verdict = match &read {
        Ok((records, _)) => compacted::check_compacted(&acked, records),
        Err(_) => compacted::check_compacted(&acked, &[]),
    };
    compacted_verdict.topic = name;
    compacted_verdict.produce_errors = compacted_log.errors;
    match read {
        Ok((_, end)) => compacted_verdict.log_end_offset = Some(end),
        Err(e) => compacted_verdict.read_error = Some(e),
    }

    let group = group_name(topic);
    let committed = match client.as_mut() {
        Ok(c) => committed_after_run(c, &group, topic).await,
        Err(e) => Err(format!("{e:#}")),
    };
    let commits = consumer::check_commits(
        &consumer_log.commits,
        consumer_log.commit_errors,
        committed.as_ref().map_err(Clone::clone),
    );

    let mut visible = VisibilityVerdict {
        not_remembered: consumer_log.not_remembered,
        fetch_errors: consumer_log.fetch_errors,
        ..VisibilityVerdict::default()
    };
    let mut partitions: Vec<&i32> = consumer_log.seen.keys().collect();
    partitions.sort();
    for p in partitions {
        consumer::check_visible(
            &mut visible,
            *p,
            &consumer_log.seen[p],
            reads.get(p).map(Vec::as_slice),
        );
    }

    Verdicts {
        max_in_flight: MAX_IN_FLIGHT,
        compacted: compacted_verdict,
        commits,
        committed_offsets_sampled: MonotonicVerdict {
            last_error: observed.committed_last_error,
            ..observer::check_monotonic(&observed.committed, observed.committed_errors)
        },
        high_watermarks_sampled: MonotonicVerdict {
            last_error: observed.high_watermark_last_error,
            ..observer::check_monotonic(&observed.high_watermarks, observed.high_watermark_errors)
        },
        consumed_stay_visible: visible,
    }
}

/// The compacted topic's records ((offset, (key, sequence number))) and its log end offset.
async fn read_compacted(
    client: &mut Client,
    name: &str,
) -> Result<(Vec<(i64, (u64, u64))>, i64), String> {
    let records = bounded_client::read_with_offsets(client, name, 0, compacted::parse_value)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let end = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.list_offsets(name, 0, offset_spec::LATEST),
    )
    .await
    .map_err(|_| format!("finding the end of {name} took over {REQUEST_TIMEOUT:?}"))?
    .map_err(|e| e.to_string())?;
    Ok((records, end))
}

/// The group's committed offsets of `topic` by partition, asking again until
/// [`READY_TIMEOUT`] while the coordinator is not available.
async fn committed_after_run(
    client: &mut Client,
    group: &str,
    topic: &str,
) -> Result<HashMap<i32, i64>, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let error = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.committed_offsets(group, None),
        )
        .await
        {
            Ok(Ok(offsets)) => {
                return Ok(offsets
                    .into_iter()
                    .filter(|o| o.topic == topic)
                    .map(|o| (o.partition, o.offset))
                    .collect())
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("OffsetFetch took over {REQUEST_TIMEOUT:?}"),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
