//! Tests of [`PartitionLog::compact`] with a fake codec over uncompressed test batches.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use tempfile::TempDir;

use crate::batch::testing::{build_batch_with, BatchSpec, TestRecord};
use crate::batch::{self, validate_batches, validate_stored_batches, BatchHeader, HEADER_LEN};
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

/// Codec over uncompressed test batches.
#[derive(Default)]
struct FakeCodec {
    fail_rewrite: bool,
    /// keys() fails on the batch with this base offset.
    fail_keys_at: Option<i64>,
}

impl CompactionCodec for FakeCodec {
    fn keys(&self, batch: &[u8]) -> Result<Vec<RecordKey>, String> {
        if self.fail_keys_at == Some(BatchHeader::new(batch).unwrap().base_offset()) {
            return Err("cannot decode this one".into());
        }
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
    for info in validate_stored_batches(&r.records).unwrap() {
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
    assert_eq!(log.enforce_retention(T0 + DAY, i64::MAX).unwrap(), 0);
    cfg.cleanup_delete = true;
    log.set_config(cfg);
    assert!(log.enforce_retention(T0 + DAY, i64::MAX).unwrap() > 0);
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
        .compact(
            T0,
            hw,
            &FakeCodec {
                fail_rewrite: true,
                ..FakeCodec::default()
            },
        )
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

// ---- plan / execute / install ----

use std::sync::{Arc, Barrier};

use parking_lot::Mutex;

/// One pass through the three steps, with an offset map bound.
fn pass(
    log: &mut PartitionLog,
    now: i64,
    max_keys: usize,
    codec: &FakeCodec,
) -> crate::CompactionStats {
    let hw = log.log_end_offset();
    match log.compaction_plan(now, hw, max_keys).unwrap() {
        Some(plan) => {
            let cleaned = plan.execute(codec).unwrap();
            log.install(cleaned).unwrap()
        }
        None => crate::CompactionStats::default(),
    }
}

fn cleaned_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect()
}

/// Codec that stops in its first keys() call until the test lets it go.
struct GatedCodec {
    inner: FakeCodec,
    barrier: Barrier,
    first: std::sync::atomic::AtomicBool,
}

impl CompactionCodec for GatedCodec {
    fn keys(&self, batch: &[u8]) -> Result<Vec<RecordKey>, String> {
        if !self.first.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.barrier.wait(); // the pass is under way
            self.barrier.wait(); // the test appended and read meanwhile
        }
        self.inner.keys(batch)
    }
    fn rewrite(&self, batch: &[u8], keep: &[i64]) -> Result<Vec<u8>, String> {
        self.inner.rewrite(batch, keep)
    }
}

#[test]
fn appends_and_reads_proceed_while_a_pass_executes() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..30 {
        put(
            &mut log,
            &[(Some(["a", "b", "c"][i % 3]), Some(&format!("v{i}")))],
            T0,
        );
    }
    let log = Arc::new(Mutex::new(log));
    let plan = {
        let mut l = log.lock();
        let hw = l.log_end_offset();
        l.compaction_plan(T0, hw, usize::MAX)
            .unwrap()
            .expect("a pass is due")
    };
    // A second pass cannot start while this one is under way.
    {
        let mut l = log.lock();
        let hw = l.log_end_offset();
        assert!(l.compaction_plan(T0, hw, usize::MAX).unwrap().is_none());
    }
    let codec = Arc::new(GatedCodec {
        inner: FakeCodec::default(),
        barrier: Barrier::new(2),
        first: Default::default(),
    });
    let worker = {
        let codec = codec.clone();
        std::thread::spawn(move || plan.execute(&*codec).unwrap())
    };
    codec.barrier.wait();
    // The pass is inside execute(): the log is free for appends, reads, flushes, retention.
    let appended = {
        let mut l = log.lock();
        let mut offsets = Vec::new();
        for i in 0..20 {
            offsets.push(put(&mut l, &[(Some("a"), Some(&format!("new{i}")))], T0));
        }
        l.read(0, usize::MAX, i64::MAX, true).unwrap();
        l.flush().unwrap();
        l.enforce_retention(T0, i64::MAX).unwrap();
        offsets
    };
    codec.barrier.wait();
    let cleaned = worker.join().unwrap();
    let mut l = log.lock();
    let stats = l.install(cleaned).unwrap();
    assert!(
        stats.cleaned && !stats.discarded && stats.records_removed > 0,
        "{stats:?}"
    );
    let c = contents(&l);
    for (i, o) in appended.iter().enumerate() {
        assert_eq!(c.get(o), Some(&(s("a"), Some(format!("new{i}")))));
    }
    assert!(cleaned_files(tmp.path()).is_empty());
    // The flag is released: the next pass may run.
    let hw = l.log_end_offset();
    assert!(l.compaction_plan(T0, hw, usize::MAX).unwrap().is_some());
}

