//! Tests of [`PartitionLog::compact`] with a fake codec over uncompressed test batches.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use tempfile::TempDir;

use crate::batch::testing::{build_batch_with, BatchSpec, TestRecord};
use crate::batch::{self, validate_batches, BatchHeader, HEADER_LEN};
use crate::compaction::CrashPoint;
use crate::{CompactionCodec, LogConfig, PartitionLog, RecordKey};

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;

fn varint(buf: &[u8], pos: &mut usize) -> i64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return ((v >> 1) as i64) ^ -((v & 1) as i64);
        }
        shift += 7;
    }
}

fn bytes_field(buf: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    let len = varint(buf, pos);
    if len < 0 {
        return None;
    }
    let v = buf[*pos..*pos + len as usize].to_vec();
    *pos += len as usize;
    Some(v)
}

/// One parsed record: (offset, key, value, byte span in the batch).
type Parsed = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    std::ops::Range<usize>,
);

fn parse(batch: &[u8]) -> Vec<Parsed> {
    let h = BatchHeader::new(batch).unwrap();
    let mut pos = HEADER_LEN;
    let mut out = Vec::new();
    for _ in 0..h.records_count() {
        let start = pos;
        let len = varint(batch, &mut pos) as usize;
        let end = pos + len;
        pos += 1;
        varint(batch, &mut pos);
        let delta = varint(batch, &mut pos);
        let key = bytes_field(batch, &mut pos);
        let value = bytes_field(batch, &mut pos);
        out.push((h.base_offset() + delta, key, value, start..end));
        pos = end;
    }
    out
}

/// Codec over uncompressed test batches; counts calls.
#[derive(Default)]
struct FakeCodec {
    fail_rewrite: bool,
}

impl CompactionCodec for FakeCodec {
    fn keys(&self, batch: &[u8]) -> Result<Vec<RecordKey>, String> {
        Ok(parse(batch)
            .into_iter()
            .map(|(offset, key, value, _)| RecordKey {
                offset,
                key: key.map(Bytes::from),
                tombstone: value.is_none(),
            })
            .collect())
    }

