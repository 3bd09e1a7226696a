//! Log compaction (`cleanup.policy=compact`): Kafka's log cleaner, simplified.
//!
//! The storage layer still never decodes records itself: the owner passes a
//! [`CompactionCodec`] that lists the keys of a batch and rewrites a batch
//! keeping only some of its records (the broker builds one on the
//! `kafka-protocol` decoder, which handles every compression codec).
//!
//! # What a cleaning pass does
//!
//! * Only sealed segments are cleaned; the active segment is never touched.
//! * The log is split at the *cleaner checkpoint* (`cleaner-offset-checkpoint`,
//!   a segment boundary): below it is the *clean* part (already compacted,
//!   at most one record per key), from it on the *dirty* part. The pass cleans
//!   sealed segments up to the *cleanable end*: the first segment that holds an
//!   offset at or above `max_offset` (the high watermark) or, with
//!   `min.compaction.lag.ms`, a record newer than `now - lag`.
//! * A pass runs when `dirty bytes / cleanable bytes >= min.cleanable.dirty.ratio`,
//!   or when a tombstone's `delete.retention.ms` has run out.
//! * An offset map `hash(key) → latest offset` is built over everything from the
//!   first dirty segment up to `max_offset` (the active segment included, so an
//!   older copy is dropped even if the newest one is still in the active segment).
//!   It stores a 128-bit hash of each key, not the key (as Kafka stores an MD5), and
//!   holds at most `max_map_keys` entries ([`DEFAULT_MAX_MAP_KEYS`], Kafka's default
//!   128 MiB dedupe buffer): when it fills, mapping stops at that segment and the pass
//!   cleans only the segments before it (at least the first dirty segment is always
//!   mapped whole); the next pass continues from there. A hash collision between two
//!   keys would drop the latest record of the older one; Kafka accepts that risk too.
//! * Every record of the cleanable range is retained iff it is the latest of its
//!   key (or its key is not in the map: it lies in the clean part and nothing
//!   newer exists), or its key is null. A tombstone (null value) that is the
//!   latest of its key is retained until `delete.retention.ms` after the pass
//!   that first cleaned it; it is removed only by a later pass, so the older
//!   records of its key are gone (an earlier completed pass removed them) before
//!   the tombstone goes and a key can never come back.
//! * Codec failures: a batch whose keys cannot be listed, or whose rewrite fails,
//!   is kept whole. Its records may include an old value of a key whose tombstone
//!   is newer, so after such a batch the pass removes no tombstone, and the
//!   checkpoint is not advanced past (is lowered to) the segment holding it; the
//!   tombstones after it therefore never expire while the batch is there.
//! * Control batches are kept as they are.
//! * Idempotent producers: for every producer id >= 0 the batch holding its last
//!   data below `max_offset` is never dropped whole. If all its records go, it is
//!   kept as an empty batch (header only, `recordsCount` 0, original base offset,
//!   lastOffsetDelta, producer id/epoch and base sequence, no compression; see
//!   [`batch::empty_batch_like`]) so the producer's sequence and offset survive a
//!   rebuild of producer state from the log, as Kafka does. An empty batch that is
//!   no longer its producer's last is dropped by a later pass. Readers accept empty
//!   batches ([`batch::validate_stored_batches`]); produce input never has them.
//! * Batch granularity: a batch whose records are all retained is copied
//!   byte for byte, one with none retained is dropped (or emptied, above),
//!   anything in between is re-encoded by [`CompactionCodec::rewrite`], which keeps
//!   the original base offset and last offset delta, so offsets never change.
//!
//! # Locking: plan, execute, install
//!
//! A pass is split so the owner's lock is held only briefly:
//! [`PartitionLog::compaction_plan`] (under the lock, no file read) decides whether a
//! pass is due and snapshots the segments: a duplicate of each `.log` descriptor and
//! its size. Sealed segments never change in place and the active one only grows, so
//! [`CompactionPlan::execute`] (no lock) can read the snapshot while appends, reads,
//! flushes and retention go on: it builds the offset map and writes the changed
//! segments' cleaned copies. Segments that do not change are not written (the
//! `.cleaned` file is created at the first batch that changes). [`PartitionLog::install`]
//! (under the lock, renames only) first checks that the log was not truncated and that
//! every segment to replace is still there with the size the pass saw (one retention
//! deleted meanwhile is skipped); otherwise it discards the result (the next pass
//! starts over). One pass per log at a time: a second plan returns `None`.
//!
//! # Crash safety
//!
//! Each changed segment is written to `<base>.log.cleaned` and fsynced, scanned
//! (every CRC checked) to build `<base>.index.cleaned` and `<base>.timeindex.cleaned`,
//! which are fsynced too. Installing renames the log to `<base>.log.swap` (the commit
//! point), deletes the old index files, renames the new ones into place and renames the
//! swap file over `<base>.log`. [`crate::PartitionLog::open`] deletes `*.cleaned` files
//! and finishes any `.swap` (deleting whatever indexes exist, which are then rebuilt),
//! so a crash leaves each segment either old or new. Any mix of old and new segments is
//! a valid log: a record is only dropped when a newer record of its key exists (which is
//! itself either kept or dropped for a still newer one), and tombstones only go after a
//! completed earlier pass. The checkpoint is written after every swap of the pass is
//! done. A segment whose records are all removed is deleted, except the first one,
//! which stays (empty) so the log start offset does not move.

use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, CONTROL_BIT, HEADER_LEN};
use crate::error::{IoContext, StorageError};
use crate::log::{sync_dir, PartitionLog};
use crate::segment::{
    cleaned_path, segment_path, HeaderSummary, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};

pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
pub(crate) const CLEANER_CHECKPOINT_TMP: &str = "cleaner-offset-checkpoint.tmp";
/// Suffixes (after the base offset) of a cleaned segment and its indexes being written.
pub(crate) const CLEANED_SUFFIX: &str = "log.cleaned";
pub(crate) const CLEANED_INDEX_SUFFIX: &str = "index.cleaned";
pub(crate) const CLEANED_TIME_INDEX_SUFFIX: &str = "timeindex.cleaned";
/// Suffix of a cleaned segment that is complete and replaces its original.
pub(crate) const SWAP_SUFFIX: &str = "log.swap";
/// At most this many "first cleaned at" intervals are kept; older ones merge.
const MAX_INTERVALS: usize = 32;
const CHECKPOINT_VERSION: &str = "1";

/// One record of a batch as the cleaner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordKey {
    /// Absolute offset of the record.
    pub offset: i64,
    /// The record key; `None` for a null key.
    pub key: Option<Bytes>,
    /// The value is null (a delete marker).
    pub tombstone: bool,
}

/// Record-level access the cleaner needs, supplied by the owner of the log
/// (storage does not decode or decompress records).
pub trait CompactionCodec {
    /// The records of one whole batch, in offset order.
    fn keys(&self, batch: &[u8]) -> Result<Vec<RecordKey>, String>;

    /// Re-encodes one whole batch keeping only the records at `keep` (a
    /// non-empty, ascending subset of its offsets), with their original
    /// offsets, timestamps, key, value and headers; the batch keeps its base
    /// offset, last offset delta, producer id/epoch, base sequence,
    /// attributes and codec, and gets a fresh length, record count, max
    /// timestamp and CRC.
    fn rewrite(&self, batch: &[u8], keep: &[i64]) -> Result<Vec<u8>, String>;
}

/// What one cleaning pass ([`PartitionLog::compact`] or [`PartitionLog::install`]) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// A pass ran (the dirty ratio or a tombstone deadline was reached).
    pub cleaned: bool,
    /// Bytes of the cleaned range before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records removed (tombstones included).
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// Batches copied with a subset of their records / dropped whole.
    pub batches_rewritten: u64,
    pub batches_removed: u64,
    /// Batches cut down to an empty header: an idempotent producer's last batch whose
    /// records were all removed.
    pub batches_emptied: u64,
    pub segments_rewritten: usize,
    pub segments_deleted: usize,
    /// Distinct keys in the offset map.
    pub keys: usize,
    /// The new cleaner checkpoint.
    pub cleaned_to: i64,
    /// The pass ran but the log changed under it (truncation, a segment changed or went),
    /// so nothing was swapped in; the next pass starts over.
    pub discarded: bool,
}

/// What the cleaner has done so far, persisted in `cleaner-offset-checkpoint`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CleanerCheckpoint {
    /// Everything below this offset has been through a completed pass.
    pub(crate) cleaned_to: i64,
    /// `(end, ms)`, ascending: records from the previous end up to `end`
    /// (exclusive) were first cleaned at `ms`. Merging keeps the later time,
    /// so tombstones may live longer than asked, never shorter.
    pub(crate) intervals: Vec<(i64, i64)>,
    /// Earliest "first cleaned" time of a tombstone still in the clean part.
    pub(crate) oldest_tombstone_ms: Option<i64>,
}

impl CleanerCheckpoint {
    /// Forgets everything at or above `offset` (the log was truncated there).
    pub(crate) fn truncate(&mut self, offset: i64) {
        let offset = offset.max(0);
        self.cleaned_to = self.cleaned_to.min(offset);
        for iv in &mut self.intervals {
            iv.0 = iv.0.min(offset);
        }
        self.intervals.dedup_by_key(|iv| iv.0);
        self.intervals.retain(|iv| iv.0 > 0);
    }

    fn first_cleaned_ms(&self, offset: i64) -> Option<i64> {
        self.intervals
            .iter()
            .find(|&&(end, _)| offset < end)
            .map(|&(_, ms)| ms)
    }

    fn record_pass(&mut self, cleaned_to: i64, now_ms: i64, log_start: i64) {
        if cleaned_to > self.cleaned_to {
            self.cleaned_to = cleaned_to;
        }
        if !matches!(self.intervals.last(), Some(&(end, _)) if cleaned_to <= end) {
            self.intervals.push((cleaned_to, now_ms));
        }
        // Intervals wholly below the log start describe deleted records.
        while self.intervals.len() > 1 && self.intervals[0].0 <= log_start {
            self.intervals.remove(0);
        }
        while self.intervals.len() > MAX_INTERVALS {
            let (_, first_ms) = self.intervals.remove(0);
            self.intervals[0].1 = self.intervals[0].1.max(first_ms);
        }
    }
}

pub(crate) fn read_cleaner_checkpoint(dir: &Path) -> Result<CleanerCheckpoint, StorageError> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let text = fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
    match parse_checkpoint(&text) {
        Some(c) => Ok(c),
        None => {
            tracing::warn!(file = %path.display(), "unreadable cleaner checkpoint; the whole log counts as dirty");
            Ok(CleanerCheckpoint::default())
        }
    }
}

