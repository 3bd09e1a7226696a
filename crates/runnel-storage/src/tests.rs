//! Tests of [`PartitionLog`] through its public API (plus a peek at segment
//! internals where the on-disk layout is the point).

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use tempfile::TempDir;

use crate::batch::testing::{build_batch_sizes, build_batch_with, BatchSpec, TestRecord};
use crate::batch::{self, validate_batches, BatchInfo};
use crate::{LogConfig, PartitionLog, StorageError, TimestampType};

const T0: i64 = 1_700_000_000_000;

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, T0).unwrap()
}

/// A batch of `n` records of `size`-byte values, timestamps from `ts`.
fn batch_of(n: usize, size: usize, ts: i64) -> Vec<u8> {
    build_batch_sizes(0, ts, &vec![size; n])
}

fn append(log: &mut PartitionLog, n: usize, size: usize, ts: i64) -> crate::AppendInfo {
    log.append(&mut batch_of(n, size, ts), 0, T0).unwrap()
}

fn read_all(log: &PartitionLog) -> Vec<BatchInfo> {
    let r = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .unwrap();
    if r.records.is_empty() {
        return Vec::new();
    }
    validate_batches(&r.records).unwrap()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn seg_file(dir: &Path, base: i64, suffix: &str) -> std::path::PathBuf {
    dir.join(format!("{base:020}.{suffix}"))
}

#[test]
fn assigns_offsets_across_appends_and_batches() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), LogConfig::default());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let a = append(&mut log, 3, 10, T0);
    assert_eq!((a.base_offset, a.last_offset, a.record_count), (0, 2, 3));
    assert_eq!(a.log_append_time, -1);
    let mut two = batch_of(2, 5, T0);
    two.extend_from_slice(&batch_of(4, 5, T0));
    let b = log.append(&mut two, 7, T0).unwrap();
    assert_eq!((b.base_offset, b.last_offset, b.record_count), (3, 8, 6));
    // The caller's buffer now carries the assigned offsets.
    let infos = validate_batches(&two).unwrap();
    assert_eq!((infos[0].base_offset, infos[1].base_offset), (3, 5));
    assert_eq!(infos[1].partition_leader_epoch, 7);
    assert_eq!(log.log_end_offset(), 9);
    let all = read_all(&log);
    let bases: Vec<i64> = all.iter().map(|b| b.base_offset).collect();
    assert_eq!(bases, vec![0, 3, 5]);
    assert_eq!(
        log.size_bytes() as usize,
        all.iter().map(|b| b.size).sum::<usize>()
    );
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.dir(), tmp.path());
}

#[test]
fn read_from_middle_of_batch_returns_containing_batch() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..20 {
        append(&mut log, 5, 20, T0);
    }
    assert!(log.segment_count() > 1);
    for offset in 0..100 {
        let r = log.read(offset, 1, i64::MAX, true).unwrap();
        let infos = validate_batches(&r.records).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].base_offset, offset / 5 * 5, "offset {offset}");
    }
    let r = log.read(100, 1000, i64::MAX, true).unwrap();
    assert!(r.records.is_empty());
    assert_eq!((r.log_start_offset, r.log_end_offset), (0, 100));
}

#[test]
fn read_respects_max_bytes_and_min_one() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), LogConfig::default());
    for _ in 0..10 {
        append(&mut log, 1, 100, T0);
    }
    let size = batch_of(1, 100, T0).len();
    let r = log.read(0, size * 3 + size / 2, i64::MAX, false).unwrap();
    assert_eq!(r.records.len(), size * 3);
    let r = log.read(2, size * 3, i64::MAX, false).unwrap();
    assert_eq!(validate_batches(&r.records).unwrap()[0].base_offset, 2);
    // First batch alone is too big.
    let r = log.read(0, size - 1, i64::MAX, false).unwrap();
    assert!(r.records.is_empty());
    let r = log.read(0, size - 1, i64::MAX, true).unwrap();
    assert_eq!(r.records.len(), size);
    let r = log.read(0, 0, i64::MAX, true).unwrap();
    assert_eq!(r.records.len(), size);
}

#[test]
fn read_stops_before_max_offset() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..30 {
        append(&mut log, 2, 30, T0);
    }
    let infos = validate_batches(&log.read(0, usize::MAX, 10, true).unwrap().records).unwrap();
    assert_eq!(infos.last().unwrap().last_offset(), 9);
    // A batch straddling the bound is withheld, even with min_one.
    let r = log.read(0, usize::MAX, 11, true).unwrap();
    assert_eq!(
        validate_batches(&r.records)
            .unwrap()
            .last()
            .unwrap()
            .last_offset(),
        9
    );
    assert!(log
        .read(10, usize::MAX, 11, true)
        .unwrap()
        .records
        .is_empty());
    assert!(log
        .read(10, usize::MAX, 10, true)
        .unwrap()
        .records
        .is_empty());
    // Across segments.
    let infos = validate_batches(&log.read(5, usize::MAX, 50, true).unwrap().records).unwrap();
    assert_eq!(infos[0].base_offset, 4);
    assert_eq!(infos.last().unwrap().last_offset(), 49);
    for w in infos.windows(2) {
        assert_eq!(w[1].base_offset, w[0].last_offset() + 1);
    }
}

