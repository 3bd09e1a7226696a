//! The leader epoch cache wired into [`PartitionLog`]: appends, truncation,
//! retention, reopen, checkpoint loss, and a seeded randomized history checked
//! against a model computed from the batch headers actually in the log.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::batch::testing::{build_batch_sizes, build_batch_with, BatchSpec, TestRecord};
use crate::batch::{self, validate_stored_batches, BatchInfo};
use crate::epochs::{LeaderEpochCache, LEADER_EPOCH_FILE};
use crate::{LogConfig, PartitionLog};

const T0: i64 = 1_700_000_000_000;

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, small_segments(), T0).unwrap()
}

/// Leader append of one batch of `n` records at `epoch`; returns its base offset.
fn lead(log: &mut PartitionLog, epoch: i32, n: usize) -> i64 {
    let mut b = build_batch_sizes(0, T0, &vec![30; n]);
    log.append(&mut b, epoch, T0).unwrap().base_offset
}

/// Follower append of batches `(epoch, records)` starting at the log end.
fn follow(log: &mut PartitionLog, batches: &[(i32, usize)]) {
    let mut buf = Vec::new();
    let mut next = log.log_end_offset();
    for &(epoch, n) in batches {
        buf.extend_from_slice(&build_batch_with(&BatchSpec {
            base_offset: next,
            partition_leader_epoch: epoch,
            base_timestamp: T0,
            records: vec![
                TestRecord {
                    value: Some(vec![7; 30]),
                    ..TestRecord::default()
                };
                n
            ],
            ..BatchSpec::default()
        }));
        next += n as i64;
    }
    log.append_as_follower(&buf).unwrap();
}

fn batches_in(log: &PartitionLog) -> Vec<BatchInfo> {
    let r = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .unwrap();
    if r.records.is_empty() {
        return Vec::new();
    }
    validate_stored_batches(&r.records).unwrap()
}

fn checkpoint_on_disk(dir: &Path) -> Option<LeaderEpochCache> {
    let text = fs::read_to_string(dir.join(LEADER_EPOCH_FILE)).ok()?;
    LeaderEpochCache::parse_checkpoint(&text)
}

/// Checks the cache (in memory and on disk) against a brute-force model of the
/// batch headers in the log. Assumes epochs never decrease along the log.
fn check_against_log(log: &PartitionLog) {
    let batches = batches_in(log);
    let leo = log.log_end_offset();
    let mut model: Vec<(i32, i64)> = Vec::new();
    for b in batches.iter().filter(|b| b.partition_leader_epoch >= 0) {
        if model.last().is_none_or(|l| b.partition_leader_epoch > l.0) {
            model.push((b.partition_leader_epoch, b.base_offset));
        }
    }
    assert_eq!(log.leader_epochs(), model, "entries");
    let on_disk = checkpoint_on_disk(log.dir()).unwrap_or_default();
    assert_eq!(on_disk.entries(), &model[..], "checkpoint file");
    let epochs: Vec<i32> = batches
        .iter()
        .map(|b| b.partition_leader_epoch)
        .filter(|&e| e >= 0)
        .collect();
    let latest = epochs.iter().copied().max();
    assert_eq!(log.latest_epoch(), latest);
    let top = latest.unwrap_or(0) + 2;
    for r in -1..=top {
        // Kafka's rules, from the batches actually in the log.
        let want = match latest {
            None => (-1, -1),
            Some(_) if r < 0 => (-1, -1),
            Some(latest) if r == latest => (latest, leo),
            Some(_) => match model.iter().find(|&&(e, _)| e > r) {
                None => (-1, -1),
                Some(&(_, next_start)) => {
                    let floor = model.iter().map(|&(e, _)| e).filter(|&e| e <= r).max();
                    (floor.unwrap_or(r), next_start)
                }
            },
        };
        assert_eq!(
            log.end_offset_for_epoch(r),
            want,
            "end offset for epoch {r}"
        );
    }
    for o in (log.log_start_offset() - 1).max(0)..=leo {
        let want = batches
            .iter()
            .find(|b| b.base_offset <= o && o <= b.last_offset())
            .map(|b| b.partition_leader_epoch)
            .filter(|&e| e >= 0);
        assert_eq!(log.epoch_for_offset(o), want, "epoch for offset {o}");
    }
}