#[test]
fn truncation_during_a_pass_discards_its_result() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..30 {
        put(
            &mut log,
            &[(Some(["a", "b"][i % 2]), Some(&format!("v{i}")))],
            T0,
        );
    }
    let hw = log.log_end_offset();
    let plan = log.compaction_plan(T0, hw, usize::MAX).unwrap().unwrap();
    let cleaned = plan.execute(&FakeCodec::default()).unwrap();
    assert!(!cleaned_files(tmp.path()).is_empty());
    log.truncate_to(5).unwrap();
    let before = contents(&log);
    let stats = log.install(cleaned).unwrap();
    assert!(stats.discarded && !stats.cleaned, "{stats:?}");
    assert_eq!(contents(&log), before);
    assert!(cleaned_files(tmp.path()).is_empty());
    // Dropping an uninstalled result also removes its files and frees the log for a pass.
    for i in 0..30 {
        put(
            &mut log,
            &[(Some(["a", "b"][i % 2]), Some(&format!("w{i}")))],
            T0,
        );
    }
    let hw = log.log_end_offset();
    let plan = log.compaction_plan(T0, hw, usize::MAX).unwrap().unwrap();
    drop(plan.execute(&FakeCodec::default()).unwrap());
    assert!(cleaned_files(tmp.path()).is_empty());
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned && stats.records_removed > 0, "{stats:?}");
}

#[test]
fn retention_during_a_pass_skips_the_deleted_segments() {
    let tmp = TempDir::new().unwrap();
    let cfg = LogConfig {
        cleanup_delete: true,
        ..config()
    };
    let mut log = PartitionLog::open(tmp.path(), cfg.clone(), T0).unwrap();
    for i in 0..40 {
        put(
            &mut log,
            &[(Some(["a", "b", "c"][i % 3]), Some(&format!("v{i}")))],
            T0,
        );
    }
    let hw = log.log_end_offset();
    let plan = log.compaction_plan(T0, hw, usize::MAX).unwrap().unwrap();
    let cleaned = plan.execute(&FakeCodec::default()).unwrap();
    // Retention deletes the oldest segments meanwhile.
    log.set_config(LogConfig {
        retention_bytes: (log.size_bytes() / 2) as i64,
        ..cfg
    });
    assert!(log.enforce_retention(T0, i64::MAX).unwrap() > 0);
    let start = log.log_start_offset();
    let before = contents(&log);
    let stats = log.install(cleaned).unwrap();
    assert!(stats.cleaned && !stats.discarded, "{stats:?}");
    assert_eq!(log.log_start_offset(), start);
    let after = contents(&log);
    for (o, r) in &after {
        assert_eq!(before.get(o), Some(r));
    }
    for key in ["a", "b", "c"] {
        let latest = before.iter().rev().find(|(_, r)| r.0 == s(key)).unwrap();
        assert_eq!(after.get(latest.0), Some(latest.1));
    }
    assert!(cleaned_files(tmp.path()).is_empty());
    drop(log);
    let log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    assert_eq!(contents(&log), after);
}