#[test]
fn out_of_range_offsets_are_rejected() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..20 {
        append(&mut log, 1, 100, T0);
    }
    let err = log.read(21, 100, i64::MAX, true).unwrap_err();
    assert!(matches!(
        err,
        StorageError::OffsetOutOfRange {
            offset: 21,
            log_start: 0,
            log_end: 20
        }
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let cfg = LogConfig {
        retention_bytes: 0,
        ..small_segments()
    };
    log.set_config(cfg);
    log.enforce_retention(T0, i64::MAX).unwrap();
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        log.read(start - 1, 100, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(log.read(start, 100, i64::MAX, true).is_ok());
}

#[test]
fn rolls_by_segment_bytes() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    let size = batch_of(1, 200, T0).len() as u64;
    for _ in 0..10 {
        append(&mut log, 1, 200, T0);
    }
    let per_segment = 1000 / size;
    assert_eq!(log.segment_count() as u64, 10_u64.div_ceil(per_segment));
    for seg in log.segments() {
        assert!(seg.size() <= 1000);
    }
    // A batch bigger than segment_bytes still goes in (into a fresh segment).
    let big = LogConfig {
        segment_bytes: 100,
        ..small_segments()
    };
    log.set_config(big.clone());
    assert_eq!(log.config(), &big);
    let before = log.segment_count();
    append(&mut log, 1, 200, T0);
    append(&mut log, 1, 200, T0);
    assert_eq!(log.segment_count(), before + 2);
    assert!(seg_file(tmp.path(), 10, "log").exists());
    assert_eq!(read_all(&log).len(), 12);
}

#[test]
fn rolls_by_segment_ms() {
    let tmp = TempDir::new().unwrap();
    let cfg = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(tmp.path(), cfg);
    log.append(&mut batch_of(1, 10, T0), 0, T0).unwrap();
    log.append(&mut batch_of(1, 10, T0), 0, T0 + 1000).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&mut batch_of(1, 10, T0), 0, T0 + 1001).unwrap();
    assert_eq!(log.segment_count(), 2);
    // An empty active segment never rolls; retention rolls an old one.
    log.enforce_retention(T0 + 1500, i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 2);
    log.enforce_retention(T0 + 2002, i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 3);
    log.enforce_retention(T0 + 9999, i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn retention_by_time_deletes_whole_old_segments() {
    let tmp = TempDir::new().unwrap();
    let cfg = LogConfig {
        retention_ms: 10_000,
        ..small_segments()
    };
    let mut log = open(tmp.path(), cfg);
    for i in 0..12 {
        // Timestamps rise by one second per batch.
        append(&mut log, 1, 200, T0 + i * 1000);
    }
    let segs = log.segment_count();
    assert!(segs >= 4);
    assert_eq!(log.enforce_retention(T0 + 5000, i64::MAX).unwrap(), 0);
    // Everything before T0 + 6000 is expired; segments hold 3 batches each
    // (timestamps T0 .. T0 + 2000 and T0 + 3000 .. T0 + 5000).
    assert_eq!(log.segments()[1].base_offset(), 3);
    let deleted = log.enforce_retention(T0 + 16_000, i64::MAX).unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(log.log_start_offset(), 6);
    assert!(!seg_file(tmp.path(), 0, "log").exists());
    assert!(!seg_file(tmp.path(), 0, "index").exists());
    // The active segment is never deleted, whatever its age.
    log.enforce_retention(T0 + 1_000_000, i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), log.segments()[0].base_offset());
    assert_eq!(read_all(&log)[0].base_offset, log.log_start_offset());
    // Unlimited retention deletes nothing.
    let mut log2 = open(&tmp.path().join("p2"), small_segments());
    for _ in 0..10 {
        append(&mut log2, 1, 200, 0);
    }
    log2.set_config(LogConfig {
        retention_ms: -1,
        ..small_segments()
    });
    assert_eq!(log2.enforce_retention(T0, i64::MAX).unwrap(), 0);
}

/// Kafka deletes only segments wholly below the high watermark: what followers have not
/// copied stays, whatever retention says.
#[test]
fn retention_deletes_only_below_the_high_watermark() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..20 {
        append(&mut log, 1, 200, T0);
    }
    log.set_config(LogConfig {
        retention_bytes: 0,
        ..small_segments()
    });
    let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset()).collect();
    assert!(bases.len() > 3, "{bases:?}");
    assert_eq!(log.enforce_retention(T0, 0).unwrap(), 0);
    // A watermark inside the third segment frees the first two, not the one it is in.
    let high_watermark = bases[2] + 1;
    assert_eq!(log.enforce_retention(T0, high_watermark).unwrap(), 2);
    assert_eq!(log.log_start_offset(), bases[2]);
    assert_eq!(
        log.enforce_retention(T0, log.log_end_offset()).unwrap(),
        bases.len() - 3
    );
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn retention_by_bytes_keeps_at_least_retention_bytes() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..20 {
        append(&mut log, 1, 200, T0);
    }
    let sizes: Vec<u64> = log.segments().iter().map(|s| s.size()).collect();
    let total: u64 = sizes.iter().sum();
    // Deleting the second segment too would drop below retention_bytes.
    let keep = total - sizes[0] - sizes[1] + 1;
    log.set_config(LogConfig {
        retention_bytes: keep as i64,
        ..small_segments()
    });
    assert_eq!(log.enforce_retention(T0, i64::MAX).unwrap(), 1);
    log.set_config(LogConfig {
        retention_bytes: keep as i64 - 1,
        ..small_segments()
    });
    assert_eq!(log.enforce_retention(T0, i64::MAX).unwrap(), 1);
    assert_eq!(log.size_bytes(), keep - 1);
    assert_eq!(log.log_start_offset(), log.segments()[0].base_offset());
    log.set_config(LogConfig {
        retention_bytes: 0,
        ..small_segments()
    });
    log.enforce_retention(T0, i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    let end = log.log_end_offset();
    append(&mut log, 1, 1, T0);
    assert_eq!(log.log_end_offset(), end + 1);
    // Retention survives a reopen.
    let start = log.log_start_offset();
    drop(log);
    let log = open(tmp.path(), small_segments());
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn reopen_after_drop_recovers_everything() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for i in 0..50 {
        append(&mut log, 1 + i % 3, 50, T0 + i as i64);
    }
    let before = read_all(&log);
    let end = log.log_end_offset();
    let segs = log.segment_count();
    drop(log);
    let mut log = open(tmp.path(), small_segments());
    assert_eq!(read_all(&log), before);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.segment_count(), segs);
    assert_eq!(append(&mut log, 1, 1, T0).base_offset, end);
    // A clean close writes the recovery point; the next open trusts it.
    log.close().unwrap();
    let cp = fs::read_to_string(tmp.path().join("recovery-point")).unwrap();
    assert_eq!(cp.trim().parse::<i64>().unwrap(), end + 1);
    let log = open(tmp.path(), small_segments());
    assert_eq!(log.log_end_offset(), end + 1);
    assert_eq!(read_all(&log).len(), before.len() + 1);
}