fn parse_checkpoint(text: &str) -> Option<CleanerCheckpoint> {
    let mut lines = text.lines().map(str::trim);
    if lines.next()? != CHECKPOINT_VERSION {
        return None;
    }
    let cleaned_to: i64 = lines.next()?.parse().ok()?;
    let oldest: i64 = lines.next()?.parse().ok()?;
    let n: usize = lines.next()?.parse().ok()?;
    let mut intervals = Vec::with_capacity(n.min(MAX_INTERVALS));
    for _ in 0..n {
        let (end, ms) = lines.next()?.split_once(' ')?;
        intervals.push((end.parse().ok()?, ms.parse().ok()?));
    }
    let sorted = intervals.windows(2).all(|w: &[(i64, i64)]| w[0].0 < w[1].0);
    (cleaned_to >= 0 && sorted).then_some(CleanerCheckpoint {
        cleaned_to,
        intervals,
        oldest_tombstone_ms: (oldest >= 0).then_some(oldest),
    })
}

/// Writes the checkpoint atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_cleaner_checkpoint(
    dir: &Path,
    c: &CleanerCheckpoint,
) -> Result<(), StorageError> {
    let tmp = dir.join(CLEANER_CHECKPOINT_TMP);
    let dst = dir.join(CLEANER_CHECKPOINT_FILE);
    let mut text = format!(
        "{CHECKPOINT_VERSION}\n{}\n{}\n{}\n",
        c.cleaned_to,
        c.oldest_tombstone_ms.unwrap_or(-1),
        c.intervals.len()
    );
    for (end, ms) in &c.intervals {
        text.push_str(&format!("{end} {ms}\n"));
    }
    {
        let mut f = fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        crate::failpoints::inject(crate::failpoints::CHECKPOINT_WRITE)
            .and_then(|()| f.write_all(text.as_bytes()))
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("fsync of {}", tmp.display()))?;
    }
    fs::rename(&tmp, &dst).ctx(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
    sync_dir(dir)
}

fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("deleting {}", path.display()), e)),
    }
}

/// Completes a committed swap: the old indexes go (they describe the old
/// file), then `<base>.log.swap` replaces `<base>.log`. Idempotent up to the
/// final rename, so open() can call it after a crash at any step.
pub(crate) fn finish_swap(dir: &Path, base: i64) -> Result<(), StorageError> {
    tracing::info!(dir = %dir.display(), base_offset = base, "completing a cleaned segment swap");
    remove_indexes(dir, base)?;
    rename_swap(dir, base)
}

fn remove_indexes(dir: &Path, base: i64) -> Result<(), StorageError> {
    remove_if_present(&segment_path(dir, base, INDEX_SUFFIX))?;
    remove_if_present(&segment_path(dir, base, TIME_INDEX_SUFFIX))
}

fn rename_swap(dir: &Path, base: i64) -> Result<(), StorageError> {
    let swap = segment_path(dir, base, SWAP_SUFFIX);
    let log = segment_path(dir, base, LOG_SUFFIX);
    fs::rename(&swap, &log).ctx(|| format!("renaming {} to {}", swap.display(), log.display()))?;
    sync_dir(dir)
}

/// Steps of a segment swap at which tests simulate a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum CrashPoint {
    /// Half of the `.cleaned` file is written.
    MidWrite,
    /// `.cleaned` complete and fsynced, not yet renamed to `.swap`.
    BeforeSwap,
    /// `.swap` exists next to the old `.log` and its indexes.
    AfterSwap,
    /// The old indexes are deleted, `.swap` not yet renamed.
    AfterIndexDelete,
    /// The new `.log` and its indexes are in place; the checkpoint is not written.
    AfterRename,
    /// Every segment is swapped, the checkpoint is not yet written.
    BeforeCheckpoint,
}

/// 128-bit hash of a record key: the offset map stores this instead of the key (Kafka
/// stores an MD5 of the key), so its memory does not depend on key sizes. Two different
/// keys with the same hash would make the older one's latest record look superseded and be
/// removed; at 128 bits that is vanishingly unlikely for real keys (Kafka accepts the same
/// risk), but the hash (SipHash-2-4 twice, with fixed keys) is not meant to resist keys
/// crafted to collide.
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyHash(u64, u64);

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

fn key_hash(key: &[u8]) -> KeyHash {
    #[allow(deprecated)]
    let mut a = std::hash::SipHasher::new_with_keys(0x736f_6d65_7073_6575, 0x646f_7261_6e64_6f6d);
    #[allow(deprecated)]
    let mut b = std::hash::SipHasher::new_with_keys(0x6c79_6765_6e65_7261, 0x7465_6462_7974_6573);
    a.write(key);
    b.write(key);
    KeyHash(a.finish(), b.finish())
}

/// The [`KeyHash`] is already a hash: the map uses its first half as is.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type KeyMap = HashMap<KeyHash, i64, BuildHasherDefault<PassThrough>>;

/// Default bound of the offset map: 128 MiB of 24-byte entries (a 16-byte key hash and an
/// 8-byte offset), like Kafka's default `log.cleaner.dedupe.buffer.size`.
pub const DEFAULT_MAX_MAP_KEYS: usize = (128 << 20) / 24;

/// The decision for one batch.
enum Decision {
    Keep,
    Drop,
    /// A re-encoded batch holding a subset of the records, or an empty batch (header only)
    /// standing for an idempotent producer's last batch.
    Rewrite(Vec<u8>),
}

/// The records of a batch, checked against its header; `None` when the codec fails or
/// disagrees with the header. An empty batch has no records and needs no codec.
fn keys_of(codec: &dyn CompactionCodec, h: &HeaderSummary, bytes: &[u8]) -> Option<Vec<RecordKey>> {
    let count = BatchHeader::new(bytes).map_or(0, |b| b.records_count());
    if count == 0 {
        return Some(Vec::new());
    }
    match codec.keys(bytes) {
        Ok(keys)
            if keys.len() == count as usize
                && keys.windows(2).all(|w| w[0].offset < w[1].offset)
                && keys
                    .iter()
                    .all(|k| k.offset >= h.base_offset && k.offset <= h.last_offset) =>
        {
            Some(keys)
        }
        Ok(_) => {
            tracing::warn!(
                base_offset = h.base_offset,
                "record offsets do not match the batch header; keeping the batch as is"
            );
            None
        }
        Err(e) => {
            tracing::warn!(base_offset = h.base_offset, error = %e, "cannot decode batch; keeping it as is");
            None
        }
    }
}

