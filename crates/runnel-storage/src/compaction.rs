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
//! * An offset map `key → latest offset` is built over everything from the
//!   first dirty segment up to `max_offset` (the active segment included, so an
//!   older copy is dropped even if the newest one is still in the active segment).
//! * Every record of the cleanable range is retained iff it is the latest of its
//!   key (or its key is not in the map: it lies in the clean part and nothing
//!   newer exists), or its key is null. A tombstone (null value) that is the
//!   latest of its key is retained until `delete.retention.ms` after the pass
//!   that first cleaned it; it is removed only by a later pass, so the older
//!   records of its key are gone (an earlier completed pass removed them) before
//!   the tombstone goes and a key can never come back.
//! * Control batches are kept as they are.
//! * Batch granularity: a batch whose records are all retained is copied
//!   byte for byte, one with none retained is dropped, anything in between is
//!   re-encoded by [`CompactionCodec::rewrite`], which keeps the original base
//!   offset and last offset delta, so offsets never change.
//!
//! # Crash safety
//!
//! Each changed segment is written to `<base>.log.cleaned` and fsynced, then
//! renamed to `<base>.log.swap` (the commit point), its index files are
//! deleted, and the swap file is renamed over `<base>.log`; the indexes are
//! then rebuilt. [`crate::PartitionLog::open`] deletes `.cleaned` files and
//! finishes any `.swap`, so a crash leaves each segment either old or new. Any
//! mix of old and new segments is a valid log: a record is only dropped when a
//! newer record of its key exists (which is itself either kept or dropped for
//! a still newer one), and tombstones only go after a completed earlier pass.
//! The checkpoint is written after every swap of the pass is done.
//! A segment whose records are all removed is deleted, except the first one,
//! which stays (empty) so the log start offset does not move.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, CONTROL_BIT};
use crate::error::{IoContext, StorageError};
use crate::log::{sync_dir, PartitionLog};
use crate::segment::{
    segment_path, HeaderSummary, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};

pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
pub(crate) const CLEANER_CHECKPOINT_TMP: &str = "cleaner-offset-checkpoint.tmp";
/// Suffix (after the base offset) of a cleaned segment being written.
pub(crate) const CLEANED_SUFFIX: &str = "log.cleaned";
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

/// What one call of [`PartitionLog::compact`] did.
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
    pub segments_rewritten: usize,
    pub segments_deleted: usize,
    /// Distinct keys in the offset map.
    pub keys: usize,
    /// The new cleaner checkpoint.
    pub cleaned_to: i64,
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
        f.write_all(text.as_bytes())
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
    /// The new `.log` is in place; indexes not rebuilt, checkpoint not written.
    AfterRename,
    /// Every segment is swapped, the checkpoint is not yet written.
    BeforeCheckpoint,
}

/// The decision for one batch.
enum Decision {
    Keep,
    Drop,
    Rewrite(Vec<u8>),
}

/// Counters of one segment's filtering.
#[derive(Default)]
struct SegmentResult {
    changed: bool,
    size_after: u64,
}

