//! Disk faults injected at each step of an append and of a flush (`--features failpoints`):
//! a failed append leaves the log as if the batch had never been sent, so the client's retry
//! is neither a duplicate nor lost, and a failed fsync is never taken for a success later.
//! Each test holds the `fail` crate's global scenario lock: failpoints are process-wide.

use std::path::Path;

use fail::FailScenario;
use tempfile::TempDir;

use crate::batch::testing::build_batch_sizes;
use crate::batch::validate_batches;
use crate::failpoints as fp;
use crate::{LogConfig, PartitionLog};

const T0: i64 = 1_700_000_000_000;

/// Three ~170-byte batches fill a segment, so the fourth rolls; every batch gets an offset
/// and a time index entry, and each carries a new leader epoch (an epoch checkpoint write).
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 1,
        ..LogConfig::default()
    }
}

/// Batch `i`: one record, told apart by its timestamp.
fn batch(i: i64) -> Vec<u8> {
    build_batch_sizes(0, T0 + i * 1000, &[100])
}

fn append(log: &mut PartitionLog, i: i64) -> Result<crate::AppendInfo, crate::StorageError> {
    log.append(&mut batch(i), i as i32, T0)
}

/// The batches in the log, by number, in offset order.
fn contents(log: &PartitionLog) -> Vec<i64> {
    let r = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .unwrap();
    if r.records.is_empty() {
        return Vec::new();
    }
    validate_batches(&r.records)
        .unwrap()
        .iter()
        .map(|b| (b.base_timestamp - T0) / 1000)
        .collect()
}

/// Every offset reads back the batch that holds it (the indexes agree with the data).
fn check_reads(log: &PartitionLog) {
    for offset in log.log_start_offset()..log.log_end_offset() {
        let r = log.read(offset, 1, i64::MAX, true).unwrap();
        let first = validate_batches(&r.records).unwrap()[0].base_offset;
        assert_eq!(first, offset, "reading offset {offset}");
    }
}

fn reopen(dir: &Path, log: PartitionLog) -> PartitionLog {
    drop(log);
    PartitionLog::open(dir, config(), T0).unwrap()
}

/// Appends batches `0..n`, then fails the append of batch `n` once at `failpoint` with
/// `errno`, retries it as a client would, and checks memory and disk hold every batch once.
fn fail_append(n: i64, failpoint: &str, errno: &str) {
    let what = format!("{failpoint}={errno}");
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..n {
        append(&mut log, i).unwrap();
    }
    let before: Vec<i64> = (0..n).collect();
    fail::cfg(failpoint, &format!("1*return({errno})")).unwrap();
    assert!(
        append(&mut log, n).is_err(),
        "{what}: the injected error fails the append"
    );
    assert_eq!(
        log.log_end_offset(),
        n,
        "{what}: nothing of the failed batch counts"
    );
    assert_eq!(contents(&log), before, "{what}");
    // EIO takes the log offline; a full disk only fails this append.
    let full = errno == "enospc";
    assert_eq!(log.offline_reason().is_none(), full, "{what}");
    // The client retries on the same log: appended once, or refused.
    if append(&mut log, n).is_ok() {
        assert_eq!(
            contents(&log),
            (0..=n).collect::<Vec<_>>(),
            "{what}: the retry"
        );
    }
    let retried = log.log_end_offset() == n + 1;
    assert_eq!(
        retried, full,
        "{what}: the retry is taken only after a full disk"
    );
    // What is on disk agrees: the batch is there once if the retry was taken, else not at all.
    let mut log = reopen(tmp.path(), log);
    let expected: Vec<i64> = (0..n + i64::from(retried)).collect();
    assert_eq!(contents(&log), expected, "{what}: after reopening");
    for i in expected.len() as i64..6 {
        append(&mut log, i).unwrap();
    }
    let all: Vec<i64> = (0..6).collect();
    assert_eq!(contents(&log), all, "{what}: appends after reopening");
    check_reads(&log);
    let log = reopen(tmp.path(), log);
    assert_eq!(contents(&log), all, "{what}: second reopen");
    check_reads(&log);
}