/// Everything the filter needs, fixed for the pass.
struct Pass<'a> {
    map: KeyMap,
    /// Producer id → base offset of its last data batch below the high watermark.
    producer_last: HashMap<i64, i64>,
    codec: &'a dyn CompactionCodec,
    now_ms: i64,
    /// Records below this offset went through a completed earlier pass.
    previously_cleaned_to: i64,
    delete_retention_ms: i64,
    checkpoint: CleanerCheckpoint,
    oldest_tombstone_ms: Option<i64>,
    /// A batch was kept whole only because the codec failed on it. From then on no
    /// tombstone is removed in this pass (an older record of its key may be in that batch).
    codec_failed: bool,
}

impl Pass<'_> {
    /// `ms` at which the record at `offset` was first cleaned; records the
    /// current pass cleans for the first time get `now`.
    fn first_cleaned_ms(&self, offset: i64) -> i64 {
        if offset < self.previously_cleaned_to {
            self.checkpoint
                .first_cleaned_ms(offset)
                .unwrap_or(self.now_ms)
        } else {
            self.now_ms
        }
    }

    fn note_tombstone(&mut self, offset: i64) {
        let first = self.first_cleaned_ms(offset);
        self.oldest_tombstone_ms = Some(self.oldest_tombstone_ms.map_or(first, |o| o.min(first)));
    }

    fn decide(&mut self, h: &HeaderSummary, bytes: &[u8], stats: &mut CompactionStats) -> Decision {
        let Some(header) = BatchHeader::new(bytes) else {
            return Decision::Keep;
        };
        if header.attributes() & CONTROL_BIT != 0 {
            return Decision::Keep;
        }
        let producer_id = header.producer_id();
        let producers_last =
            producer_id >= 0 && self.producer_last.get(&producer_id) == Some(&h.base_offset);
        let Some(records) = keys_of(self.codec, h, bytes) else {
            self.codec_failed = true;
            return Decision::Keep;
        };
        if records.is_empty() {
            // An empty batch an earlier pass left: needed only while it is its producer's last.
            if producers_last {
                return Decision::Keep;
            }
            stats.batches_removed += 1;
            return Decision::Drop;
        }
        let mut keep = Vec::with_capacity(records.len());
        let mut tombstones_removed = 0;
        for r in &records {
            let superseded = r.key.as_ref().is_some_and(|k| {
                self.map
                    .get(&key_hash(k))
                    .is_some_and(|&latest| latest > r.offset)
            });
            let retain = if superseded {
                false
            } else if r.tombstone && r.key.is_some() {
                let first = self.first_cleaned_ms(r.offset);
                let expired = !self.codec_failed
                    && r.offset < self.previously_cleaned_to
                    && first.saturating_add(self.delete_retention_ms) <= self.now_ms;
                if expired {
                    tombstones_removed += 1;
                } else {
                    self.note_tombstone(r.offset);
                }
                !expired
            } else {
                true
            };
            if retain {
                keep.push(r.offset);
            }
        }
        let removed = (records.len() - keep.len()) as u64;
        if removed == 0 {
            return Decision::Keep;
        }
        if keep.is_empty() {
            stats.records_removed += removed;
            stats.tombstones_removed += tombstones_removed;
            if producers_last {
                stats.batches_emptied += 1;
                return Decision::Rewrite(batch::empty_batch_like(bytes));
            }
            stats.batches_removed += 1;
            return Decision::Drop;
        }
        match self.codec.rewrite(bytes, &keep) {
            Ok(out) if rewritten_ok(h, &out, keep.len()) => {
                stats.records_removed += removed;
                stats.tombstones_removed += tombstones_removed;
                stats.batches_rewritten += 1;
                Decision::Rewrite(out)
            }
            Ok(_) => {
                tracing::warn!(
                    base_offset = h.base_offset,
                    "rewritten batch is malformed; keeping the original"
                );
                self.keep_whole(&records);
                Decision::Keep
            }
            Err(e) => {
                tracing::warn!(base_offset = h.base_offset, error = %e, "cannot rewrite batch; keeping the original");
                self.keep_whole(&records);
                Decision::Keep
            }
        }
    }

    /// A batch kept whole after all (the rewrite failed) keeps its tombstones: note them.
    fn keep_whole(&mut self, records: &[RecordKey]) {
        self.codec_failed = true;
        for r in records.iter().filter(|r| r.tombstone && r.key.is_some()) {
            self.note_tombstone(r.offset);
        }
    }
}

/// The rewriter must return exactly one valid batch inside the original's
/// offset range holding the requested number of records.
fn rewritten_ok(h: &HeaderSummary, out: &[u8], records: usize) -> bool {
    match batch::validate_batches(out) {
        Ok(infos) if infos.len() == 1 => {
            let b = &infos[0];
            b.base_offset == h.base_offset
                && b.last_offset() <= h.last_offset
                && b.record_count as usize == records
        }
        _ => false,
    }
}

/// A segment as it was when the pass was planned: a duplicate of its `.log` descriptor
/// (which keeps reading the same file whatever later happens to the name) and its size then.
/// Sealed segments never change in place; the active one only grows past `size`.
struct SegmentSnapshot {
    base: i64,
    size: u64,
    file: File,
    path: PathBuf,
}