/// Writes 5 single-record batches into one segment and returns
/// (dir, active log file, size of each batch).
fn five_batches() -> (TempDir, std::path::PathBuf, u64) {
    let tmp = TempDir::new().unwrap();
    let mut log = open(
        tmp.path(),
        LogConfig {
            index_interval_bytes: 1,
            ..LogConfig::default()
        },
    );
    for _ in 0..5 {
        append(&mut log, 1, 100, T0);
    }
    let size = batch_of(1, 100, T0).len() as u64;
    assert_eq!(log.size_bytes(), 5 * size);
    drop(log);
    let path = seg_file(tmp.path(), 0, "log");
    (tmp, path, size)
}

fn assert_recovered(dir: &Path, batches: i64, size: u64) {
    let mut log = open(dir, LogConfig::default());
    assert_eq!(log.log_end_offset(), batches);
    assert_eq!(log.size_bytes(), batches as u64 * size);
    assert_eq!(read_all(&log).len() as i64, batches);
    assert_eq!(
        fs::metadata(seg_file(dir, 0, "log")).unwrap().len(),
        batches as u64 * size
    );
    assert_eq!(append(&mut log, 2, 1, T0).base_offset, batches);
    assert_eq!(read_all(&log).len() as i64, batches + 1);
    drop(log);
    let log = open(dir, LogConfig::default());
    assert_eq!(log.log_end_offset(), batches + 2);
}

#[test]
fn recovery_truncates_appended_garbage() {
    let (tmp, path, size) = five_batches();
    let mut data = fs::read(&path).unwrap();
    data.extend_from_slice(&[0xAB; 77]);
    fs::write(&path, &data).unwrap();
    assert_recovered(tmp.path(), 5, size);
}

#[test]
fn recovery_truncates_half_written_batch() {
    for cut in [1, 12, 30, 61, 100] {
        let (tmp, path, size) = five_batches();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(4 * size + cut).unwrap();
        drop(f);
        assert_recovered(tmp.path(), 4, size);
    }
}

#[test]
fn recovery_truncates_batch_with_flipped_byte() {
    let (tmp, path, size) = five_batches();
    let mut data = fs::read(&path).unwrap();
    let i = (4 * size + 70) as usize;
    data[i] ^= 0x10;
    fs::write(&path, &data).unwrap();
    assert_recovered(tmp.path(), 4, size);
}

