//! A consumer of the chaos topic that runs during the faults: it reads every partition from
//! the start (as Kafka's `assign()`, without group membership), commits its positions to a
//! consumer group every [`COMMIT_EVERY`] (a generation-less commit, which the coordinator
//! accepts from a group without members), and remembers each record it was given, so the
//! checker can tell whether an acknowledged commit was lost and whether a record once served
//! to a consumer disappeared or changed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use runnel_client::Client;
use serde::Serialize;
use tokio::sync::watch;

use super::workload::{connect, parse_value};
use crate::bounded_client::{ATTEMPT_TIMEOUT, REQUEST_TIMEOUT};

/// How often the consumer commits its positions.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long a fetch may wait for records.
const FETCH_WAIT_MS: i32 = 100;
/// Records remembered at most (16 bytes each), so memory stays bounded on long runs.
const MAX_REMEMBERED: usize = 1_000_000;
/// Pause after a failed fetch.
const BACKOFF: Duration = Duration::from_millis(200);
/// How many findings a verdict describes.
const SAMPLE: usize = 10;

/// An acknowledged commit of one partition's position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Commit {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// What the consumer did.
#[derive(Debug, Default)]
pub(crate) struct ConsumerLog {
    /// (offset, sequence number) of every record it was given, per partition.
    pub(crate) seen: HashMap<i32, Vec<(i64, u64)>>,
    /// Records given beyond [`MAX_REMEMBERED`], not remembered.
    pub(crate) not_remembered: u64,
    pub(crate) fetch_errors: u64,
    pub(crate) commits: Vec<Commit>,
    pub(crate) commit_errors: u64,
}

/// Consumes `topic` and commits to `group` until `stop` turns true.
pub(crate) async fn consume(
    bootstrap: String,
    topic: String,
    partitions: i32,
    group: String,
    mut stop: watch::Receiver<bool>,
) -> ConsumerLog {
    let mut log = ConsumerLog::default();
    let mut positions: Vec<(i32, i64)> = (0..partitions).map(|p| (p, 0)).collect();
    let mut client: Option<Client> = None;
    let mut remembered = 0usize;
    let mut last_commit = Instant::now();
    while !*stop.borrow() {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(&bootstrap).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    log.fetch_errors += 1;
                    let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
                    continue;
                }
            },
        };
        let fetched = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            c.fetch_partitions(&topic, &positions, FETCH_WAIT_MS, 1 << 20),
        )
        .await;
        match fetched {
            Ok(Ok(parts)) => {
                for part in parts {
                    if part.error.is_some() {
                        log.fetch_errors += 1;
                        continue;
                    }
                    let Some(pos) = positions.iter_mut().find(|(p, _)| *p == part.partition) else {
                        continue;
                    };
                    let seen = log.seen.entry(part.partition).or_default();
                    let from = pos.1;
                    for r in part.records.iter().filter(|r| r.offset >= from) {
                        let seq = r
                            .value
                            .as_deref()
                            .and_then(|v| parse_value(part.partition, v));
                        if let Some(seq) = seq {
                            if remembered < MAX_REMEMBERED {
                                seen.push((r.offset, seq));
                                remembered += 1;
                            } else {
                                log.not_remembered += 1;
                            }
                        }
                        pos.1 = r.offset + 1;
                    }
                }
            }
            Ok(Err(_)) => {
                log.fetch_errors += 1;
                let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
            }
            Err(_) => {
                log.fetch_errors += 1;
                client = None;
            }
        }
        if last_commit.elapsed() < COMMIT_EVERY {
            continue;
        }
        last_commit = Instant::now();
        let Some(c) = client.as_mut() else { continue };
        let offsets: Vec<(String, i32, i64)> = positions
            .iter()
            .map(|&(p, o)| (topic.clone(), p, o))
            .collect();
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            c.commit_offsets_attempt(&group, -1, "", &offsets),
        )
        .await
        {
            Ok(Ok(results)) => {
                for (((_, partition), result), &(_, _, offset)) in results.iter().zip(&offsets) {
                    match result {
                        Ok(()) => log.commits.push(Commit {
                            partition: *partition,
                            offset,
                        }),
                        Err(_) => log.commit_errors += 1,
                    }
                }
            }
            Ok(Err(_)) => log.commit_errors += 1,
            Err(_) => {
                log.commit_errors += 1;
                client = None;
            }
        }
    }
    log
}

/// The verdict on the consumer group's commits.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct CommitVerdict {
    pub(crate) acknowledged_commits: usize,
    pub(crate) commit_errors: u64,
    /// Per partition: the last acknowledged commit and the committed offset after the run.
    pub(crate) partitions: Vec<CommittedPartition>,
    /// Partitions whose committed offset after the run is below their last acknowledged
    /// commit (or missing): must be none.
    pub(crate) lost: usize,
    /// Why the committed offsets could not be read after the run (then every partition with
    /// an acknowledged commit counts as lost).
    pub(crate) read_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct CommittedPartition {
    pub(crate) partition: i32,
    pub(crate) last_acknowledged: Option<i64>,
    pub(crate) committed_after_run: Option<i64>,
}

impl CommitVerdict {
    pub(crate) fn violated(&self) -> bool {
        self.lost > 0
    }
}