/// Read size of the full-batch walk and of the header-only walk.
const FULL_CHUNK: u64 = 1 << 20;
const HEADER_CHUNK: u64 = 16 << 10;

impl SegmentSnapshot {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StorageError> {
        self.file.read_exact_at(buf, pos).ctx(|| {
            format!(
                "reading {} bytes of {} at byte {pos}",
                buf.len(),
                self.path.display()
            )
        })
    }

    fn corrupt(&self, pos: u64, what: &str) -> StorageError {
        StorageError::CorruptDataDir(format!(
            "{} changed during a cleaning pass: {what} at byte {pos}",
            self.path.display()
        ))
    }

    /// Makes `buf` (file bytes from `*buf_pos`) cover `need` bytes from `pos`.
    fn fill(
        &self,
        buf: &mut Vec<u8>,
        buf_pos: &mut u64,
        pos: u64,
        need: u64,
        chunk: u64,
    ) -> Result<(), StorageError> {
        if pos >= *buf_pos && pos + need <= *buf_pos + buf.len() as u64 {
            return Ok(());
        }
        let len = need.max(chunk).min(self.size - pos) as usize;
        buf.resize(len, 0);
        self.read_at(buf, pos)?;
        *buf_pos = pos;
        Ok(())
    }

    /// Calls `f` with each batch (the whole batch if `full`, else its header) until it
    /// returns false.
    fn for_each(
        &self,
        full: bool,
        mut f: impl FnMut(&HeaderSummary, &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let chunk = if full { FULL_CHUNK } else { HEADER_CHUNK };
        let mut buf = Vec::new();
        let mut buf_pos = 0;
        let mut pos = 0;
        while pos < self.size {
            if pos + HEADER_LEN as u64 > self.size {
                return Err(self.corrupt(pos, "partial header"));
            }
            self.fill(&mut buf, &mut buf_pos, pos, HEADER_LEN as u64, chunk)?;
            let at = (pos - buf_pos) as usize;
            let h = BatchHeader::new(&buf[at..]).expect("a header was read");
            let s = HeaderSummary::parse(&h, pos)
                .filter(|s| pos + s.size <= self.size)
                .ok_or_else(|| self.corrupt(pos, "bad batch length"))?;
            let len = if full { s.size } else { HEADER_LEN as u64 };
            self.fill(&mut buf, &mut buf_pos, pos, len, chunk)?;
            let at = (pos - buf_pos) as usize;
            if !f(&s, &buf[at..at + len as usize])? {
                return Ok(());
            }
            pos += s.size;
        }
        Ok(())
    }

    /// Copies bytes `0..end` of the segment to `out`.
    fn copy_prefix(&self, out: &mut impl Write, end: u64, path: &Path) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        let mut pos = 0;
        while pos < end {
            let len = (end - pos).min(FULL_CHUNK) as usize;
            buf.resize(len, 0);
            self.read_at(&mut buf, pos)?;
            out.write_all(&buf)
                .ctx(|| format!("writing {}", path.display()))?;
            pos += len as u64;
        }
        Ok(())
    }
}

/// Clears the log's "pass under way" flag when the pass ends, however it ends.
struct PassGuard(Arc<AtomicBool>);

impl Drop for PassGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A cleaning pass decided under the owner's lock by [`PartitionLog::compaction_plan`]
/// (cheap: no file is read). [`CompactionPlan::execute`] then does all the reading,
/// decoding and writing without the log, and [`PartitionLog::install`] swaps the result in
/// under the lock again. At most one pass per log is under way at a time.
pub struct CompactionPlan {
    dir: PathBuf,
    generation: u64,
    /// Every segment from the log start; the last one was active at planning time.
    segments: Vec<SegmentSnapshot>,
    /// First segment of the dirty part.
    dirty_idx: usize,
    /// `segments[..end_idx]` are cleaned (all sealed).
    end_idx: usize,
    max_offset: i64,
    now_ms: i64,
    previously_cleaned_to: i64,
    delete_retention_ms: i64,
    index_interval_bytes: u32,
    checkpoint: CleanerCheckpoint,
    max_map_keys: usize,
    guard: PassGuard,
    #[cfg(test)]
    crash_mid_write: bool,
}

impl std::fmt::Debug for CompactionPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactionPlan")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("dirty_idx", &self.dirty_idx)
            .field("end_idx", &self.end_idx)
            .finish()
    }
}

/// What happened to one segment of the cleaned range.
enum Outcome {
    Unchanged,
    /// Its cleaned copy: `<base>.{log,index,timeindex}.cleaned`, fsynced and indexed.
    Rewritten(Segment),
    /// Every record removed; the segment goes.
    Emptied,
}

struct CleanedSegment {
    base: i64,
    size_before: u64,
    outcome: Outcome,
}

/// The result of [`CompactionPlan::execute`], waiting for [`PartitionLog::install`].
/// Dropping it without installing deletes its `.cleaned` files.
pub struct Cleaned {
    dir: PathBuf,
    generation: u64,
    /// In reverse order (install pops from the end).
    segments: Vec<CleanedSegment>,
    stats: CompactionStats,
    /// The cleaner checkpoint the pass reached.
    cleaned_to: i64,
    /// Base of the first segment where a batch was kept only because the codec failed.
    codec_failed_at: Option<i64>,
    oldest_tombstone_ms: Option<i64>,
    now_ms: i64,
    /// Moved in from the plan when execution completes.
    _guard: Option<PassGuard>,
}

impl std::fmt::Debug for Cleaned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleaned")
            .field("dir", &self.dir)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Drop for Cleaned {
    fn drop(&mut self) {
        for s in self.segments.drain(..) {
            if let Outcome::Rewritten(seg) = s.outcome {
                if let Err(e) = seg.delete_files() {
                    tracing::warn!(error = %e, "cannot delete an unused cleaned segment");
                }
            }
        }
    }
}