#[test]
fn recovery_drops_segments_after_a_torn_one() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..12 {
        append(&mut log, 1, 200, T0);
    }
    let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset()).collect();
    assert!(bases.len() >= 3);
    drop(log);
    // Corrupt the last batch of the second segment.
    let path = seg_file(tmp.path(), bases[1], "log");
    let mut data = fs::read(&path).unwrap();
    let n = data.len();
    data[n - 5] ^= 1;
    fs::write(&path, &data).unwrap();
    let log = open(tmp.path(), small_segments());
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.log_end_offset(), bases[2] - 1);
    assert!(!seg_file(tmp.path(), bases[2], "log").exists());
    assert!(!seg_file(tmp.path(), bases[2], "index").exists());
}

#[test]
fn corrupted_or_missing_index_is_rebuilt() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..30 {
        append(&mut log, 2, 40, T0);
    }
    log.flush().unwrap();
    let expected = read_all(&log);
    let entries = log.segments()[0].index_len();
    assert!(entries > 0);
    drop(log);
    let index = seg_file(tmp.path(), 0, "index");
    let good = fs::read(&index).unwrap();
    let check = |what: &str| {
        let log = open(tmp.path(), small_segments());
        assert_eq!(read_all(&log), expected, "{what}");
        for offset in 0..log.log_end_offset() {
            let r = log.read(offset, 1, i64::MAX, true).unwrap();
            let b = &validate_batches(&r.records).unwrap()[0];
            assert!(
                b.base_offset <= offset && offset <= b.last_offset(),
                "{what}"
            );
        }
        assert_eq!(log.segments()[0].index_len(), entries, "{what}");
        assert_eq!(fs::read(&index).unwrap(), good, "{what}");
    };
    fs::remove_file(&index).unwrap();
    check("deleted");
    fs::write(&index, &good[..good.len() - 3]).unwrap();
    check("odd size");
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&index, &bad).unwrap();
    check("position beyond log");
    if good.len() >= 16 {
        let mut swapped = good.clone();
        swapped.copy_within(0..8, 8);
        fs::write(&index, &swapped).unwrap();
        check("non-increasing");
    }
    let tindex = seg_file(tmp.path(), 0, "timeindex");
    fs::write(&tindex, b"junk").unwrap();
    check("bad time index");
}

#[test]
fn open_handles_strays_unknown_files_and_missing_dirs() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("a/b/topic-0");
    let mut log = open(&dir, LogConfig::default());
    assert!(seg_file(&dir, 0, "log").exists());
    append(&mut log, 1, 1, T0);
    drop(log);
    fs::write(seg_file(&dir, 500, "index"), b"12345678").unwrap();
    fs::write(seg_file(&dir, 500, "timeindex"), b"").unwrap();
    fs::write(dir.join("notes.txt"), b"hello").unwrap();
    fs::write(dir.join("recovery-point.tmp"), b"9").unwrap();
    fs::write(dir.join("recovery-point"), b"garbage").unwrap();
    let log = open(&dir, LogConfig::default());
    assert_eq!(log.log_end_offset(), 1);
    assert!(!seg_file(&dir, 500, "index").exists());
    assert!(!seg_file(&dir, 500, "timeindex").exists());
    assert!(!dir.join("recovery-point.tmp").exists());
    assert!(dir.join("notes.txt").exists());
    // The append at epoch 0 started the leader epoch checkpoint.
    assert!(dir.join("leader-epoch-checkpoint").exists());
    // Empty existing directory.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let log = open(&empty, LogConfig::default());
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (0, 0, 1)
    );
}

#[test]
fn bad_crc_is_rejected_and_nothing_is_written() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), LogConfig::default());
    append(&mut log, 1, 10, T0);
    let mut buf = batch_of(2, 10, T0);
    let mut bad = batch_of(1, 10, T0);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    buf.extend_from_slice(&bad);
    assert!(matches!(
        log.append(&mut buf, 0, T0),
        Err(StorageError::CorruptBatch(_))
    ));
    assert!(matches!(
        log.append(&mut [], 0, T0),
        Err(StorageError::CorruptBatch(_))
    ));
    // recordsCount must match lastOffsetDelta + 1 for producer batches.
    let mut incons = batch_of(3, 1, T0);
    incons[batch::RECORDS_COUNT_OFF..batch::RECORDS_COUNT_OFF + 4]
        .copy_from_slice(&2i32.to_be_bytes());
    let crc = batch::compute_crc(&incons);
    incons[batch::CRC_OFF..batch::CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append(&mut incons, 0, T0),
        Err(StorageError::CorruptBatch(_))
    ));
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn oversize_batch_is_rejected() {
    let tmp = TempDir::new().unwrap();
    let cfg = LogConfig {
        max_message_bytes: 500,
        ..LogConfig::default()
    };
    let mut log = open(tmp.path(), cfg);
    let mut ok = batch_of(1, 300, T0);
    let mut buf = ok.clone();
    buf.extend_from_slice(&batch_of(1, 600, T0));
    let err = log.append(&mut buf, 0, T0).unwrap_err();
    assert!(matches!(err, StorageError::BatchTooLarge { max: 500, size } if size > 600));
    assert_eq!(log.log_end_offset(), 0);
    log.append(&mut ok, 0, T0).unwrap();
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn log_append_time_rewrites_timestamps_with_valid_crc() {
    let tmp = TempDir::new().unwrap();
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = open(tmp.path(), cfg);
    let mut buf = batch_of(3, 10, 5);
    buf.extend_from_slice(&batch_of(1, 10, 5));
    let info = log.append(&mut buf, 3, T0 + 42).unwrap();
    assert_eq!(info.log_append_time, T0 + 42);
    for b in read_all(&log) {
        assert!(b.is_log_append_time());
        assert_eq!((b.max_timestamp, b.base_timestamp), (T0 + 42, T0 + 42));
    }
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((0, T0 + 42)));
}