    fn rewrite(&self, b: &[u8], keep: &[i64]) -> Result<Vec<u8>, String> {
        if self.fail_rewrite {
            return Err("rewrite disabled".into());
        }
        let mut out = b[..HEADER_LEN].to_vec();
        let mut n = 0i32;
        for (offset, _, _, span) in parse(b) {
            if keep.contains(&offset) {
                out.extend_from_slice(&b[span]);
                n += 1;
            }
        }
        let len = (out.len() - 12) as i32;
        out[batch::LENGTH_OFF..batch::LENGTH_OFF + 4].copy_from_slice(&len.to_be_bytes());
        out[batch::RECORDS_COUNT_OFF..batch::RECORDS_COUNT_OFF + 4]
            .copy_from_slice(&n.to_be_bytes());
        let crc = batch::compute_crc(&out);
        out[batch::CRC_OFF..batch::CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn rec(key: Option<&str>, value: Option<&str>) -> TestRecord {
    TestRecord {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        ..TestRecord::default()
    }
}

/// Appends one batch of `(key, value)` records at timestamp `ts`.
fn put(log: &mut PartitionLog, records: &[(Option<&str>, Option<&str>)], ts: i64) -> i64 {
    let mut b = build_batch_with(&BatchSpec {
        base_timestamp: ts,
        records: records.iter().map(|(k, v)| rec(*k, *v)).collect(),
        ..BatchSpec::default()
    });
    log.append(&mut b, 0, ts).unwrap().base_offset
}

/// Every record of the log: offset → (key, value).
fn contents(log: &PartitionLog) -> BTreeMap<i64, (Option<String>, Option<String>)> {
    let r = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .unwrap();
    let mut out = BTreeMap::new();
    if r.records.is_empty() {
        return out;
    }
    for info in validate_batches(&r.records).unwrap() {
        let b = &r.records[info.position..info.position + info.size];
        for (o, k, v, _) in parse(b) {
            let s = |x: Option<Vec<u8>>| x.map(|x| String::from_utf8(x).unwrap());
            out.insert(o, (s(k), s(v)));
        }
    }
    out
}

fn compact(log: &mut PartitionLog, now: i64) -> crate::CompactionStats {
    let hw = log.log_end_offset();
    log.compact(now, hw, &FakeCodec::default()).unwrap()
}

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

fn active_base(log: &PartitionLog) -> i64 {
    log.segments().last().unwrap().base_offset()
}

#[test]
fn keeps_latest_per_key_null_keys_and_active_segment() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..30 {
        let v = format!("v{i}");
        put(
            &mut log,
            &[(Some(["a", "b", "c"][i % 3]), Some(&v)), (None, Some("n"))],
            T0,
        );
    }
    let before = contents(&log);
    let active = active_base(&log);
    let active_records: Vec<_> = before
        .range(active..)
        .map(|(o, r)| (*o, r.clone()))
        .collect();
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned && stats.records_removed > 0, "{stats:?}");
    assert_eq!(stats.cleaned_to, active);
    let after = contents(&log);
    // Active segment untouched.
    let now_active: Vec<_> = after
        .range(active..)
        .map(|(o, r)| (*o, r.clone()))
        .collect();
    assert_eq!(now_active, active_records);
    // Null keys kept, each at its original offset.
    for (o, r) in &before {
        if r.0.is_none() {
            assert_eq!(after.get(o), Some(r), "null key at {o}");
        }
    }
    // Every key's latest is there; nothing older than it survives anywhere.
    for key in ["a", "b", "c"] {
        let latest = before.iter().rev().find(|(_, r)| r.0 == s(key)).unwrap();
        assert_eq!(after.get(latest.0), Some(latest.1));
        let copies = after.iter().filter(|(_, r)| r.0 == s(key)).count();
        assert_eq!(copies, 1, "key {key}");
    }
    // Every surviving record is unchanged at its offset.
    for (o, r) in &after {
        assert_eq!(before.get(o), Some(r));
    }
    assert_eq!(log.log_start_offset(), 0);
    // Reads at removed offsets return the next retained batch.
    for offset in 0..log.log_end_offset() {
        let r = log.read(offset, 1, i64::MAX, true).unwrap();
        let first = validate_batches(&r.records).unwrap()[0].clone();
        assert!(first.last_offset() >= offset);
        let next = after.range(offset..).next().unwrap().0;
        assert!(first.base_offset <= *next && *next <= first.last_offset());
    }
    // Nothing dirty: the next call does nothing.
    assert!(!compact(&mut log, T0).cleaned);
    // Reopening keeps everything and the checkpoint.
    drop(log);
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    assert_eq!(contents(&log), after);
    assert!(!compact(&mut log, T0).cleaned);
}

#[test]
fn tombstones_go_after_delete_retention() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    put(
        &mut log,
        &[(Some("a"), Some("1")), (Some("b"), Some("1"))],
        T0,
    );
    put(&mut log, &[(Some("a"), None)], T0);
    for i in 0..10 {
        put(&mut log, &[(Some("c"), Some(&format!("{i}")))], T0);
    }
    let tomb = 2;
    compact(&mut log, T0);
    let c = contents(&log);
    assert_eq!(
        c.get(&tomb),
        Some(&(s("a"), None)),
        "tombstone kept at first"
    );
    assert!(!c.contains_key(&0), "a's older value gone");
    // Not yet expired: no pass is due, the tombstone stays.
    assert!(!compact(&mut log, T0 + DAY - 1).cleaned);
    assert!(contents(&log).contains_key(&tomb));
    // After delete.retention.ms a pass runs even without new dirty data.
    let stats = compact(&mut log, T0 + DAY);
    assert!(stats.cleaned && stats.tombstones_removed == 1, "{stats:?}");
    let c = contents(&log);
    assert!(!c.contains_key(&tomb));
    assert!(c.values().all(|r| r.0 != s("a")));
    assert_eq!(c.get(&1), Some(&(s("b"), s("1"))));
    assert!(!compact(&mut log, T0 + 2 * DAY).cleaned);
}