/// Appends one batch of an idempotent producer.
fn put_idempotent(log: &mut PartitionLog, pid: i64, seq: i32, records: &[(&str, &str)]) -> i64 {
    let mut b = build_batch_with(&BatchSpec {
        base_timestamp: T0,
        producer_id: pid,
        producer_epoch: 2,
        base_sequence: seq,
        records: records.iter().map(|(k, v)| rec(Some(k), Some(v))).collect(),
        ..BatchSpec::default()
    });
    log.append(&mut b, 0, T0).unwrap().base_offset
}

/// Every batch header of the log: (base offset, last offset, producer id, base seq, count).
fn batches(log: &PartitionLog) -> Vec<(i64, i64, i64, i32, i32)> {
    let r = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .unwrap();
    validate_stored_batches(&r.records)
        .unwrap()
        .iter()
        .map(|b| {
            (
                b.base_offset,
                b.last_offset(),
                b.producer_id,
                b.base_sequence,
                b.record_count,
            )
        })
        .collect()
}

fn roll(log: &mut PartitionLog) {
    let active = active_base(log);
    while active_base(log) == active {
        put(log, &[(Some("filler"), Some("x"))], T0);
    }
}

#[test]
fn an_idempotent_producers_last_batch_stays_as_an_empty_batch() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    put_idempotent(&mut log, 7, 0, &[("a", "1"), ("b", "1")]);
    let last7 = put_idempotent(&mut log, 7, 2, &[("a", "2"), ("b", "2"), ("c", "2")]);
    put_idempotent(&mut log, 8, 0, &[("d", "1")]);
    put(&mut log, &[(Some("e"), Some("1"))], T0);
    // Everything above is superseded by a non-idempotent writer.
    for k in ["a", "b", "c", "d", "e"] {
        put(&mut log, &[(Some(k), Some("new"))], T0);
    }
    roll(&mut log);
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned && stats.batches_emptied == 2, "{stats:?}");
    let b = batches(&log);
    // Producer 7's last batch: empty, same offsets and sequence; its first batch is gone.
    assert!(b.contains(&(last7, last7 + 2, 7, 2, 0)), "{b:?}");
    assert_eq!(b.iter().filter(|x| x.2 == 7).count(), 1, "{b:?}");
    assert_eq!(
        b.iter().filter(|x| x.2 == 8 && x.4 == 0).count(),
        1,
        "{b:?}"
    );
    // The non-idempotent superseded batch is dropped whole, not emptied.
    assert!(b.iter().all(|x| x.2 >= 0 || x.4 > 0), "{b:?}");
    // Reading at the emptied batch's offsets returns it; the next record follows.
    let r = log.read(last7 + 1, usize::MAX, i64::MAX, false).unwrap();
    let first = &validate_stored_batches(&r.records).unwrap()[0];
    assert_eq!((first.base_offset, first.record_count), (last7, 0));
    assert!(contents(&log)
        .values()
        .all(|r| r.1 == s("new") || r.0 == s("filler")));
    // Recovery scans and accepts the empty batches (no recovery point: everything rescanned).
    let expected = batches(&log);
    drop(log);
    fs::remove_file(tmp.path().join("recovery-point")).ok();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    assert_eq!(batches(&log), expected);
    // A newer batch of producer 7, superseded too: the old empty batch goes, the new one stays.
    let newer7 = put_idempotent(&mut log, 7, 5, &[("a", "3")]);
    put(&mut log, &[(Some("a"), Some("newest"))], T0);
    roll(&mut log);
    let stats = compact(&mut log, T0 + 1);
    assert!(stats.cleaned, "{stats:?}");
    let b = batches(&log);
    let p7: Vec<_> = b.iter().filter(|x| x.2 == 7).collect();
    assert_eq!(p7, vec![&(newer7, newer7, 7, 5, 0)], "{b:?}");
    // A follower copying this log accepts an empty batch.
    let r = log.read(newer7, usize::MAX, i64::MAX, false).unwrap();
    let info = validate_stored_batches(&r.records).unwrap()[0].clone();
    let mut empty = r.records[..info.size].to_vec();
    batch::set_base_offset(&mut empty, 0);
    let copy = TempDir::new().unwrap();
    let mut follower = PartitionLog::open(copy.path(), config(), T0).unwrap();
    let appended = follower.append_as_follower(&empty).unwrap();
    assert_eq!((appended.last_offset, appended.record_count), (0, 0));
    assert_eq!(follower.log_end_offset(), 1);
}