/// Judges the acknowledged commits against the committed offsets read after the run
/// (`Err` when they could not be read).
pub(crate) fn check_commits(
    commits: &[Commit],
    commit_errors: u64,
    after_run: Result<&HashMap<i32, i64>, String>,
) -> CommitVerdict {
    let mut last: HashMap<i32, i64> = HashMap::new();
    for c in commits {
        let e = last.entry(c.partition).or_insert(c.offset);
        *e = (*e).max(c.offset);
    }
    let (final_offsets, read_error) = match after_run {
        Ok(m) => (m.clone(), None),
        Err(e) => (HashMap::new(), Some(e)),
    };
    let mut ids: Vec<i32> = last.keys().chain(final_offsets.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let partitions: Vec<CommittedPartition> = ids
        .into_iter()
        .map(|p| CommittedPartition {
            partition: p,
            last_acknowledged: last.get(&p).copied(),
            committed_after_run: final_offsets.get(&p).copied(),
        })
        .collect();
    let lost = partitions
        .iter()
        .filter(|p| match (p.last_acknowledged, p.committed_after_run) {
            (Some(acked), Some(now)) => now < acked,
            (Some(_), None) => true,
            (None, _) => false,
        })
        .count();
    CommitVerdict {
        acknowledged_commits: commits.len(),
        commit_errors,
        partitions,
        lost,
        read_error,
    }
}

/// The verdict on the records the consumer was given.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct VisibilityVerdict {
    /// Records the consumer was given and remembered.
    pub(crate) seen: usize,
    pub(crate) not_remembered: u64,
    pub(crate) fetch_errors: u64,
    /// Seen records no longer at their offset in the read-back: must be none.
    pub(crate) vanished: usize,
    /// Seen records whose offset now holds another record: must be none.
    pub(crate) changed: usize,
    pub(crate) sample: Vec<String>,
}

impl VisibilityVerdict {
    pub(crate) fn violated(&self) -> bool {
        self.vanished > 0 || self.changed > 0
    }
}

/// Judges what the consumer saw of one partition against the read-back of it (both
/// (offset, sequence number)), adding to `v`. A partition that could not be read back is
/// `None`: its records are not judged here (the read-back failure fails the run already).
pub(crate) fn check_visible(
    v: &mut VisibilityVerdict,
    partition: i32,
    seen: &[(i64, u64)],
    read: Option<&[(i64, u64)]>,
) {
    v.seen += seen.len();
    let Some(read) = read else { return };
    let now: HashMap<i64, u64> = read.iter().copied().collect();
    for &(offset, seq) in seen {
        let finding = match now.get(&offset) {
            None => {
                v.vanished += 1;
                format!("partition {partition}: record {seq} at offset {offset} is gone")
            }
            Some(&other) if other != seq => {
                v.changed += 1;
                format!("partition {partition}: offset {offset} held record {seq}, now {other}")
            }
            Some(_) => continue,
        };
        if v.sample.len() < SAMPLE {
            v.sample.push(finding);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(partition: i32, offset: i64) -> Commit {
        Commit { partition, offset }
    }

    #[test]
    fn a_committed_offset_at_or_past_the_last_ack_keeps_the_commit() {
        let commits = [commit(0, 5), commit(0, 9), commit(1, 3)];
        let after: HashMap<i32, i64> = [(0, 9), (1, 4)].into();
        let v = check_commits(&commits, 2, Ok(&after));
        assert_eq!(v.lost, 0);
        assert_eq!(v.acknowledged_commits, 3);
        assert_eq!(
            v.partitions[0],
            CommittedPartition {
                partition: 0,
                last_acknowledged: Some(9),
                committed_after_run: Some(9)
            }
        );
        assert!(!v.violated());
    }

    #[test]
    fn an_older_or_missing_committed_offset_loses_the_commit() {
        let commits = [commit(0, 5), commit(0, 9), commit(1, 3)];
        let after: HashMap<i32, i64> = [(0, 5)].into();
        let v = check_commits(&commits, 0, Ok(&after));
        assert_eq!(v.lost, 2);
        assert!(v.violated());
    }

    #[test]
    fn unreadable_offsets_lose_every_acknowledged_commit() {
        let v = check_commits(&[commit(0, 5)], 0, Err("no coordinator".into()));
        assert_eq!(
            (v.lost, v.read_error.as_deref()),
            (1, Some("no coordinator"))
        );
        let v = check_commits(&[], 0, Err("no coordinator".into()));
        assert_eq!(v.lost, 0);
    }

    #[test]
    fn seen_records_must_stay_where_they_were() {
        let mut v = VisibilityVerdict::default();
        let read = [(0, 10), (1, 11), (3, 13)];
        check_visible(&mut v, 0, &[(0, 10), (1, 11)], Some(&read));
        assert!(!v.violated());
        check_visible(&mut v, 0, &[(2, 12), (3, 99)], Some(&read));
        assert_eq!((v.seen, v.vanished, v.changed), (4, 1, 1));
        assert_eq!(
            v.sample,
            vec![
                "partition 0: record 12 at offset 2 is gone".to_owned(),
                "partition 0: offset 3 held record 99, now 13".to_owned(),
            ]
        );
        check_visible(&mut v, 1, &[(0, 1)], None);
        assert_eq!((v.seen, v.vanished), (5, 1));
    }
}