#[test]
fn dirty_ratio_and_compaction_lag_are_respected() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(
        tmp.path(),
        LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 1000,
            ..config()
        },
        T0,
    )
    .unwrap();
    for i in 0..20 {
        put(&mut log, &[(Some("k"), Some(&format!("{i}")))], T0 + i);
    }
    // Everything is younger than the lag: nothing is cleanable.
    assert!(!compact(&mut log, T0 + 500).cleaned);
    let n = contents(&log).len();
    assert_eq!(n, 20);
    // Old enough now: the whole sealed range is dirty (ratio 1) and gets cleaned.
    let stats = compact(&mut log, T0 + 2000);
    assert!(stats.cleaned);
    assert!(contents(&log).len() < n);
    // New records are again protected by the lag.
    let cleaned_to = stats.cleaned_to;
    while active_base(&log) == cleaned_to {
        put(&mut log, &[(Some("k"), Some("x"))], T0 + 5000);
    }
    for _ in 0..10 {
        put(&mut log, &[(Some("k"), Some("x"))], T0 + 5000);
    }
    let xs = |log: &PartitionLog| contents(log).values().filter(|r| r.1 == s("x")).count();
    let before = xs(&log);
    assert!(before > 2);
    compact(&mut log, T0 + 5500);
    assert_eq!(
        xs(&log),
        before,
        "records younger than the lag were cleaned"
    );
    compact(&mut log, T0 + 7000);
    assert!(xs(&log) < before);
}

#[test]
fn ratio_below_threshold_skips() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..20 {
        put(&mut log, &[(Some(&format!("k{i}")), Some("v"))], T0);
    }
    assert!(compact(&mut log, T0).cleaned); // unique keys: nothing removed
    assert_eq!(contents(&log).len(), 20);
    let active = active_base(&log);
    while active_base(&log) == active {
        put(&mut log, &[(Some("k0"), Some("w"))], T0);
    }
    // One small dirty segment against many clean ones.
    let mut cfg = log.config().clone();
    cfg.min_cleanable_dirty_ratio = 0.9;
    log.set_config(cfg.clone());
    assert!(!compact(&mut log, T0).cleaned);
    cfg.min_cleanable_dirty_ratio = 0.01;
    log.set_config(cfg);
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned && stats.records_removed >= 1);
}

#[test]
fn policy_without_compact_does_nothing_and_retention_needs_delete() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(
        tmp.path(),
        LogConfig {
            cleanup_compact: false,
            ..config()
        },
        T0,
    )
    .unwrap();
    for _ in 0..10 {
        put(&mut log, &[(Some("k"), Some("v"))], T0);
    }
    assert!(!compact(&mut log, T0).cleaned);
    // Compact-only: retention.ms does not delete.
    let mut cfg = config();
    cfg.retention_ms = 1;
    log.set_config(cfg.clone());
    assert_eq!(log.enforce_retention(T0 + DAY).unwrap(), 0);
    cfg.cleanup_delete = true;
    log.set_config(cfg);
    assert!(log.enforce_retention(T0 + DAY).unwrap() > 0);
}

#[test]
fn failed_rewrite_keeps_the_batch() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..10 {
        put(
            &mut log,
            &[
                (Some("a"), Some(&format!("{i}"))),
                (Some(&format!("u{i}")), Some("x")),
            ],
            T0,
        );
    }
    let before = contents(&log);
    let hw = log.log_end_offset();
    let stats = log
        .compact(T0, hw, &FakeCodec { fail_rewrite: true })
        .unwrap();
    assert_eq!(stats.records_removed, 0);
    assert_eq!(contents(&log), before);
}