#[test]
fn leader_and_follower_appends_assign_epochs() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path());
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
    assert_eq!(log.leader_epochs(), vec![]);
    assert_eq!(lead(&mut log, -1, 2), 0); // no epoch: ignored
    assert_eq!(log.leader_epochs(), vec![]);
    assert!(!tmp.path().join(LEADER_EPOCH_FILE).exists());
    assert_eq!(lead(&mut log, 0, 2), 2);
    assert_eq!(lead(&mut log, 0, 3), 4);
    assert_eq!(lead(&mut log, 2, 1), 7); // a gap in epochs
                                         // One follower buffer spanning epochs 2, 5 and 5 again.
    follow(&mut log, &[(2, 2), (5, 1), (5, 2)]);
    assert_eq!(log.leader_epochs(), vec![(0, 2), (2, 7), (5, 10)]);
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(log.log_end_offset(), 13);
    assert_eq!(
        fs::read_to_string(tmp.path().join(LEADER_EPOCH_FILE)).unwrap(),
        "0\n3\n0 2\n2 7\n5 10\n"
    );
    // An older epoch is ignored (and logged).
    lead(&mut log, 3, 1);
    assert_eq!(log.leader_epochs(), vec![(0, 2), (2, 7), (5, 10)]);
    assert_eq!(log.end_offset_for_epoch(5), (5, 14));
    assert_eq!(log.end_offset_for_epoch(9), (-1, -1));
    assert_eq!(log.end_offset_for_epoch(4), (2, 10));
    assert_eq!(log.end_offset_for_epoch(1), (0, 7));
    assert_eq!(log.end_offset_for_epoch(-1), (-1, -1));
    assert_eq!(log.epoch_for_offset(0), None, "batch without an epoch");
    assert_eq!(log.epoch_for_offset(2), Some(0));
    assert_eq!(log.epoch_for_offset(9), Some(2));
    assert_eq!(log.epoch_for_offset(13), Some(5));
    assert_eq!(log.epoch_for_offset(14), None, "log end");
    assert_eq!(log.epoch_for_offset(-3), None);
}

#[test]
fn checkpoint_survives_reopen() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path());
    for epoch in [1, 1, 3, 4, 4, 8] {
        lead(&mut log, epoch, 3);
    }
    let before = log.leader_epochs();
    assert_eq!(before, vec![(1, 0), (3, 6), (4, 9), (8, 15)]);
    assert!(log.segment_count() > 1);
    log.close().unwrap();
    let mut log = open(tmp.path());
    assert_eq!(log.leader_epochs(), before);
    check_against_log(&log);
    // Without a clean close too.
    lead(&mut log, 9, 1);
    drop(log);
    let log = open(tmp.path());
    assert_eq!(log.leader_epochs().last(), Some(&(9, 18)));
    check_against_log(&log);
}