#[test]
fn timestamp_lookups() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), None);
    // Batch i holds offsets 2i, 2i+1 and has maxTimestamp 100 * i + 1,
    // except batch 7 which is the newest.
    for i in 0..20i64 {
        let ts = if i == 7 { 10_000 } else { 100 * i };
        append(&mut log, 2, 50, ts);
    }
    assert!(log.segment_count() > 2);
    let check = |log: &PartitionLog| {
        assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), Some((0, 1)));
        assert_eq!(log.offset_for_timestamp(1).unwrap(), Some((0, 1)));
        assert_eq!(log.offset_for_timestamp(2).unwrap(), Some((2, 101)));
        assert_eq!(log.offset_for_timestamp(650).unwrap(), Some((14, 10_001)));
        assert_eq!(log.offset_for_timestamp(801).unwrap(), Some((14, 10_001)));
        assert_eq!(log.offset_for_timestamp(1_901).unwrap(), Some((14, 10_001)));
        assert_eq!(
            log.offset_for_timestamp(10_001).unwrap(),
            Some((14, 10_001))
        );
        assert_eq!(log.offset_for_timestamp(10_002).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((14, 10_001)));
    };
    check(&log);
    log.flush().unwrap();
    drop(log);
    // Non-active segments now load their max timestamp from the time index.
    let log = open(tmp.path(), small_segments());
    check(&log);
}

#[test]
fn truncate_to_works_across_segments() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for i in 0..30 {
        append(&mut log, 2, 100, T0 + i);
    }
    log.flush().unwrap();
    let segs = log.segment_count();
    assert!(segs >= 4);
    // Offset 31 is inside the batch [30, 31]: the whole batch goes.
    log.truncate_to(31).unwrap();
    assert_eq!(log.log_end_offset(), 30);
    assert!(log.segment_count() < segs);
    let all = read_all(&log);
    assert_eq!(all.last().unwrap().last_offset(), 29);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((28, T0 + 14 + 1)));
    assert_eq!(log.offset_for_timestamp(T0 + 100).unwrap(), None);
    // Exactly at a segment boundary.
    let boundary = log.segments()[1].base_offset();
    log.truncate_to(boundary).unwrap();
    assert_eq!((log.segment_count(), log.log_end_offset()), (1, boundary));
    assert_eq!(append(&mut log, 1, 1, T0).base_offset, boundary);
    log.truncate_to(1000).unwrap();
    assert_eq!(log.log_end_offset(), boundary + 1);
    let after = read_all(&log);
    drop(log);
    let mut log = open(tmp.path(), small_segments());
    assert_eq!(read_all(&log), after);
    let cp = fs::read_to_string(tmp.path().join("recovery-point")).unwrap();
    assert!(cp.trim().parse::<i64>().unwrap() <= boundary);
    // Truncating to the start empties the log.
    log.truncate_to(0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes()
        ),
        (0, 0, 0)
    );
    assert_eq!(append(&mut log, 1, 1, T0).base_offset, 0);
}

#[test]
fn truncate_below_log_start_restarts_the_log() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(
        tmp.path(),
        LogConfig {
            retention_bytes: 0,
            ..small_segments()
        },
    );
    for _ in 0..20 {
        append(&mut log, 1, 200, T0);
    }
    log.enforce_retention(T0, i64::MAX).unwrap();
    let start = log.log_start_offset();
    assert!(start > 2);
    log.truncate_to(2).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (2, 2, 1)
    );
    assert_eq!(append(&mut log, 1, 1, T0).base_offset, 2);
    drop(log);
    let log = open(tmp.path(), small_segments());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 3));
}