#[test]
fn records_above_max_offset_are_not_used() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..10 {
        put(&mut log, &[(Some("a"), Some(&format!("{i}")))], T0);
    }
    // A high watermark of 3: only records 0..3 count; 0 and 1 are superseded by 2.
    let stats = log.compact(T0, 3, &FakeCodec::default()).unwrap();
    let c = contents(&log);
    assert!(stats.cleaned_to <= 3);
    assert!((2..10).all(|o| c.contains_key(&o)), "{c:?}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn crash_at_every_swap_step_recovers_old_or_new() {
    for point in [
        CrashPoint::MidWrite,
        CrashPoint::BeforeSwap,
        CrashPoint::AfterSwap,
        CrashPoint::AfterIndexDelete,
        CrashPoint::AfterRename,
        CrashPoint::BeforeCheckpoint,
    ] {
        let tmp = TempDir::new().unwrap();
        let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
        for i in 0..40 {
            let v = format!("v{i}");
            put(
                &mut log,
                &[(Some(["a", "b", "c", "d"][i % 4]), Some(&v))],
                T0,
            );
        }
        log.flush().unwrap();
        let before = contents(&log);
        // The expected result of a complete pass.
        let expected = {
            let copy = TempDir::new().unwrap();
            for n in names(tmp.path()) {
                fs::copy(tmp.path().join(&n), copy.path().join(&n)).unwrap();
            }
            let mut l = PartitionLog::open(copy.path(), config(), T0).unwrap();
            compact(&mut l, T0);
            contents(&l)
        };
        log.crash_at = Some(point);
        let hw = log.log_end_offset();
        assert!(
            log.compact(T0, hw, &FakeCodec::default()).is_err(),
            "{point:?}"
        );
        drop(log);
        let leftovers = names(tmp.path());
        let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
        let got = contents(&log);
        // Every key's latest record survives, every record is an original one.
        for (o, r) in &got {
            assert_eq!(before.get(o), Some(r), "{point:?}");
        }
        for (o, r) in expected.iter() {
            assert_eq!(got.get(o), Some(r), "{point:?}: latest of a key lost");
        }
        let after_open = names(tmp.path());
        assert!(
            after_open
                .iter()
                .all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap")),
            "{point:?}: {leftovers:?} -> {after_open:?}"
        );
        // A later pass finishes the job, and the log reopens cleanly.
        compact(&mut log, T0);
        assert_eq!(contents(&log), expected, "{point:?}");
        drop(log);
        let log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
        assert_eq!(contents(&log), expected, "{point:?}");
    }
}

#[test]
fn emptied_segments_are_deleted_but_log_start_stays() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for _ in 0..30 {
        put(&mut log, &[(Some("same"), Some("value-value"))], T0);
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    compact(&mut log, T0);
    assert!(log.segment_count() < segments);
    assert_eq!(log.log_start_offset(), 0);
    let r = log.read(0, usize::MAX, i64::MAX, true).unwrap();
    assert!(!r.records.is_empty());
    drop(log);
    let log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 30);
}

#[test]
fn truncation_lowers_the_cleaner_checkpoint() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..20 {
        put(&mut log, &[(Some(&format!("k{}", i % 5)), Some("v"))], T0);
    }
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned_to > 2);
    log.truncate_to(2).unwrap();
    assert_eq!(log.cleaner.cleaned_to, 2);
    drop(log);
    let log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    assert_eq!(log.cleaner.cleaned_to, 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// After compaction the sealed part holds exactly the latest record of each key (null
    /// keys all kept), the active segment is untouched, in offset order, at original offsets.
    #[test]
    fn compaction_keeps_exactly_the_latest_per_key(
        batches in prop::collection::vec(
            prop::collection::vec((prop::option::weighted(0.9, 0u8..6), any::<u16>()), 1..5),
            1..40,
        ),
    ) {
        let tmp = TempDir::new().unwrap();
        let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
        let mut all = BTreeMap::new();
        for b in &batches {
            let recs: Vec<(Option<String>, String)> = b
                .iter()
                .map(|(k, v)| (k.map(|k| format!("k{k}")), format!("v{v}")))
                .collect();
            let refs: Vec<(Option<&str>, Option<&str>)> = recs
                .iter()
                .map(|(k, v)| (k.as_deref(), Some(v.as_str())))
                .collect();
            let base = put(&mut log, &refs, T0);
            for (i, (k, v)) in recs.iter().enumerate() {
                all.insert(base + i as i64, (k.clone(), Some(v.clone())));
            }
        }
        let active = active_base(&log);
        compact(&mut log, T0);
        let got = contents(&log);
        let mut latest: BTreeMap<String, i64> = BTreeMap::new();
        for (o, (k, _)) in &all {
            if let Some(k) = k {
                latest.insert(k.clone(), *o);
            }
        }
        let expected: BTreeMap<i64, _> = all
            .iter()
            .filter(|(o, (k, _))| {
                **o >= active || k.as_ref().is_none_or(|k| latest[k] == **o)
            })
            .map(|(o, r)| (*o, r.clone()))
            .collect();
        prop_assert_eq!(&got, &expected);
        drop(log);
        let log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
        prop_assert_eq!(contents(&log), expected);
    }
}