fn remove_cleaned_files(dir: &Path, base: i64) {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let _ = remove_if_present(&cleaned_path(dir, base, suffix));
    }
}

impl CompactionPlan {
    /// Builds the offset map and writes the cleaned copies of the segments that change
    /// (`.cleaned` files, fsynced, with their indexes). Works on the snapshot only, so the
    /// log stays usable meanwhile.
    pub fn execute(self, codec: &dyn CompactionCodec) -> Result<Cleaned, StorageError> {
        let mut stats = CompactionStats {
            cleaned: true,
            ..CompactionStats::default()
        };
        // Each producer's last data batch, and the offset map from the first dirty segment
        // up to max_offset (the active segment included), bounded by max_map_keys at a
        // segment boundary (at least the first dirty segment is always mapped).
        let mut producer_last = HashMap::new();
        let mut map = KeyMap::default();
        let mut map_end = None;
        for (i, seg) in self.segments.iter().enumerate() {
            let mapping = i >= self.dirty_idx && map_end.is_none();
            let mut done = false;
            seg.for_each(mapping, |h, bytes| {
                if h.last_offset >= self.max_offset {
                    done = true;
                    return Ok(false);
                }
                let header = BatchHeader::new(bytes).expect("a whole header");
                if header.attributes() & CONTROL_BIT != 0 {
                    return Ok(true);
                }
                if header.producer_id() >= 0 {
                    producer_last.insert(header.producer_id(), h.base_offset);
                }
                if mapping && map_end.is_none() {
                    if map.len() >= self.max_map_keys && i > self.dirty_idx {
                        map_end = Some(i);
                    } else {
                        for r in keys_of(codec, h, bytes).unwrap_or_default() {
                            if let Some(k) = r.key {
                                let e = map.entry(key_hash(&k)).or_insert(r.offset);
                                *e = (*e).max(r.offset);
                            }
                        }
                    }
                }
                Ok(true)
            })?;
            if done {
                break;
            }
        }
        let end_idx = map_end.map_or(self.end_idx, |m: usize| m.min(self.end_idx));
        if end_idx < self.end_idx {
            tracing::info!(dir = %self.dir.display(), keys = map.len(), "offset map full; cleaning up to where it reached");
        }
        stats.keys = map.len();
        let mut pass = Pass {
            map,
            producer_last,
            codec,
            now_ms: self.now_ms,
            previously_cleaned_to: self.previously_cleaned_to,
            delete_retention_ms: self.delete_retention_ms,
            checkpoint: self.checkpoint.clone(),
            oldest_tombstone_ms: None,
            codec_failed: false,
        };
        let mut cleaned = Cleaned {
            dir: self.dir.clone(),
            generation: self.generation,
            segments: Vec::with_capacity(end_idx),
            stats: CompactionStats::default(),
            cleaned_to: self
                .segments
                .get(end_idx)
                .map_or(self.max_offset, |s| s.base),
            codec_failed_at: None,
            oldest_tombstone_ms: None,
            now_ms: self.now_ms,
            _guard: None,
        };
        for i in 0..end_idx {
            let seg = &self.segments[i];
            stats.bytes_before += seg.size;
            let outcome = match self.clean_segment(i, &mut pass, &mut stats) {
                Ok(o) => o,
                Err(e) => {
                    #[cfg(test)]
                    if self.crash_mid_write {
                        return Err(e);
                    }
                    remove_cleaned_files(&self.dir, seg.base);
                    return Err(e);
                }
            };
            stats.bytes_after += match &outcome {
                Outcome::Unchanged => seg.size,
                Outcome::Rewritten(s) => s.size(),
                Outcome::Emptied => 0,
            };
            if pass.codec_failed && cleaned.codec_failed_at.is_none() {
                tracing::warn!(dir = %self.dir.display(), base_offset = seg.base, "a batch the codec cannot handle was kept whole; the cleaner checkpoint stays before it and no later tombstone is removed");
                cleaned.codec_failed_at = Some(seg.base);
            }
            cleaned.segments.push(CleanedSegment {
                base: seg.base,
                size_before: seg.size,
                outcome,
            });
        }
        cleaned.segments.reverse();
        cleaned.oldest_tombstone_ms = pass.oldest_tombstone_ms;
        cleaned.stats = stats;
        cleaned._guard = Some(self.guard);
        Ok(cleaned)
    }