#[test]
fn missing_corrupt_or_lagging_checkpoint_is_rebuilt_identically() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path());
    for epoch in [0, 0, 2, 2, 2, 5, 7, 7] {
        lead(&mut log, epoch, 2);
    }
    let want = log.leader_epochs();
    assert_eq!(want, vec![(0, 0), (2, 4), (5, 10), (7, 12)]);
    drop(log);
    let path = tmp.path().join(LEADER_EPOCH_FILE);
    let text = fs::read_to_string(&path).unwrap();
    for broken in [
        None,
        Some("garbage"),
        Some("0\n5\n0 0\n"),      // wrong count
        Some("0\n2\n0 0\n0 4\n"), // not increasing
        Some("0\n0\n"),           // cleared under live data
        Some("0\n1\n0 0\n"),      // lagging: the last batch's epoch is missing
    ] {
        match broken {
            None => fs::remove_file(&path).unwrap(),
            Some(b) => fs::write(&path, b).unwrap(),
        }
        let log = open(tmp.path());
        assert_eq!(log.leader_epochs(), want, "{broken:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "{broken:?}");
        check_against_log(&log);
    }
    // A stray temp file from an interrupted write is removed.
    fs::write(tmp.path().join("leader-epoch-checkpoint.tmp"), "0\n").unwrap();
    let log = open(tmp.path());
    assert!(!tmp.path().join("leader-epoch-checkpoint.tmp").exists());
    assert_eq!(log.leader_epochs(), want);
}

#[test]
fn torn_tail_truncation_removes_epochs_beyond_the_new_end() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), LogConfig::default(), T0).unwrap();
    lead(&mut log, 1, 2);
    lead(&mut log, 2, 2);
    lead(&mut log, 3, 2);
    assert_eq!(log.leader_epochs(), vec![(1, 0), (2, 2), (3, 4)]);
    let size = log.size_bytes();
    drop(log);
    // Tear the last batch (epoch 3) in half; the checkpoint still names it.
    let seg = tmp.path().join(format!("{:020}.log", 0));
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(size - 20).unwrap();
    let mut log = PartitionLog::open(tmp.path(), LogConfig::default(), T0).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.leader_epochs(), vec![(1, 0), (2, 2)]);
    assert_eq!(
        checkpoint_on_disk(tmp.path()).unwrap().entries(),
        &[(1, 0), (2, 2)]
    );
    assert_eq!(log.end_offset_for_epoch(2), (2, 4));
    assert_eq!(
        log.end_offset_for_epoch(3),
        (-1, -1),
        "gone with the torn batch"
    );
    check_against_log(&log);
    // The torn epoch's offsets are reused by a later epoch.
    lead(&mut log, 4, 1);
    assert_eq!(log.leader_epochs(), vec![(1, 0), (2, 2), (4, 4)]);
    check_against_log(&log);
}

#[test]
fn truncate_to_drops_epochs_from_the_new_end() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path());
    for epoch in [0, 1, 1, 3, 4] {
        lead(&mut log, epoch, 3); // batches at 0, 3, 6, 9, 12
    }
    // Inside epoch 4's only batch [12, 14]: the batch goes, and with it epoch 4.
    log.truncate_to(13).unwrap();
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(log.leader_epochs(), vec![(0, 0), (1, 3), (3, 9)]);
    // Exactly at an epoch's start.
    log.truncate_to(9).unwrap();
    assert_eq!(log.leader_epochs(), vec![(0, 0), (1, 3)]);
    check_against_log(&log);
    // A follower takes over from there with the new leader's epoch.
    follow(&mut log, &[(2, 2), (6, 1)]);
    assert_eq!(log.leader_epochs(), vec![(0, 0), (1, 3), (2, 9), (6, 11)]);
    check_against_log(&log);
    // Inside epoch 1 (batch [6, 8] goes).
    log.truncate_to(7).unwrap();
    assert_eq!(log.leader_epochs(), vec![(0, 0), (1, 3)]);
    check_against_log(&log);
    log.truncate_to(0).unwrap();
    assert_eq!(log.leader_epochs(), vec![]);
    check_against_log(&log);
}