/// Everything the filter needs, fixed for the pass.
struct Pass<'a> {
    map: HashMap<Bytes, i64>,
    codec: &'a dyn CompactionCodec,
    now_ms: i64,
    /// Records below this offset went through a completed earlier pass.
    previously_cleaned_to: i64,
    delete_retention_ms: i64,
    checkpoint: CleanerCheckpoint,
    oldest_tombstone_ms: Option<i64>,
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

    /// The records of a batch, checked against its header; `None` when the
    /// codec fails or disagrees with the header (the batch is then kept whole
    /// and contributes no key: never wrong, only less compact).
    fn keys_of(&self, h: &HeaderSummary, bytes: &[u8]) -> Option<Vec<RecordKey>> {
        let count = BatchHeader::new(bytes).map_or(0, |b| b.records_count());
        match self.codec.keys(bytes) {
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

    fn decide(&mut self, h: &HeaderSummary, bytes: &[u8], stats: &mut CompactionStats) -> Decision {
        if is_control(bytes) {
            return Decision::Keep;
        }
        let Some(records) = self.keys_of(h, bytes) else {
            return Decision::Keep;
        };
        let mut keep = Vec::with_capacity(records.len());
        let mut tombstones_removed = 0;
        for r in &records {
            let superseded = r
                .key
                .as_ref()
                .is_some_and(|k| self.map.get(k).is_some_and(|&latest| latest > r.offset));
            let retain = if superseded {
                false
            } else if r.tombstone && r.key.is_some() {
                let first = self.first_cleaned_ms(r.offset);
                let expired = r.offset < self.previously_cleaned_to
                    && first.saturating_add(self.delete_retention_ms) <= self.now_ms;
                if expired {
                    tombstones_removed += 1;
                } else {
                    self.oldest_tombstone_ms =
                        Some(self.oldest_tombstone_ms.map_or(first, |o| o.min(first)));
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
                self.keep_whole_tombstones(&records);
                Decision::Keep
            }
            Err(e) => {
                tracing::warn!(base_offset = h.base_offset, error = %e, "cannot rewrite batch; keeping the original");
                self.keep_whole_tombstones(&records);
                Decision::Keep
            }
        }
    }

    /// A batch kept whole after all keeps its tombstones: note them.
    fn keep_whole_tombstones(&mut self, records: &[RecordKey]) {
        for r in records.iter().filter(|r| r.tombstone && r.key.is_some()) {
            let first = self.first_cleaned_ms(r.offset);
            self.oldest_tombstone_ms =
                Some(self.oldest_tombstone_ms.map_or(first, |o| o.min(first)));
        }
    }
}

fn is_control(bytes: &[u8]) -> bool {
    BatchHeader::new(bytes).is_some_and(|h| h.attributes() & CONTROL_BIT != 0)
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

/// Calls `f` with each whole batch of a segment, in order, until it returns false.
fn for_each_batch(
    seg: &Segment,
    mut f: impl FnMut(&HeaderSummary, &[u8]) -> Result<bool, StorageError>,
) -> Result<(), StorageError> {
    let mut headers = Vec::new();
    seg.walk_headers(0, |s| {
        headers.push(*s);
        true
    })?;
    let mut buf = Vec::new();
    for h in &headers {
        buf.resize(h.size as usize, 0);
        seg.read_exact_at(&mut buf, h.position)?;
        if !f(h, &buf)? {
            break;
        }
    }
    Ok(())
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

    /// Runs one cleaning pass if `cleanup.policy` has `compact` and one is
    /// due (see the module docs of `compaction` for the rules).
    /// `max_offset` bounds what counts as committed (the high watermark):
    /// records at or above it neither supersede others nor get cleaned.
    /// Runs synchronously; the owner holds the log for the whole pass.
    pub fn compact(
        &mut self,
        now_ms: i64,
        max_offset: i64,
        codec: &dyn CompactionCodec,
    ) -> Result<CompactionStats, StorageError> {
        self.last_now_ms = now_ms;
        let mut stats = CompactionStats {
            cleaned_to: self.cleaner.cleaned_to,
            ..CompactionStats::default()
        };
        if !self.config.cleanup_compact {
            return Ok(stats);
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
            return Ok(stats);
        }
        let end_offset = self.segments[end_idx].base_offset();

        // The offset map, from the first dirty segment up to max_offset.
        let mut map: HashMap<Bytes, i64> = HashMap::new();
        let mut pass = Pass {
            map: HashMap::new(),
            codec,
            now_ms,
            previously_cleaned_to: cleaned_to,
            delete_retention_ms: self.config.delete_retention_ms,
            checkpoint: self.cleaner.clone(),
            oldest_tombstone_ms: None,
        };
        for seg in &self.segments[dirty_idx..] {
            let mut done = false;
            for_each_batch(seg, |h, bytes| {
                if h.last_offset >= max_offset {
                    done = true;
                    return Ok(false);
                }
                if !is_control(bytes) {
                    for r in pass.keys_of(h, bytes).unwrap_or_default() {
                        if let Some(k) = r.key {
                            let e = map.entry(k).or_insert(r.offset);
                            *e = (*e).max(r.offset);
                        }
                    }
                }
                Ok(true)
            })?;
            if done {
                break;
            }
        }
        stats.keys = map.len();
        pass.map = map;
        stats.cleaned = true;

        // Filter the cleanable range segment by segment.
        let mut i = 0;
        for _ in 0..end_idx {
            let size_before = self.segments[i].size();
            stats.bytes_before += size_before;
            let result = self.clean_segment(i, &mut pass, &mut stats)?;
            if !result.changed {
                stats.bytes_after += size_before;
                i += 1;
                continue;
            }
            stats.bytes_after += result.size_after;
            if result.size_after == 0 && i > 0 {
                let base = self.segments[i].base_offset();
                remove_if_present(&segment_path(&self.dir, base, CLEANED_SUFFIX))?;
                let seg = self.segments.remove(i);
                tracing::debug!(dir = %self.dir.display(), base_offset = base, "deleting a segment compaction emptied");
                seg.delete_files()?;
                stats.segments_deleted += 1;
                continue;
            }
            self.swap_in(i)?;
            stats.segments_rewritten += 1;
            i += 1;
        }

        self.crash(CrashPoint::BeforeCheckpoint)?;
        self.cleaner
            .record_pass(end_offset, now_ms, self.log_start_offset);
        self.cleaner.oldest_tombstone_ms = pass.oldest_tombstone_ms;
        write_cleaner_checkpoint(&self.dir, &self.cleaner)?;
        stats.cleaned_to = self.cleaner.cleaned_to;
        Ok(stats)
    }

    /// Writes the retained batches of segment `i` to `<base>.log.cleaned`
    /// (fsynced) if anything changes; otherwise leaves no file behind.
    fn clean_segment(
        &mut self,
        i: usize,
        pass: &mut Pass<'_>,
        stats: &mut CompactionStats,
    ) -> Result<SegmentResult, StorageError> {
        let base = self.segments[i].base_offset();
        let path = segment_path(&self.dir, base, CLEANED_SUFFIX);
        let file = fs::File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let mut result = SegmentResult::default();
        for_each_batch(&self.segments[i], |h, bytes| {
            let written: &[u8] = match pass.decide(h, bytes, stats) {
                Decision::Keep => bytes,
                Decision::Drop => {
                    result.changed = true;
                    &[]
                }
                Decision::Rewrite(ref b) => {
                    result.changed = true;
                    out.write_all(b)
                        .ctx(|| format!("writing {}", path.display()))?;
                    result.size_after += b.len() as u64;
                    return Ok(true);
                }
            };
            out.write_all(written)
                .ctx(|| format!("writing {}", path.display()))?;
            result.size_after += written.len() as u64;
            Ok(true)
        })?;
        let file = out
            .into_inner()
            .map_err(|e| StorageError::io(format!("writing {}", path.display()), e.into_error()))?;
        if !result.changed {
            drop(file);
            remove_if_present(&path)?;
            return Ok(result);
        }
        #[cfg(test)]
        if self.crash_at == Some(CrashPoint::MidWrite) {
            file.set_len(result.size_after / 2)
                .ctx(|| format!("truncating {}", path.display()))?;
        }
        self.crash(CrashPoint::MidWrite)?;
        file.sync_all()
            .ctx(|| format!("fsync of {}", path.display()))?;
        Ok(result)
    }

    /// Replaces segment `i` with its fsynced `.cleaned` file (see the module
    /// docs for the steps) and rebuilds its indexes.
    fn swap_in(&mut self, i: usize) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        let base = self.segments[i].base_offset();
        self.crash(CrashPoint::BeforeSwap)?;
        let cleaned = segment_path(&dir, base, CLEANED_SUFFIX);
        let swap = segment_path(&dir, base, SWAP_SUFFIX);
        fs::rename(&cleaned, &swap)
            .ctx(|| format!("renaming {} to {}", cleaned.display(), swap.display()))?;
        sync_dir(&dir)?;
        self.crash(CrashPoint::AfterSwap)?;
        remove_indexes(&dir, base)?;
        self.crash(CrashPoint::AfterIndexDelete)?;
        rename_swap(&dir, base)?;
        self.crash(CrashPoint::AfterRename)?;
        let mut seg = Segment::open_existing(&dir, base)?;
        if let Some(t) = seg.scan(self.config.index_interval_bytes, self.last_now_ms)? {
            return Err(StorageError::CorruptDataDir(format!(
                "cleaned segment {} is corrupt: {}",
                segment_path(&dir, base, LOG_SUFFIX).display(),
                t.reason
            )));
        }
        seg.seal()?;
        seg.sync()?;
        self.segments[i] = seg;
        Ok(())
    }
}