    /// Filters segment `i`. The `.cleaned` file is only created at the first batch that
    /// changes (the unchanged prefix is then copied), so an unchanged segment costs no write.
    fn clean_segment(
        &self,
        i: usize,
        pass: &mut Pass<'_>,
        stats: &mut CompactionStats,
    ) -> Result<Outcome, StorageError> {
        let seg = &self.segments[i];
        let path = cleaned_path(&self.dir, seg.base, LOG_SUFFIX);
        let mut out: Option<BufWriter<File>> = None;
        let mut size_after = 0u64;
        let open = |out: &mut Option<BufWriter<File>>, at: u64| -> Result<(), StorageError> {
            if out.is_none() {
                let f = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
                let mut w = BufWriter::with_capacity(1 << 20, f);
                seg.copy_prefix(&mut w, at, &path)?;
                *out = Some(w);
            }
            Ok(())
        };
        seg.for_each(true, |h, bytes| {
            match pass.decide(h, bytes, stats) {
                Decision::Keep => {
                    if let Some(w) = out.as_mut() {
                        w.write_all(bytes)
                            .ctx(|| format!("writing {}", path.display()))?;
                    }
                    size_after += h.size;
                }
                Decision::Drop => open(&mut out, h.position)?,
                Decision::Rewrite(b) => {
                    open(&mut out, h.position)?;
                    let w = out.as_mut().expect("opened");
                    w.write_all(&b)
                        .ctx(|| format!("writing {}", path.display()))?;
                    size_after += b.len() as u64;
                }
            }
            Ok(true)
        })?;
        let Some(w) = out else {
            return Ok(Outcome::Unchanged);
        };
        let file = w
            .into_inner()
            .map_err(|e| StorageError::io(format!("writing {}", path.display()), e.into_error()))?;
        #[cfg(test)]
        if self.crash_mid_write {
            file.set_len(size_after / 2)
                .ctx(|| format!("truncating {}", path.display()))?;
            return Err(StorageError::io(
                "simulated crash at MidWrite".to_string(),
                std::io::Error::other("crash"),
            ));
        }
        file.sync_all()
            .ctx(|| format!("fsync of {}", path.display()))?;
        drop(file);
        if size_after == 0 && i > 0 {
            remove_if_present(&path)?;
            return Ok(Outcome::Emptied);
        }
        let mut new = Segment::open_cleaned(&self.dir, seg.base)?;
        if let Some(t) = new.scan(self.index_interval_bytes, self.now_ms)? {
            return Err(StorageError::CorruptDataDir(format!(
                "cleaned segment {} is corrupt: {}",
                path.display(),
                t.reason
            )));
        }
        new.seal()?;
        new.sync()?;
        Ok(Outcome::Rewritten(new))
    }
}

impl PartitionLog {
    #[cfg(test)]
    fn crash(&mut self, point: CrashPoint) -> Result<(), StorageError> {
        if self.crash_at.is_some_and(|p| p == point) {
            self.crash_at = None;
            return Err(StorageError::io(
                format!("simulated crash at {point:?}"),
                std::io::Error::other("crash"),
            ));
        }
        Ok(())
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn crash(&mut self, _point: CrashPoint) -> Result<(), StorageError> {
        Ok(())
    }

    /// Runs one whole cleaning pass ([`PartitionLog::compaction_plan`],
    /// [`CompactionPlan::execute`], [`PartitionLog::install`]) with the default offset map
    /// bound, holding the log throughout. Owners that serve traffic meanwhile call the three
    /// steps themselves and hold their lock only for the first and the last.
    pub fn compact(
        &mut self,
        now_ms: i64,
        max_offset: i64,
        codec: &dyn CompactionCodec,
    ) -> Result<CompactionStats, StorageError> {
        match self.compaction_plan(now_ms, max_offset, DEFAULT_MAX_MAP_KEYS)? {
            Some(plan) => {
                let cleaned = plan.execute(codec)?;
                self.install(cleaned)
            }
            None => Ok(CompactionStats {
                cleaned_to: self.cleaner.cleaned_to,
                ..CompactionStats::default()
            }),
        }
    }

    /// Decides whether a cleaning pass is due (`cleanup.policy` has `compact`, and the
    /// dirty ratio or a tombstone deadline is reached; see the module docs) and if so
    /// returns its plan: which segments to clean and a snapshot of them (duplicated file
    /// descriptors and sizes). Cheap: reads no file. `max_offset` bounds what counts as
    /// committed (the high watermark): records at or above it neither supersede others nor
    /// get cleaned. `max_map_keys` bounds the offset map (see [`DEFAULT_MAX_MAP_KEYS`]).
    /// `None` also when another pass of this log is under way.
    pub fn compaction_plan(
        &mut self,
        now_ms: i64,
        max_offset: i64,
        max_map_keys: usize,
    ) -> Result<Option<CompactionPlan>, StorageError> {
        self.last_now_ms = now_ms;
        if !self.config.cleanup_compact {
            return Ok(None);
        }
        let sealed = self.segments.len() - 1;
        let cleaned_to = self.cleaner.cleaned_to.max(self.log_start_offset);
        let dirty_idx = self
            .segments
            .partition_point(|s| s.base_offset() <= cleaned_to)
            .saturating_sub(1)
            .min(sealed);
        let lag = self.config.min_compaction_lag_ms;
        let lag_cutoff = now_ms.saturating_sub(lag.max(0));
        let mut end_idx = dirty_idx;
        while end_idx < sealed {
            let seg = &self.segments[end_idx];
            let next_base = self.segments[end_idx + 1].base_offset();
            let too_new = lag > 0 && seg.max_timestamp().is_some_and(|(ts, _)| ts > lag_cutoff);
            if next_base > max_offset || too_new {
                break;
            }
            end_idx += 1;
        }
        let clean_bytes: u64 = self.segments[..dirty_idx].iter().map(Segment::size).sum();
        let dirty_bytes: u64 = self.segments[dirty_idx..end_idx]
            .iter()
            .map(Segment::size)
            .sum();
        let total = clean_bytes + dirty_bytes;
        let ratio_due = dirty_bytes > 0
            && dirty_bytes as f64 >= self.config.min_cleanable_dirty_ratio * total as f64;
        let tombstones_due = end_idx > 0
            && self
                .cleaner
                .oldest_tombstone_ms
                .is_some_and(|t| t.saturating_add(self.config.delete_retention_ms) <= now_ms);
        if !ratio_due && !tombstones_due {
            return Ok(None);
        }
        if self.cleaning.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let guard = PassGuard(self.cleaning.clone());
        let mut segments = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            let path = segment_path(&self.dir, s.base_offset(), LOG_SUFFIX);
            let file = s
                .log_file()
                .try_clone()
                .ctx(|| format!("duplicating the descriptor of {}", path.display()))?;
            segments.push(SegmentSnapshot {
                base: s.base_offset(),
                size: s.size(),
                file,
                path,
            });
        }
        #[cfg(test)]
        let crash_mid_write = self.crash_at == Some(CrashPoint::MidWrite);
        #[cfg(test)]
        if crash_mid_write {
            self.crash_at = None;
        }
        Ok(Some(CompactionPlan {
            dir: self.dir.clone(),
            generation: self.generation,
            segments,
            dirty_idx,
            end_idx,
            max_offset,
            now_ms,
            previously_cleaned_to: cleaned_to,
            delete_retention_ms: self.config.delete_retention_ms,
            index_interval_bytes: self.config.index_interval_bytes,
            checkpoint: self.cleaner.clone(),
            max_map_keys: max_map_keys.max(1),
            guard,
            #[cfg(test)]
            crash_mid_write,
        }))
    }