#[test]
fn flush_writes_recovery_point() {
    let tmp = TempDir::new().unwrap();
    let cp = tmp.path().join("recovery-point");
    let read_cp = || {
        fs::read_to_string(&cp)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let mut log = open(
        tmp.path(),
        LogConfig {
            flush_messages: 5,
            flush_ms: 1000,
            ..LogConfig::default()
        },
    );
    append(&mut log, 4, 1, T0);
    assert!(!cp.exists());
    append(&mut log, 1, 1, T0);
    assert_eq!(read_cp(), 5);
    append(&mut log, 1, 1, T0);
    log.flush_if_due(T0 + 999).unwrap();
    assert_eq!(read_cp(), 5);
    log.flush_if_due(T0 + 1000).unwrap();
    assert_eq!(read_cp(), 6);
    append(&mut log, 1, 1, T0);
    log.flush().unwrap();
    assert_eq!(read_cp(), 7);
    assert!(!tmp.path().join("recovery-point.tmp").exists());
}

/// A batch as a leader stored it: `n` records from `base`, written in `epoch`.
fn leader_batch(base: i64, epoch: i32, n: usize) -> Vec<u8> {
    let mut b = build_batch_sizes(base, T0, &vec![10; n]);
    batch::set_partition_leader_epoch(&mut b, epoch);
    b
}

/// `(base offset, last offset)` of every batch a read from the log start returns.
fn offsets_of(log: &PartitionLog) -> Vec<(i64, i64)> {
    read_all(log)
        .iter()
        .map(|b| (b.base_offset, b.last_offset()))
        .collect()
}

/// Base offset of the first batch a read at `offset` returns.
fn first_read_at(log: &PartitionLog, offset: i64) -> Option<i64> {
    let r = log.read(offset, 1, i64::MAX, true).unwrap();
    (!r.records.is_empty()).then(|| validate_batches(&r.records).unwrap()[0].base_offset)
}

#[test]
fn follower_append_keeps_offsets() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), LogConfig::default());
    let mut buf = build_batch_sizes(0, T0, &[1, 2, 3]);
    buf.extend_from_slice(&build_batch_sizes(3, T0, &[4]));
    batch::set_partition_leader_epoch(&mut buf, 5);
    let info = log.append_as_follower(&buf).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 3, 4)
    );
    let r = log.read(0, usize::MAX, i64::MAX, true).unwrap();
    assert_eq!(&r.records[..], &buf[..]);
}

#[test]
fn follower_accepts_offset_gaps_compaction_left() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), LogConfig::default());
    log.append_as_follower(&leader_batch(0, 5, 4)).unwrap();
    // The leader's cleaner removed 4..=9 and 12..=19 (whole batches).
    let mut buf = leader_batch(10, 6, 2);
    buf.extend_from_slice(&leader_batch(20, 6, 1));
    let info = log.append_as_follower(&buf).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (10, 20, 3)
    );
    assert_eq!(log.log_end_offset(), 21);
    assert_eq!(offsets_of(&log), vec![(0, 3), (10, 11), (20, 20)]);
    // A read in a gap starts at the next batch, as the leader's does.
    assert_eq!(first_read_at(&log, 4), Some(10));
    assert_eq!(first_read_at(&log, 15), Some(20));
    assert_eq!(first_read_at(&log, 21), None);
    assert_eq!(log.leader_epochs(), vec![(5, 0), (6, 10)]);
    assert_eq!(log.end_offset_for_epoch(5), (5, 10));
    assert_eq!(log.epoch_for_offset(15), Some(6));
    // The log goes on from its end, contiguous or not.
    log.append_as_follower(&leader_batch(21, 6, 1)).unwrap();
    log.append_as_follower(&leader_batch(30, 7, 2)).unwrap();
    assert_eq!(log.log_end_offset(), 32);
    // Truncating into a gap ends the log at the last batch that stays.
    log.truncate_to(25).unwrap();
    assert_eq!(log.log_end_offset(), 22);
    log.truncate_to(15).unwrap();
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(log.leader_epochs(), vec![(5, 0), (6, 10)]);
}

#[test]
fn follower_refuses_offsets_going_backwards() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), LogConfig::default());
    log.append_as_follower(&leader_batch(0, 1, 4)).unwrap();
    let size = log.size_bytes();
    let refused = |log: &mut PartitionLog, buf: &[u8]| match log.append_as_follower(buf) {
        Err(StorageError::OffsetsOutOfOrder {
            position,
            base_offset,
            expected,
        }) => (position, base_offset, expected),
        other => panic!("expected OffsetsOutOfOrder, got {other:?}"),
    };
    // Below the log end, or overlapping it.
    assert_eq!(refused(&mut log, &leader_batch(2, 1, 1)), (0, 2, 4));
    assert_eq!(refused(&mut log, &leader_batch(3, 1, 2)), (0, 3, 4));
    // A later batch overlapping the one before it, or going back.
    let first = leader_batch(10, 1, 3);
    for second in [leader_batch(12, 1, 1), leader_batch(8, 1, 1)] {
        let mut buf = first.clone();
        buf.extend_from_slice(&second);
        let base = i64::from_be_bytes(second[..8].try_into().unwrap());
        assert_eq!(refused(&mut log, &buf), (first.len(), base, 13));
    }
    // Nothing of a refused buffer is written.
    assert_eq!((log.log_end_offset(), log.size_bytes()), (4, size));
    assert_eq!(log.leader_epochs(), vec![(1, 0)]);
    let err = log.append_as_follower(&leader_batch(1, 1, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "offsets go backwards: the batch at byte 0 starts at offset 1, below the next offset 4"
    );
}