#[test]
fn a_codec_failure_holds_back_the_checkpoint_and_tombstones() {
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    // V1 of k in a batch the codec cannot decode.
    let bad = put(
        &mut log,
        &[(Some("k"), Some("V1")), (Some("x"), Some("1"))],
        T0,
    );
    roll(&mut log);
    put(&mut log, &[(Some("k"), None)], T0); // the tombstone
    for i in 0..10 {
        put(&mut log, &[(Some("y"), Some(&format!("{i}")))], T0);
    }
    roll(&mut log);
    let codec = FakeCodec {
        fail_keys_at: Some(bad),
        ..FakeCodec::default()
    };
    let stats = pass(&mut log, T0, usize::MAX, &codec);
    assert!(stats.cleaned && stats.records_removed > 0, "{stats:?}");
    assert_eq!(
        stats.cleaned_to, 0,
        "the checkpoint must stay before the failed batch"
    );
    // Long after delete.retention.ms, further passes keep the tombstone: V1 stays hidden.
    for n in 1..4 {
        pass(&mut log, T0 + n * 2 * DAY, usize::MAX, &codec);
        let c = contents(&log);
        let last_k = c.iter().rev().find(|(_, r)| r.0 == s("k")).unwrap();
        assert_eq!(last_k.1 .1, None, "pass {n}: key k came back: {c:?}");
    }
    // Once the batch decodes again the pass completes normally: V1 and later the tombstone go.
    pass(&mut log, T0 + 10 * DAY, usize::MAX, &FakeCodec::default());
    pass(&mut log, T0 + 20 * DAY, usize::MAX, &FakeCodec::default());
    assert!(contents(&log).values().all(|r| r.0 != s("k")));
}

#[test]
fn a_bounded_offset_map_cleans_in_steps_to_the_same_result() {
    let build = |dir: &Path| {
        let mut log = PartitionLog::open(dir, config(), T0).unwrap();
        for i in 0..60 {
            put(
                &mut log,
                &[(Some(&format!("k{}", i % 12)), Some(&format!("v{i}")))],
                T0,
            );
        }
        log
    };
    let full_dir = TempDir::new().unwrap();
    let mut full = build(full_dir.path());
    let expected = {
        compact(&mut full, T0);
        contents(&full)
    };
    let tmp = TempDir::new().unwrap();
    let mut log = build(tmp.path());
    let end = active_base(&log);
    let mut steps = Vec::new();
    for _ in 0..100 {
        let stats = pass(&mut log, T0, 3, &FakeCodec::default());
        if !stats.cleaned {
            break;
        }
        assert!(stats.keys <= 3 + 12, "{stats:?}");
        steps.push(stats.cleaned_to);
    }
    assert!(steps.len() > 1, "{steps:?}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(*steps.last().unwrap(), end);
    // The cleaned range holds each key at most once, every key's latest record survives,
    // and everything kept is original. (Unlike the unbounded pass, the stepped ones did not
    // see the active segment, so the last sealed copies of some keys remain until the next
    // pass over newer data.)
    let got = contents(&log);
    for (o, r) in &expected {
        assert_eq!(got.get(o), Some(r));
    }
    let before = contents(&build(TempDir::new().unwrap().path()));
    for (o, r) in &got {
        assert_eq!(before.get(o), Some(r));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (_, r) in got.range(..end) {
        assert!(
            seen.insert(r.0.clone()),
            "{:?} twice below {end}: {got:?}",
            r.0
        );
    }
}

#[test]
fn unchanged_segments_are_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    for i in 0..20 {
        put(&mut log, &[(Some(&format!("u{i}")), Some("v"))], T0);
    }
    let inodes = |dir: &Path| -> Vec<(String, u64)> {
        names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .map(|n| (n.clone(), fs::metadata(dir.join(&n)).unwrap().ino()))
            .collect()
    };
    let before = inodes(tmp.path());
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned && stats.segments_rewritten == 0, "{stats:?}");
    assert_eq!(inodes(tmp.path()), before);
}