    /// Whether the segments `cleaned` replaces are still there as the pass saw them. A
    /// segment retention deleted meanwhile is fine (it is skipped); anything else (a
    /// truncation, a size change, a missing segment) is not.
    fn still_matches(&self, cleaned: &Cleaned) -> bool {
        if cleaned.generation != self.generation || cleaned.dir != self.dir {
            return false;
        }
        let last = self.segments.len() - 1;
        cleaned.segments.iter().all(|c| {
            c.base < self.log_start_offset
                || self
                    .segments
                    .iter()
                    .position(|s| s.base_offset() == c.base)
                    .is_some_and(|j| j < last && self.segments[j].size() == c.size_before)
        })
    }

    /// Swaps a pass's cleaned segments in (renames and small index reads only) and writes
    /// the cleaner checkpoint. If the log changed under the pass in a way that could make
    /// its result wrong, nothing is swapped: the `.cleaned` files are deleted, the returned
    /// stats say `discarded`, and the next pass starts over.
    pub fn install(&mut self, mut cleaned: Cleaned) -> Result<CompactionStats, StorageError> {
        let mut stats = std::mem::take(&mut cleaned.stats);
        if !self.still_matches(&cleaned) {
            tracing::info!(dir = %self.dir.display(), "the log changed during a cleaning pass; discarding its result");
            return Ok(CompactionStats {
                discarded: true,
                cleaned_to: self.cleaner.cleaned_to,
                ..CompactionStats::default()
            });
        }
        // A segment the pass meant to empty but must keep after all: its superseded records
        // stay, so the checkpoint must not pass it (see the codec-failure rule).
        let mut held_at = cleaned.codec_failed_at;
        while let Some(c) = cleaned.segments.pop() {
            if c.base < self.log_start_offset {
                // Deleted by retention meanwhile; `c` drops its files.
                if let Outcome::Rewritten(seg) = c.outcome {
                    seg.delete_files()?;
                }
                continue;
            }
            let j = self
                .segments
                .iter()
                .position(|s| s.base_offset() == c.base)
                .expect("checked by still_matches");
            match c.outcome {
                Outcome::Unchanged => {}
                // Retention made it the first segment meanwhile, and the first segment stays
                // so the log start does not move: keep it as it is and clean it next time.
                Outcome::Emptied if j == 0 => {
                    held_at = Some(held_at.map_or(c.base, |h| h.min(c.base)));
                }
                Outcome::Emptied => {
                    let seg = self.segments.remove(j);
                    tracing::debug!(dir = %self.dir.display(), base_offset = c.base, "deleting a segment compaction emptied");
                    seg.delete_files()?;
                    stats.segments_deleted += 1;
                }
                Outcome::Rewritten(new) => {
                    self.swap_in(j, new)?;
                    stats.segments_rewritten += 1;
                }
            }
        }

        self.crash(CrashPoint::BeforeCheckpoint)?;
        let reached = held_at.map_or(cleaned.cleaned_to, |f| f.min(cleaned.cleaned_to));
        self.cleaner
            .record_pass(reached, cleaned.now_ms, self.log_start_offset);
        if self.cleaner.cleaned_to > reached {
            // Held below the old checkpoint: everything from there counts as dirty again,
            // so no tombstone past it can expire.
            self.cleaner.truncate(reached);
        }
        self.cleaner.oldest_tombstone_ms = cleaned.oldest_tombstone_ms;
        write_cleaner_checkpoint(&self.dir, &self.cleaner)?;
        self.generation += 1;
        stats.cleaned_to = self.cleaner.cleaned_to;
        Ok(stats)
    }

    /// Replaces segment `i` with its cleaned copy (see the module docs for the steps).
    fn swap_in(&mut self, i: usize, mut new: Segment) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        let base = self.segments[i].base_offset();
        self.crash(CrashPoint::BeforeSwap)?;
        let cleaned = cleaned_path(&dir, base, LOG_SUFFIX);
        let swap = segment_path(&dir, base, SWAP_SUFFIX);
        fs::rename(&cleaned, &swap)
            .ctx(|| format!("renaming {} to {}", cleaned.display(), swap.display()))?;
        sync_dir(&dir)?;
        self.crash(CrashPoint::AfterSwap)?;
        remove_indexes(&dir, base)?;
        self.crash(CrashPoint::AfterIndexDelete)?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let from = cleaned_path(&dir, base, suffix);
            let to = segment_path(&dir, base, suffix);
            fs::rename(&from, &to)
                .ctx(|| format!("renaming {} to {}", from.display(), to.display()))?;
        }
        rename_swap(&dir, base)?;
        new.mark_installed();
        self.segments[i] = new;
        self.crash(CrashPoint::AfterRename)?;
        Ok(())
    }
}