#[test]
fn a_gap_wider_than_a_segment_can_index_rolls_a_segment() {
    let tmp = TempDir::new().unwrap();
    let wide = i64::from(u32::MAX) + 10;
    // An empty log (one empty segment at 0, the log start) keeps its first segment.
    let mut log = open(tmp.path(), LogConfig::default());
    log.append_as_follower(&leader_batch(wide, 1, 2)).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert!(seg_file(tmp.path(), 0, "log").exists() && seg_file(tmp.path(), wide, "log").exists());
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (0, wide + 2)
    );
    // Two batches of one fetch that one segment cannot index both: one segment each.
    let far = wide + 2 + 2 * wide;
    let mut buf = leader_batch(wide + 5, 1, 1);
    buf.extend_from_slice(&leader_batch(far, 2, 3));
    let info = log.append_as_follower(&buf).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (wide + 5, far + 2, 4)
    );
    assert_eq!(log.segment_count(), 3);
    assert!(seg_file(tmp.path(), far, "log").exists());
    // An empty active segment that is not the first is replaced, not left behind.
    log.roll().unwrap();
    assert_eq!(log.segment_count(), 4);
    let farther = far + 3 + wide;
    log.append_as_follower(&leader_batch(farther, 2, 1))
        .unwrap();
    assert_eq!(log.segment_count(), 4);
    assert!(!seg_file(tmp.path(), far + 3, "log").exists());
    let expected = vec![
        (wide, wide + 1),
        (wide + 5, wide + 5),
        (far, far + 2),
        (farther, farther),
    ];
    assert_eq!(offsets_of(&log), expected);
    assert_eq!(first_read_at(&log, 1), Some(wide));
    assert_eq!(first_read_at(&log, wide + 6), Some(far));
    assert_eq!(log.leader_epochs(), vec![(1, wide), (2, far)]);
    // Every batch is indexed in its segment: a rescan on open (no recovery point) keeps all.
    drop(log);
    fs::remove_file(tmp.path().join("recovery-point")).ok();
    let log = open(tmp.path(), LogConfig::default());
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (0, farther + 1, 4)
    );
    assert_eq!(offsets_of(&log), expected);
}

#[test]
fn a_log_with_gaps_recovers_as_it_is() {
    let tmp = TempDir::new().unwrap();
    let config = LogConfig {
        segment_bytes: 250,
        ..LogConfig::default()
    };
    let mut log = open(tmp.path(), config.clone());
    for (base, n) in [(0, 4), (10, 2), (40, 1), (41, 3), (100, 2), (300, 1)] {
        log.append_as_follower(&leader_batch(base, 3, n)).unwrap();
    }
    let expected = offsets_of(&log);
    // Rolled segments start where their first batch does, past the gap before it.
    assert_eq!(log.segment_count(), 3);
    for base in [0, 40, 100] {
        assert!(
            seg_file(tmp.path(), base, "log").exists(),
            "no segment {base}"
        );
    }
    log.flush().unwrap();
    drop(log);
    // Segments below the recovery point are trusted: each only knows the next one's base as
    // its end, yet the log reads the same.
    let mut log = open(tmp.path(), config.clone());
    assert_eq!(log.log_end_offset(), 301);
    assert_eq!(offsets_of(&log), expected);
    assert_eq!(log.leader_epochs(), vec![(3, 0)]);
    // Truncating into a gap, inside the active segment or after the last batch of a trusted
    // one, ends the log at the last batch that stays.
    log.truncate_to(200).unwrap();
    assert_eq!(log.log_end_offset(), 102);
    log.truncate_to(70).unwrap();
    assert_eq!(log.log_end_offset(), 44);
    drop(log);
    // A full rescan takes the gaps for what they are, not for corruption.
    fs::remove_file(tmp.path().join("recovery-point")).unwrap();
    let log = open(tmp.path(), config);
    assert_eq!(log.log_end_offset(), 44);
    assert_eq!(offsets_of(&log), vec![(0, 3), (10, 11), (40, 40), (41, 43)]);
}

#[test]
fn delete_removes_directory() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("t-0");
    let mut log = open(&dir, LogConfig::default());
    append(&mut log, 1, 1, T0);
    log.delete().unwrap();
    assert!(!dir.exists());
}