#[test]
fn retention_moves_the_first_epoch_start() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path());
    for epoch in [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2] {
        lead(&mut log, epoch, 2);
    }
    assert_eq!(log.leader_epochs(), vec![(0, 0), (1, 10), (2, 20)]);
    let mut config = small_segments();
    config.retention_bytes = 0;
    log.set_config(config.clone());
    log.enforce_retention(T0, i64::MAX).unwrap();
    let start = log.log_start_offset();
    assert!(start > 10, "log start {start}");
    assert_eq!(log.leader_epochs()[0].1, start);
    check_against_log(&log);
    drop(log);
    let mut log = open(tmp.path());
    check_against_log(&log);
    // Below the log start the log restarts empty, without epochs.
    log.truncate_to(3).unwrap();
    assert_eq!((log.log_start_offset(), log.leader_epochs()), (3, vec![]));
    assert_eq!(log.end_offset_for_epoch(2), (-1, -1));
    lead(&mut log, 2, 1);
    assert_eq!(log.leader_epochs(), vec![(2, 3)]);
    check_against_log(&log);
}

/// splitmix64: a fixed-seed generator without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_history(seed: u64) {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(seed);
    let mut log = open(dir);
    // Epoch of the next leader append; never below the last batch's epoch.
    let mut epoch: i32 = 0;
    for step in 0..200 {
        let op = rng.below(100);
        if op < 35 {
            if rng.chance(30) {
                epoch += 1 + rng.below(3) as i32;
            }
            let mut buf = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let n = 1 + rng.below(4) as usize;
                buf.extend_from_slice(&build_batch_sizes(0, T0, &vec![20; n]));
            }
            log.append(&mut buf, epoch, T0).unwrap();
        } else if op < 55 {
            let mut batches = Vec::new();
            for _ in 0..1 + rng.below(4) {
                if rng.chance(30) {
                    epoch += 1 + rng.below(2) as i32;
                }
                batches.push((epoch, 1 + rng.below(3) as usize));
            }
            follow(&mut log, &batches);
        } else if op < 70 {
            let (start, end) = (log.log_start_offset(), log.log_end_offset());
            let lo = (start - 3).max(0);
            let to = lo + rng.below((end - lo + 1) as u64) as i64;
            log.truncate_to(to).unwrap();
            let last = batches_in(&log).last().map(|b| b.partition_leader_epoch);
            // A new leader may reuse an epoch above the last one left, or lower
            // than any that was truncated away.
            epoch = match last {
                Some(e) => e + rng.below(2) as i32,
                None => rng.below(epoch as u64 + 1) as i32,
            };
        } else if op < 85 {
            let mut config = small_segments();
            config.retention_bytes = rng.below(log.size_bytes() + 1) as i64;
            log.set_config(config);
            log.enforce_retention(T0, i64::MAX).unwrap();
            log.set_config(small_segments());
        } else if op < 95 {
            let before = log.leader_epochs();
            if rng.chance(50) {
                log.close().unwrap();
            } else {
                drop(log);
            }
            let path = dir.join(LEADER_EPOCH_FILE);
            match rng.below(4) {
                0 => {
                    let _ = fs::remove_file(&path);
                }
                1 => fs::write(&path, "0\n9\n1 2\n").unwrap(),
                _ => {}
            }
            log = open(dir);
            assert_eq!(
                log.leader_epochs(),
                before,
                "seed {seed} step {step}: reopen"
            );
        } else {
            log.flush().unwrap();
        }
        check_against_log(&log);
    }
}

#[test]
fn randomized_histories_match_the_batch_headers() {
    for seed in 1..=8 {
        random_history(seed);
    }
}

#[test]
fn batch_headers_carry_the_appended_epoch() {
    // The model above reads epochs from headers: make sure both paths write them.
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path());
    lead(&mut log, 6, 2);
    follow(&mut log, &[(7, 1)]);
    let epochs: Vec<i32> = batches_in(&log)
        .iter()
        .map(|b| b.partition_leader_epoch)
        .collect();
    assert_eq!(epochs, vec![6, 7]);
    let mut b = build_batch_sizes(0, T0, &[1]);
    batch::set_partition_leader_epoch(&mut b, 3);
    log.append(&mut b, 8, T0).unwrap();
    assert_eq!(batches_in(&log).last().unwrap().partition_leader_epoch, 8);
}