#[test]
fn a_segment_retention_made_first_is_kept_and_holds_the_checkpoint() {
    let tmp = TempDir::new().unwrap();
    let cfg = LogConfig {
        cleanup_delete: true,
        ..config()
    };
    let mut log = PartitionLog::open(tmp.path(), cfg.clone(), T0).unwrap();
    for _ in 0..30 {
        put(&mut log, &[(Some("same"), Some("value-value"))], T0);
    }
    assert!(log.segment_count() > 3);
    let second = log.segments()[1].base_offset();
    let hw = log.log_end_offset();
    let plan = log.compaction_plan(T0, hw, usize::MAX).unwrap().unwrap();
    let cleaned = plan.execute(&FakeCodec::default()).unwrap();
    // Retention deletes exactly the first segment while the pass runs: the second one,
    // which the pass emptied, is now first and must stay.
    let first_size = log.segments()[0].size();
    log.set_config(LogConfig {
        retention_bytes: (log.size_bytes() - first_size) as i64,
        ..cfg
    });
    assert_eq!(log.enforce_retention(T0, i64::MAX).unwrap(), 1);
    let stats = log.install(cleaned).unwrap();
    assert!(stats.cleaned && !stats.discarded, "{stats:?}");
    assert_eq!(log.log_start_offset(), second);
    assert_eq!(log.segments()[0].base_offset(), second);
    assert!(!log.segments()[0].is_empty());
    assert_eq!(stats.cleaned_to, second, "held at the kept segment");
    assert!(contents(&log).contains_key(&29));
    // The next pass cleans it (it stays as the empty first segment).
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned && stats.records_removed > 0, "{stats:?}");
    assert_eq!(log.log_start_offset(), second);
    let active = active_base(&log);
    assert_eq!(contents(&log).range(..active).count(), 0);
    assert!(contents(&log).contains_key(&29));
}

#[test]
fn compaction_leaves_the_leader_epoch_cache_alone() {
    // Cleaning keeps the base offsets and epochs of the batches it keeps, so the epoch
    // cache stays valid even when an epoch's first batch is cleaned away (Kafka too).
    let tmp = TempDir::new().unwrap();
    let mut log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    let put_at = |log: &mut PartitionLog, epoch: i32, key: &str| {
        let mut b = build_batch_with(&BatchSpec {
            base_timestamp: T0,
            records: vec![rec(Some(key), Some("value-value"))],
            ..BatchSpec::default()
        });
        log.append(&mut b, epoch, T0).unwrap();
    };
    put_at(&mut log, 1, "a");
    put_at(&mut log, 1, "b");
    put_at(&mut log, 2, "a");
    put_at(&mut log, 2, "b");
    for i in 0..20 {
        put_at(&mut log, 3, &format!("k{}", i % 3));
    }
    put_at(&mut log, 3, "a");
    put_at(&mut log, 3, "b");
    let before = log.leader_epochs();
    assert_eq!(before, vec![(1, 0), (2, 2), (3, 4)]);
    let stats = compact(&mut log, T0);
    assert!(stats.cleaned_to > 4, "{stats:?}");
    let c = contents(&log);
    assert!((0..4).all(|o| !c.contains_key(&o)), "{c:?}");
    assert_eq!(log.leader_epochs(), before);
    assert_eq!(log.end_offset_for_epoch(1), (1, 2));
    assert_eq!(log.end_offset_for_epoch(2), (2, 4));
    drop(log);
    let log = PartitionLog::open(tmp.path(), config(), T0).unwrap();
    assert_eq!(log.leader_epochs(), before);
}