#[test]
fn realistic_records_with_keys_and_headers_round_trip() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), LogConfig::default());
    let mut b = build_batch_with(&BatchSpec {
        producer_id: 12,
        producer_epoch: 1,
        base_sequence: 0,
        base_timestamp: T0,
        records: vec![TestRecord {
            key: Some(b"key".to_vec()),
            value: Some(b"value".to_vec()),
            timestamp_delta: 0,
            headers: vec![("h".into(), Some(b"v".to_vec()))],
        }],
        ..BatchSpec::default()
    });
    log.append(&mut b, 0, T0).unwrap();
    let info = &read_all(&log)[0];
    assert_eq!(
        (info.producer_id, info.producer_epoch, info.base_sequence),
        (12, 1, 0)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random appends into small segments with a dense sparse index: every
    /// offset reads back its own batch, and a reopen reads the same.
    #[test]
    fn every_offset_readable_and_stable_across_reopen(
        appends in prop::collection::vec(prop::collection::vec((1usize..5, 0usize..120), 1..4), 1..40),
        interval in 0u32..300,
        segment_bytes in 200u64..3000,
        flush_after in 0usize..40,
    ) {
        let tmp = TempDir::new().unwrap();
        let cfg = LogConfig { segment_bytes, index_interval_bytes: interval, ..LogConfig::default() };
        let mut log = open(tmp.path(), cfg.clone());
        for (i, batches) in appends.iter().enumerate() {
            // A recovery point makes reopen trust (not rescan) older segments.
            if i == flush_after {
                log.flush().unwrap();
            }
            let mut buf = Vec::new();
            for &(n, size) in batches {
                buf.extend_from_slice(&batch_of(n, size, T0 + i as i64));
            }
            log.append(&mut buf, 0, T0).unwrap();
        }
        let end = log.log_end_offset();
        let reads = |log: &PartitionLog| -> Vec<bytes::Bytes> {
            (0..end).map(|o| log.read(o, 1, i64::MAX, true).unwrap().records).collect()
        };
        let before = reads(&log);
        for (o, r) in before.iter().enumerate() {
            let b = &validate_batches(r).unwrap()[0];
            prop_assert!(b.base_offset <= o as i64 && o as i64 <= b.last_offset());
        }
        drop(log);
        let log = open(tmp.path(), cfg);
        prop_assert_eq!(log.log_end_offset(), end);
        prop_assert_eq!(reads(&log), before);
    }
}

#[test]
fn truncate_fully_restarts_the_log_past_its_end() {
    let tmp = TempDir::new().unwrap();
    let mut log = open(tmp.path(), small_segments());
    for _ in 0..5 {
        append(&mut log, 1, 200, T0);
    }
    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count(),
            log.latest_epoch()
        ),
        (100, 100, 1, None)
    );
    drop(log);
    let log = open(tmp.path(), small_segments());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
}

/// Gaps between follower batches: mostly none or small, sometimes wider than a segment's
/// 32-bit relative offsets.
fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => Just(0i64),
        4 => 1i64..50,
        1 => Just(i64::from(u32::MAX) + 7),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random follower appends with random gaps into small segments: a read at any offset
    /// (a batch's first or last, or inside a gap) starts with the first batch ending at or
    /// after it, and a reopen (trusting flushed segments or not) reads the same.
    #[test]
    fn follower_appends_with_gaps_read_back_across_reopen(
        appends in prop::collection::vec(prop::collection::vec((gap(), 1usize..4), 1..4), 1..20),
        segment_bytes in 150u64..1500,
        flush_after in 0usize..20,
        rescan in any::<bool>(),
    ) {
        let tmp = TempDir::new().unwrap();
        let cfg = LogConfig { segment_bytes, index_interval_bytes: 64, ..LogConfig::default() };
        let mut log = open(tmp.path(), cfg.clone());
        let mut expected = Vec::new();
        let mut next = 0i64;
        for (i, batches) in appends.iter().enumerate() {
            if i == flush_after {
                log.flush().unwrap();
            }
            let mut buf = Vec::new();
            for &(gap, n) in batches {
                let base = next + gap;
                buf.extend_from_slice(&leader_batch(base, i as i32, n));
                expected.push((base, base + n as i64 - 1));
                next = base + n as i64;
            }
            log.append_as_follower(&buf).unwrap();
        }
        prop_assert_eq!(log.log_end_offset(), next);
        let mut probes = vec![0, next];
        for (j, &(base, last)) in expected.iter().enumerate() {
            let prev_end = if j == 0 { 0 } else { expected[j - 1].1 + 1 };
            probes.extend([prev_end, base - 1, base, last]);
        }
        probes.retain(|&o| o >= 0);
        let reads = |log: &PartitionLog| -> Vec<Option<i64>> {
            probes.iter().map(|&o| first_read_at(log, o)).collect()
        };
        let want: Vec<Option<i64>> = probes
            .iter()
            .map(|&o| expected.iter().find(|b| b.1 >= o).map(|b| b.0))
            .collect();
        prop_assert_eq!(reads(&log), want.clone());
        prop_assert_eq!(offsets_of(&log), expected.clone());
        drop(log);
        if rescan {
            fs::remove_file(tmp.path().join("recovery-point")).ok();
        }
        let log = open(tmp.path(), cfg);
        prop_assert_eq!(log.log_end_offset(), next);
        prop_assert_eq!(reads(&log), want);
        prop_assert_eq!(offsets_of(&log), expected);
    }
}