#[test]
fn failpoint_append_steps_leave_no_trace() {
    let _scenario = FailScenario::setup();
    // Batch 2 is the third of the first segment (indexed); batch 3 rolls a new segment.
    for (n, failpoint) in [
        (2, fp::SEGMENT_WRITE),
        (2, fp::OFFSET_INDEX_WRITE),
        (2, fp::TIME_INDEX_WRITE),
        (2, fp::CHECKPOINT_WRITE),
        (3, fp::SEGMENT_CREATE),
        (3, fp::SEGMENT_WRITE),
    ] {
        for errno in ["eio", "enospc"] {
            fail_append(n, failpoint, errno);
            fail::remove(failpoint);
        }
    }
}

/// A failed fsync is not retried as if it had worked (fsyncgate: Linux may drop the dirty
/// pages and report the error once), and the recovery point does not move past it.
#[test]
fn failpoint_failed_fsync_is_never_taken_for_success() {
    let _scenario = FailScenario::setup();
    for failpoint in [fp::SEGMENT_FSYNC, fp::INDEX_FSYNC, fp::DIR_FSYNC] {
        for errno in ["eio", "enospc"] {
            let what = format!("{failpoint}={errno}");
            let tmp = TempDir::new().unwrap();
            let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
            for i in 0..3 {
                append(&mut log, i).unwrap();
            }
            log.flush().unwrap();
            append(&mut log, 3).unwrap();
            fail::cfg(failpoint, &format!("1*return({errno})")).unwrap();
            assert!(log.flush().is_err(), "{what}");
            assert!(
                log.offline_reason().is_some(),
                "{what}: any failed fsync takes the log offline"
            );
            fail::remove(failpoint);
            assert!(
                log.flush().is_err(),
                "{what}: a second flush must not report success"
            );
            let rp = std::fs::read_to_string(tmp.path().join("recovery-point")).unwrap();
            assert_eq!(
                rp.trim(),
                "3",
                "{what}: the recovery point stays below the unsynced data"
            );
            let log = reopen(tmp.path(), log);
            let got = contents(&log);
            assert!(got == [0, 1, 2] || got == [0, 1, 2, 3], "{what}: {got:?}");
            check_reads(&log);
        }
    }
}

/// With flush.messages=1 the append itself fsyncs: when that fails the batch may or may not
/// be on disk, so the log takes no more appends and a retry cannot write it twice.
#[test]
fn failpoint_failed_fsync_of_an_append_is_not_duplicated_by_the_retry() {
    let _scenario = FailScenario::setup();
    for failpoint in [fp::SEGMENT_FSYNC, fp::INDEX_FSYNC, fp::DIR_FSYNC] {
        let what = failpoint.to_string();
        let tmp = TempDir::new().unwrap();
        let config = LogConfig {
            flush_messages: 1,
            ..config()
        };
        let mut log = PartitionLog::open(tmp.path(), config.clone(), T0).unwrap();
        for i in 0..3 {
            append(&mut log, i).unwrap();
        }
        fail::cfg(failpoint, "1*return(eio)").unwrap();
        assert!(append(&mut log, 3).is_err(), "{what}");
        fail::remove(failpoint);
        assert!(
            append(&mut log, 3).is_err(),
            "{what}: an offline log takes no retry"
        );
        let got = contents(&log);
        assert!(got == [0, 1, 2] || got == [0, 1, 2, 3], "{what}: {got:?}");
        drop(log);
        let log = PartitionLog::open(tmp.path(), config, T0).unwrap();
        let got = contents(&log);
        assert!(
            got == [0, 1, 2] || got == [0, 1, 2, 3],
            "{what}: after reopening {got:?}"
        );
    }
}
