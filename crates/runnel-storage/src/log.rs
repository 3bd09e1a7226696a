//! [`PartitionLog`]: the ordered segments of one partition, with append,
//! read, crash recovery, rolling, retention and truncation.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, BatchInfo};
use crate::compaction::{self, CleanerCheckpoint};
use crate::config::{LogConfig, TimestampType};
use crate::epochs::{self, LeaderEpochCache};
use crate::error::{IoContext, StorageError};
use crate::segment::{self, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};

const RECOVERY_POINT_FILE: &str = "recovery-point";
const RECOVERY_POINT_TMP: &str = "recovery-point.tmp";
/// Suffix of files the broker keeps beside the segments (producer-state snapshots,
/// `<20-digit offset>.snapshot`); the log leaves them alone.
pub const SNAPSHOT_SUFFIX: &str = "snapshot";

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The broker timestamp written into the batches, or -1 under CreateTime.
    pub log_append_time: i64,
    /// Number of records appended.
    pub record_count: i64,
}

/// Whole batches returned by [`PartitionLog::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// Complete batches, back to back, exactly as stored.
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// The log of one partition: segments ordered by base offset, the last one
/// active. Not internally synchronised; the owner serialises access.
pub struct PartitionLog {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// Never empty; the last one receives appends.
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_start_offset: i64,
    /// Everything below this offset has been fsynced.
    recovery_point: i64,
    unflushed_records: u64,
    last_flush_ms: i64,
    /// Latest clock value seen, for operations that take no `now_ms`.
    pub(crate) last_now_ms: i64,
    /// Files were created since the last flush, so the directory needs an fsync.
    dir_dirty: bool,
    /// What the log cleaner has done so far (`cleaner-offset-checkpoint`).
    pub(crate) cleaner: CleanerCheckpoint,
    /// Bumped whenever existing data changes under a cleaning pass that works without the
    /// owner's lock (truncation, an installed pass), so the pass's result is discarded.
    pub(crate) generation: u64,
    /// A cleaning pass (plan to install) is under way; at most one at a time.
    pub(crate) cleaning: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Leader epoch → start offset, mirrored in `leader-epoch-checkpoint`.
    epochs: LeaderEpochCache,
    /// The checkpoint on disk is behind `epochs` (a write failed or is pending);
    /// written before the next append.
    epochs_dirty: bool,
    /// Why the log went offline: a disk error left its files untrustworthy (see
    /// [`StorageError::is_disk_failure`]); every later write is refused.
    offline: Option<String>,
    /// Tests make compaction stop ("crash") at the n-th step of a segment swap.
    #[cfg(test)]
    pub(crate) crash_at: Option<compaction::CrashPoint>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset())
            .field("segments", &self.segments.len())
            .finish()
    }
}

fn parse_segment_name(name: &str) -> Option<(i64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, suffix))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    crate::failpoints::inject(crate::failpoints::DIR_FSYNC)
        .and_then(|()| fs::File::open(dir))
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync of directory {}", dir.display()))
}

impl PartitionLog {
    /// Opens (creating if missing) the partition directory and recovers it:
    /// segments from the one holding the recovery point onward are scanned
    /// batch by batch and cut at the first torn or corrupt batch; earlier
    /// segments are trusted (they were fsynced) and only their indexes are
    /// checked.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self, StorageError> {
        fs::create_dir_all(dir)
            .ctx(|| format!("creating partition directory {}", dir.display()))?;
        let mut logs = BTreeSet::new();
        let mut indexes = Vec::new();
        let mut checkpoint_present = false;
        let mut cleaner_checkpoint_present = false;
        let mut swaps = Vec::new();
        for entry in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(dir = %dir.display(), file = ?name, "ignoring unknown file");
                continue;
            };
            match (name, parse_segment_name(name)) {
                (RECOVERY_POINT_FILE, _) => checkpoint_present = true,
                (compaction::CLEANER_CHECKPOINT_FILE, _) => cleaner_checkpoint_present = true,
                (epochs::LEADER_EPOCH_FILE, _) => {}
                (
                    RECOVERY_POINT_TMP
                    | compaction::CLEANER_CHECKPOINT_TMP
                    | epochs::LEADER_EPOCH_TMP,
                    _,
                )
                | (
                    _,
                    Some((
                        _,
                        compaction::CLEANED_SUFFIX
                        | compaction::CLEANED_INDEX_SUFFIX
                        | compaction::CLEANED_TIME_INDEX_SUFFIX,
                    )),
                ) => {
                    // A checkpoint write that never reached its rename, or a cleaned
                    // segment (or its indexes) that was never committed: the original is
                    // intact, or a committed `.log.swap` gets its indexes rebuilt.
                    let p = entry.path();
                    fs::remove_file(&p).ctx(|| format!("deleting {}", p.display()))?;
                }
                (_, Some((base, LOG_SUFFIX))) => {
                    logs.insert(base);
                }
                (_, Some((base, compaction::SWAP_SUFFIX))) => swaps.push(base),
                (_, Some((base, INDEX_SUFFIX | TIME_INDEX_SUFFIX))) => {
                    indexes.push((base, entry.path()))
                }
                (_, Some((_, SNAPSHOT_SUFFIX))) => {}
                _ => {
                    tracing::warn!(dir = %dir.display(), file = name, "ignoring unknown file in partition directory")
                }
            }
        }
        // A committed cleaned segment (`.log.swap`) replaces its original: finish the swap.
        for &base in &swaps {
            compaction::finish_swap(dir, base)?;
            logs.insert(base);
        }
        let indexes: Vec<(i64, PathBuf)> = indexes
            .into_iter()
            .filter(|(base, p)| !swaps.contains(base) || p.exists())
            .collect();
        for (base, path) in indexes {
            if !logs.contains(&base) {
                tracing::warn!(file = %path.display(), "deleting index file without a .log");
                fs::remove_file(&path).ctx(|| format!("deleting {}", path.display()))?;
            }
        }
        let recovery_point = if checkpoint_present {
            read_checkpoint(dir)?
        } else {
            None
        };

        let bases: Vec<i64> = logs.into_iter().collect();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let scan_from = match recovery_point {
            Some(rp) => bases.partition_point(|&b| b <= rp).saturating_sub(1),
            None => 0,
        };
        let mut stopped = None;
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = Segment::open_existing(dir, base)?;
            let trusted = i < scan_from && seg.load_indexes(bases[i + 1])?;
            if !trusted {
                if let Some(t) = seg.scan(config.index_interval_bytes, now_ms)? {
                    tracing::warn!(
                        segment = %segment::segment_path(dir, base, LOG_SUFFIX).display(),
                        kept_bytes = t.valid_bytes,
                        truncated_bytes = t.dropped_bytes,
                        reason = %t.reason,
                        "truncated torn or corrupt tail of segment"
                    );
                    stopped = Some(i);
                }
            }
            segments.push(seg);
            if stopped.is_some() {
                break;
            }
        }
        if let Some(i) = stopped {
            for &base in &bases[i + 1..] {
                let seg = Segment::open_existing(dir, base)?;
                tracing::warn!(
                    segment = %segment::segment_path(dir, base, LOG_SUFFIX).display(),
                    bytes = seg.size(),
                    "deleting segment after a truncated one"
                );
                seg.delete_files()?;
            }
        }
        // Non-last segments must be non-empty (except the first, which compaction may have
        // emptied: it keeps the log start offset) and must not overlap. Gaps are normal
        // once a compacted log dropped whole batches or segments.
        let mut i = 0;
        while i + 1 < segments.len() {
            let (cur, next) = (&segments[i], &segments[i + 1]);
            if cur.is_empty() && i > 0 {
                tracing::warn!(segment = %segment::segment_path(dir, cur.base_offset(), LOG_SUFFIX).display(), "deleting empty non-active segment");
                segments.remove(i).delete_files()?;
                continue;
            }
            if cur.next_offset() > next.base_offset() {
                return Err(StorageError::CorruptDataDir(format!(
                    "segment {} of {} holds offsets up to {} but the next segment starts at {}",
                    cur.base_offset(),
                    dir.display(),
                    cur.next_offset() - 1,
                    next.base_offset()
                )));
            }
            if cur.next_offset() < next.base_offset() {
                tracing::debug!(dir = %dir.display(), from = cur.next_offset(), to = next.base_offset(), "gap in offsets between segments");
            }
            i += 1;
        }
        let mut dir_dirty = false;
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
            dir_dirty = true;
        }
        let log_start_offset = segments[0].base_offset();
        let log_end = segments.last().expect("non-empty").next_offset();
        let cleaner = if cleaner_checkpoint_present {
            compaction::read_cleaner_checkpoint(dir)?
        } else {
            CleanerCheckpoint::default()
        };
        let epochs = load_epochs(dir, &segments, log_start_offset, log_end)?;
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            recovery_point: recovery_point
                .unwrap_or(log_start_offset)
                .clamp(log_start_offset, log_end),
            unflushed_records: 0,
            last_flush_ms: now_ms,
            last_now_ms: now_ms,
            dir_dirty,
            cleaner,
            generation: 0,
            cleaning: Default::default(),
            epochs,
            epochs_dirty: false,
            offline: None,
            #[cfg(test)]
            crash_at: None,
        })
    }

    /// Why the log is offline (a disk error), `None` while it works.
    pub fn offline_reason(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    /// Refuses writes once the log is offline.
    pub(crate) fn check_online(&self) -> Result<(), StorageError> {
        match &self.offline {
            Some(reason) => Err(StorageError::LogOffline(reason.clone())),
            None => Ok(()),
        }
    }

    /// Takes the log offline when `result` is a disk failure.
    pub(crate) fn note<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &result {
            if e.is_disk_failure() && self.offline.is_none() {
                tracing::error!(dir = %self.dir.display(), error = %e, "disk error: the partition log goes offline and takes no more writes");
                self.offline = Some(e.to_string());
            }
        }
        result
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has a segment")
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes effect from the next operation (e.g. a smaller segment_bytes
    /// rolls at the next append).
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Bytes of all `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn out_of_range(&self, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start: self.log_start_offset,
            log_end: self.log_end_offset(),
        }
    }

    /// Appends producer batches as the leader. Every batch is validated
    /// (magic 2, lengths, CRC-32C, codec, recordsCount >= 1 and equal to
    /// lastOffsetDelta + 1, size <= max.message.bytes) before anything is
    /// written, so a bad batch in the middle of a request leaves the log
    /// untouched. Offsets and the leader epoch are then patched into the
    /// caller's buffer (plus timestamps and CRC under LogAppendTime) and the
    /// whole buffer is written with one call.
    ///
    /// All or nothing: on an error nothing of `batches` counts as appended (the files are
    /// cut back), so the producer's retry is no duplicate; a disk failure also takes the
    /// log offline.
    pub fn append(
        &mut self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_online()?;
        let result = self.append_as_leader(batches, leader_epoch, now_ms);
        if result.is_err() {
            self.forget_unwritten_epochs();
        }
        self.note(result)
    }

    fn append_as_leader(
        &mut self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.last_now_ms = now_ms;
        let mut infos = batch::validate_batches(batches)?;
        for b in &infos {
            if b.size > self.config.max_message_bytes {
                return Err(StorageError::BatchTooLarge {
                    size: b.size,
                    max: self.config.max_message_bytes,
                });
            }
            // Kafka's "inconsistent batch offset range" check: a producer's
            // batch holds exactly lastOffsetDelta + 1 records.
            if i64::from(b.record_count) != i64::from(b.last_offset_delta) + 1 {
                return Err(StorageError::CorruptBatch(format!(
                    "batch at byte {} has {} records but lastOffsetDelta {}",
                    b.position, b.record_count, b.last_offset_delta
                )));
            }
        }
        let first = self.log_end_offset();
        let last = first
            + infos
                .iter()
                .map(|b| i64::from(b.last_offset_delta) + 1)
                .sum::<i64>()
            - 1;
        self.maybe_roll(batches.len() as u64, first, last, now_ms)?;

        let log_append = self.config.timestamp_type == TimestampType::LogAppendTime;
        let mut next = first;
        for b in &mut infos {
            let bytes = &mut batches[b.position..b.position + b.size];
            batch::set_base_offset(bytes, next);
            batch::set_partition_leader_epoch(bytes, leader_epoch);
            if log_append {
                batch::set_log_append_time(bytes, now_ms);
                b.base_timestamp = now_ms;
                b.max_timestamp = now_ms;
                b.attributes |= batch::TIMESTAMP_TYPE_BIT;
            }
            b.base_offset = next;
            b.partition_leader_epoch = leader_epoch;
            next = b.last_offset() + 1;
        }
        self.assign_epochs(&infos)?;
        let record_count = self.write(batches, &infos, now_ms)?;
        Ok(AppendInfo {
            base_offset: first,
            last_offset: next - 1,
            log_append_time: if log_append { now_ms } else { -1 },
            record_count,
        })
    }

    /// Appends batches that already carry their offsets, as a follower
    /// copying its leader. Offsets must only grow: the first batch starts at or
    /// after the log end offset and every batch after the previous one's last
    /// offset. Gaps are accepted, as in Kafka: the leader's cleaner removes whole
    /// batches, so a follower that fell behind resumes where the next surviving
    /// batch starts. All or nothing: on an error none of `batches` stays in the
    /// log. `max_message_bytes` is not enforced (the leader already accepted
    /// these), matching Kafka. Rolling by age uses the last clock value passed to
    /// another method, since this one takes none.
    pub fn append_as_follower(&mut self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        self.check_online()?;
        let result = self.append_copied(batches);
        if result.is_err() {
            self.forget_unwritten_epochs();
        }
        self.note(result)
    }

    fn append_copied(&mut self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        // A compacted leader log may hold empty batches (see `batch::validate_stored_batches`).
        let infos = batch::validate_stored_batches(batches)?;
        let mut next = self.log_end_offset();
        for b in &infos {
            if b.base_offset < next {
                return Err(StorageError::OffsetsOutOfOrder {
                    position: b.position,
                    base_offset: b.base_offset,
                    expected: next,
                });
            }
            next = b.last_offset() + 1;
        }
        let log_end = self.log_end_offset();
        let mut record_count = 0;
        // One write per run of batches a segment can index: past a wide gap the rest
        // needs a segment of its own (32-bit relative offsets).
        let mut rest = &infos[..];
        while let [head, ..] = rest {
            let span = |b: &BatchInfo| b.last_offset() - head.base_offset;
            let n = rest
                .iter()
                .take_while(|b| span(b) <= i64::from(u32::MAX))
                .count();
            let (run, tail) = rest.split_at(n);
            match self.append_run(batches, run) {
                Ok(records) => record_count += records,
                Err(e) => {
                    // All or nothing, like a single write: the caller tracks producer state
                    // only for what it was told was appended.
                    if self.log_end_offset() > log_end {
                        if let Err(undo) = self.truncate_online(log_end) {
                            return Err(StorageError::LogOffline(format!(
                                "{e}; taking back the partly appended fetch failed too: {undo}"
                            )));
                        }
                    }
                    return Err(e);
                }
            }
            rest = tail;
        }
        Ok(AppendInfo {
            base_offset: infos[0].base_offset,
            last_offset: next - 1,
            log_append_time: -1,
            record_count,
        })
    }

    /// Appends `run`, consecutive batches of `batches` one segment can index, with one write.
    fn append_run(&mut self, batches: &[u8], run: &[BatchInfo]) -> Result<i64, StorageError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(0);
        };
        let bytes = &batches[first.position..last.position + last.size];
        let now_ms = self.last_now_ms;
        self.maybe_roll(
            bytes.len() as u64,
            first.base_offset,
            last.last_offset(),
            now_ms,
        )?;
        self.assign_epochs(run)?;
        self.write(bytes, run, now_ms)
    }

    /// Records the epochs of batches about to be written. Like Kafka, before the data:
    /// a checkpoint ahead of the log is cut back on open, one behind it would be wrong.
    fn assign_epochs(&mut self, infos: &[BatchInfo]) -> Result<(), StorageError> {
        let mut changed = false;
        for b in infos {
            changed |= self.epochs.assign(b.partition_leader_epoch, b.base_offset);
        }
        self.persist_epochs(changed)
    }

    /// Writes the epoch checkpoint if entries changed or an earlier write is pending.
    fn persist_epochs(&mut self, changed: bool) -> Result<(), StorageError> {
        if changed || self.epochs_dirty {
            self.epochs_dirty = true;
            epochs::write_checkpoint(&self.dir, &self.epochs)?;
            self.epochs_dirty = false;
        }
        Ok(())
    }

    /// Epochs recorded for batches that never made it must not outlive them.
    fn forget_unwritten_epochs(&mut self) {
        if self.epochs.truncate_from_end(self.log_end_offset()) {
            self.epochs_dirty = true;
        }
    }

    fn write(
        &mut self,
        bytes: &[u8],
        infos: &[BatchInfo],
        now_ms: i64,
    ) -> Result<i64, StorageError> {
        let interval = self.config.index_interval_bytes;
        self.active_mut().append(bytes, infos, interval, now_ms)?;
        let records: i64 = infos.iter().map(|b| i64::from(b.record_count)).sum();
        self.unflushed_records = self.unflushed_records.saturating_add(records as u64);
        if self.unflushed_records >= self.config.flush_messages {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(records)
    }

    /// Rolls before an append of `len` bytes holding offsets `first..=last` if
    /// the active segment holds data and would grow past segment.bytes or is
    /// older than segment.ms, or if it cannot index `last` in 32 bits: a
    /// follower's offsets may skip that far ahead, even into an empty segment.
    /// The new segment starts at `first`, as in Kafka.
    fn maybe_roll(
        &mut self,
        len: u64,
        first: i64,
        last: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let active = self.active();
        if !active.fits_relative(last) {
            return self.roll_at(first);
        }
        if active.is_empty() {
            return Ok(());
        }
        let new_size = active.size().saturating_add(len);
        let too_big = new_size > self.config.segment_bytes || new_size > u64::from(u32::MAX);
        if too_big || self.too_old(now_ms) {
            self.roll_at(first)?;
        }
        Ok(())
    }

    fn too_old(&self, now_ms: i64) -> bool {
        let active = self.active();
        !active.is_empty()
            && active.roll_base_ms.is_some_and(|base| {
                u64::try_from(now_ms.saturating_sub(base))
                    .is_ok_and(|age| age > self.config.segment_ms)
            })
    }

    pub(crate) fn roll(&mut self) -> Result<(), StorageError> {
        self.roll_at(self.log_end_offset())
    }

    /// Seals the active segment and starts a new one at `base`, which is past every offset
    /// in the log. An empty active segment is replaced rather than left behind (open would
    /// delete it), unless it is the first: it holds the log start offset.
    fn roll_at(&mut self, base: i64) -> Result<(), StorageError> {
        let active = self.active();
        if active.is_empty() && active.base_offset() == base {
            return Ok(());
        }
        if active.is_empty() && self.segments.len() > 1 {
            let seg = self.segments.pop().expect("len > 1");
            seg.delete_files()?;
        } else {
            self.active_mut().seal()?;
        }
        let seg = Segment::create(&self.dir, base)?;
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled new segment");
        self.segments.push(seg);
        self.dir_dirty = true;
        Ok(())
    }

    /// Reads whole batches from the one containing `offset`, stopping before
    /// any batch that reaches `max_offset` or would push the result past
    /// `max_bytes` (unless `min_one` and it is the first batch). Data is read
    /// with positional reads into a single buffer, so concurrent readers
    /// would not disturb each other and no per-record work is done.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<ReadResult, StorageError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(self.out_of_range(offset));
        }
        let mut out: Vec<u8> = Vec::new();
        let mut seg_idx = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let mut start = None;
        if offset < log_end && offset < max_offset {
            while seg_idx < self.segments.len() {
                if let Some(s) = self.segments[seg_idx].find_batch(offset)? {
                    start = Some(s);
                    break;
                }
                seg_idx += 1;
            }
        }
        if let Some(first) = start.filter(|f| f.last_offset < max_offset) {
            let first_size = first.size as usize;
            if first_size > max_bytes {
                if min_one {
                    out.resize(first_size, 0);
                    self.segments[seg_idx].read_exact_at(&mut out, first.position)?;
                }
            } else {
                let mut pos = first.position;
                while seg_idx < self.segments.len() {
                    let seg = &self.segments[seg_idx];
                    let want = (max_bytes - out.len()).min((seg.size() - pos) as usize);
                    let from = out.len();
                    out.resize(from + want, 0);
                    seg.read_exact_at(&mut out[from..], pos)?;
                    let kept = whole_batches_below(&out[from..], max_offset);
                    out.truncate(from + kept);
                    if kept as u64 != seg.size() - pos || out.len() >= max_bytes {
                        break;
                    }
                    seg_idx += 1;
                    pos = 0;
                }
            }
        }
        Ok(ReadResult {
            records: Bytes::from(out),
            log_start_offset: self.log_start_offset,
            log_end_offset: log_end,
        })
    }

    /// Earliest batch whose maxTimestamp >= `ts`: `(base offset, maxTimestamp)`.
    /// Segments are skipped by their max timestamp and, inside one, by the
    /// time index.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        for seg in &self.segments {
            if seg.max_timestamp().is_some_and(|(max, _)| max >= ts) {
                if let Some(s) = seg.find_timestamp(ts)? {
                    return Ok(Some((
                        s.base_offset.max(self.log_start_offset),
                        s.max_timestamp,
                    )));
                }
            }
        }
        Ok(None)
    }

    /// `(base offset, maxTimestamp)` of the batch with the largest
    /// maxTimestamp (the earliest such batch on ties). Batch granularity:
    /// the offset is the batch's base offset.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let mut best: Option<(i64, i64)> = None;
        for seg in &self.segments {
            if let Some((ts, off)) = seg.max_timestamp() {
                if !matches!(best, Some((_, b)) if ts <= b) {
                    best = Some((off, ts));
                }
            }
        }
        Ok(best)
    }

    /// Deletes old non-active segments by retention.ms and retention.bytes
    /// (whole segments, oldest first) and rolls an expired active segment so
    /// it becomes eligible next time. Returns how many segments were deleted.
    /// Without `delete` in cleanup.policy only the roll happens (a compacted
    /// log needs it too: the cleaner never touches the active segment).
    ///
    /// Only segments wholly below `high_watermark` go, as in Kafka: a leader must keep what
    /// its followers have not copied yet, or a follower that falls behind would find its
    /// next records deleted before any other replica held them.
    pub fn enforce_retention(
        &mut self,
        now_ms: i64,
        high_watermark: i64,
    ) -> Result<usize, StorageError> {
        self.check_online()?;
        let result = self.retain(now_ms, high_watermark);
        self.note(result)
    }

    fn retain(&mut self, now_ms: i64, high_watermark: i64) -> Result<usize, StorageError> {
        self.last_now_ms = now_ms;
        if self.too_old(now_ms) {
            self.roll()?;
        }
        let mut deleted = 0;
        if !self.config.cleanup_delete {
            return Ok(0);
        }
        if self.config.retention_ms >= 0 {
            let cutoff = now_ms.saturating_sub(self.config.retention_ms);
            while self.oldest_below(high_watermark)
                && self.segments[0].max_timestamp().map_or(-1, |(ts, _)| ts) < cutoff
            {
                self.delete_oldest("retention.ms")?;
                deleted += 1;
            }
        }
        if self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            while self.oldest_below(high_watermark) && excess - self.segments[0].size() as i64 >= 0
            {
                excess -= self.segments[0].size() as i64;
                self.delete_oldest("retention.bytes")?;
                deleted += 1;
            }
        }
        self.persist_epochs(false)?;
        Ok(deleted)
    }

    /// Whether the oldest segment is not the active one and ends below `high_watermark`.
    fn oldest_below(&self, high_watermark: i64) -> bool {
        self.segments
            .get(1)
            .is_some_and(|next| next.base_offset() <= high_watermark)
    }

    fn delete_oldest(&mut self, reason: &str) -> Result<(), StorageError> {
        let seg = self.segments.remove(0);
        tracing::info!(dir = %self.dir.display(), base_offset = seg.base_offset(), bytes = seg.size(), reason, "deleting segment");
        self.log_start_offset = self.segments[0].base_offset();
        self.recovery_point = self.recovery_point.max(self.log_start_offset);
        // Persisted by the caller once the files are gone: a checkpoint ahead of the
        // deletion would lose the epochs of a segment that survives a crash.
        if self.epochs.truncate_from_start(self.log_start_offset) {
            self.epochs_dirty = true;
        }
        seg.delete_files()
    }

    /// fsyncs every segment holding data at or above the recovery point,
    /// then records the log end offset as the new recovery point.
    ///
    /// A failed fsync takes the log offline for good (see [`StorageError::fsync_failed`]):
    /// flushing again would "succeed" and move the recovery point over lost data.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.check_online()?;
        let result = self.flush_online();
        self.note(result)
    }

    fn flush_online(&mut self) -> Result<(), StorageError> {
        self.persist_epochs(false)?;
        let log_end = self.log_end_offset();
        if log_end == self.recovery_point && !self.dir_dirty {
            return Ok(());
        }
        let n = self.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.next_offset() > self.recovery_point || i + 1 == n {
                seg.sync().map_err(StorageError::fsync_failed)?;
            }
        }
        sync_dir(&self.dir).map_err(StorageError::fsync_failed)?;
        self.dir_dirty = false;
        write_checkpoint(&self.dir, log_end)?;
        self.recovery_point = log_end;
        self.unflushed_records = 0;
        Ok(())
    }

    /// Flushes if flush.ms has passed since the last flush; meant to be
    /// called periodically by the owner.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<(), StorageError> {
        self.last_now_ms = now_ms;
        let elapsed = u64::try_from(now_ms.saturating_sub(self.last_flush_ms)).unwrap_or(0);
        if elapsed >= self.config.flush_ms {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(())
    }

    /// Removes every batch that holds an offset >= `offset`; Kafka-like, a
    /// batch straddling `offset` goes entirely, so the new log end may be
    /// below `offset`. With `offset` below the log start, the log is emptied
    /// and restarts at `offset`. The recovery point is lowered on disk
    /// before any file shrinks, so a crash midway still recovers.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        self.check_online()?;
        let result = self.truncate_online(offset);
        self.note(result)
    }

    fn truncate_online(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            // Nothing to remove, but an epoch entry may start at the log end (a leadership
            // that wrote nothing): it describes no record and would make the log claim an
            // epoch its leader never had, so it goes, as in Kafka's `truncateTo`.
            let changed = self.epochs.truncate_from_end(self.log_end_offset());
            return self.persist_epochs(changed);
        }
        self.generation += 1;
        if self.recovery_point > offset {
            self.recovery_point = offset.max(0);
            write_checkpoint(&self.dir, self.recovery_point)?;
        }
        if self.cleaner.cleaned_to > offset {
            // Records appended again below the old checkpoint must count as dirty.
            self.cleaner.truncate(offset);
            compaction::write_cleaner_checkpoint(&self.dir, &self.cleaner)?;
        }
        if offset < self.log_start_offset {
            return self.restart_at(offset);
        }
        // Newest first, so a crash leaves a consistent prefix.
        while self.segments.len() > 1 && self.active().base_offset() >= offset {
            let seg = self.segments.pop().expect("len > 1");
            seg.delete_files()?;
        }
        let now_ms = self.last_now_ms;
        let active = self.active_mut();
        // With no batch at or past `offset`, cutting at the end still reads the segment's
        // true end: a segment that was not active may end before the next one's base.
        let cut = match active.find_batch(offset)? {
            Some(b) => b.position,
            None => active.size(),
        };
        active.truncate_to_position(cut)?;
        active.init_roll_base(now_ms)?;
        // The new end, not `offset`: a batch straddling `offset` went entirely.
        let changed = self.epochs.truncate_from_end(self.log_end_offset());
        self.persist_epochs(changed)
    }

    /// A broker that becomes leader records its new epoch at the log end before its first
    /// append (Kafka's `assignEpochStartOffset` in `makeLeader`), so the previous epoch
    /// ends where this leader's log ended even before it writes anything.
    pub fn assign_leader_epoch(&mut self, epoch: i32) -> Result<(), StorageError> {
        self.check_online()?;
        let changed = self.epochs.assign(epoch, self.log_end_offset());
        let result = self.persist_epochs(changed);
        self.note(result)
    }

    /// Deletes every record and restarts the log, empty, at `offset` (Kafka's
    /// `truncateFullyAndStartAt`). A follower whose log ends before its leader's log start
    /// (retention deleted what it misses) starts over where the leader's log starts.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        self.check_online()?;
        let result = self.restart_at(offset);
        self.note(result)
    }

    fn restart_at(&mut self, offset: i64) -> Result<(), StorageError> {
        self.generation += 1;
        // Cleared first: a crash before the log is emptied then leaves a non-empty log
        // with no epochs, which open detects and rebuilds.
        let changed = self.epochs.clear();
        self.persist_epochs(changed)?;
        while let Some(seg) = self.segments.pop() {
            seg.delete_files()?;
        }
        self.segments.push(Segment::create(&self.dir, offset)?);
        self.log_start_offset = offset;
        self.recovery_point = offset;
        write_checkpoint(&self.dir, offset)?;
        self.dir_dirty = true;
        Ok(())
    }

    /// The latest leader epoch with data in the log (or assigned by an append).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetForLeaderEpoch: `(largest epoch <= epoch, offset where it ends)`; see
    /// [`crate::epochs::end_offset_for`] for the UNDEFINED (-1, -1) cases.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Leader epoch of the batch holding `offset`; `None` outside
    /// `[log start, log end)` or before the first batch with an epoch.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        if offset < self.log_start_offset || offset >= self.log_end_offset() {
            return None;
        }
        self.epochs.epoch_for_offset(offset)
    }

    /// The leader epoch cache's `(epoch, start offset)` entries, oldest first.
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        self.epochs.entries().to_vec()
    }

    /// Flushes and closes the log so the next open has nothing to scan.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.flush()
    }

    /// Closes the log and deletes its directory with everything in it.
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).ctx(|| format!("deleting partition directory {}", dir.display()))
    }

    #[cfg(test)]
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

/// Length of the prefix of `buf` made of complete batches whose last offset
/// is below `max_offset`.
fn whole_batches_below(buf: &[u8], max_offset: i64) -> usize {
    let mut pos = 0;
    while let Some(h) = BatchHeader::new(&buf[pos..]) {
        match h.total_size() {
            Some(size) if pos + size <= buf.len() && h.last_offset() < max_offset => pos += size,
            _ => break,
        }
    }
    pos
}

/// Loads the leader epoch checkpoint and makes it agree with the recovered log,
/// rewriting it if that changed anything. A missing, unreadable or lagging
/// checkpoint is rebuilt from the batch headers.
fn load_epochs(
    dir: &Path,
    segments: &[Segment],
    log_start: i64,
    log_end: i64,
) -> Result<LeaderEpochCache, StorageError> {
    let stored = epochs::read_checkpoint(dir)?;
    let has_data = segments.iter().any(|s| !s.is_empty());
    let mut cache = match &stored {
        Some(Some(c)) => {
            let mut c = c.clone();
            c.truncate_from_end(log_end);
            c.truncate_from_start(log_start);
            if last_batch_epoch_agrees(segments, &c)? {
                c
            } else {
                tracing::warn!(dir = %dir.display(), "leader epoch checkpoint is behind the log; rebuilding it from the batch headers");
                rebuild_epochs(segments)?
            }
        }
        Some(None) => {
            tracing::warn!(dir = %dir.display(), "unreadable leader epoch checkpoint; rebuilding it from the batch headers");
            rebuild_epochs(segments)?
        }
        None if has_data => {
            tracing::warn!(dir = %dir.display(), "no leader epoch checkpoint; rebuilding it from the batch headers");
            rebuild_epochs(segments)?
        }
        None => LeaderEpochCache::new(),
    };
    cache.truncate_from_start(log_start);
    let unchanged = match &stored {
        Some(Some(c)) => *c == cache,
        Some(None) => false,
        None => cache.is_empty(),
    };
    if !unchanged {
        epochs::write_checkpoint(dir, &cache)?;
    }
    Ok(cache)
}

/// Header-only scan of every segment, collapsing consecutive batches of one epoch.
fn rebuild_epochs(segments: &[Segment]) -> Result<LeaderEpochCache, StorageError> {
    let mut cache = LeaderEpochCache::new();
    for seg in segments {
        seg.walk_headers(0, |s| {
            cache.assign(s.leader_epoch, s.base_offset);
            true
        })?;
    }
    Ok(cache)
}

/// Cheap check that the checkpoint knows the epoch of the log's last batch: it is
/// written before data, so it lags only if it was lost or cleared under live data.
fn last_batch_epoch_agrees(
    segments: &[Segment],
    cache: &LeaderEpochCache,
) -> Result<bool, StorageError> {
    let Some(seg) = segments.iter().rev().find(|s| !s.is_empty()) else {
        return Ok(true);
    };
    let Some(last) = seg.find_batch(seg.next_offset() - 1)? else {
        return Ok(true);
    };
    // `>=`: a batch with an older epoch than the latest is ignored by `assign`.
    Ok(last.leader_epoch < 0
        || cache
            .epoch_for_offset(last.base_offset)
            .is_some_and(|e| e >= last.leader_epoch))
}

fn read_checkpoint(dir: &Path) -> Result<Option<i64>, StorageError> {
    let path = dir.join(RECOVERY_POINT_FILE);
    let text = fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
    match text.trim().parse::<i64>() {
        Ok(v) if v >= 0 => Ok(Some(v)),
        _ => {
            tracing::warn!(file = %path.display(), "unreadable recovery point; scanning every segment");
            Ok(None)
        }
    }
}

/// Writes the checkpoint atomically: temp file, fsync, rename, fsync dir.
fn write_checkpoint(dir: &Path, offset: i64) -> Result<(), StorageError> {
    let tmp = dir.join(RECOVERY_POINT_TMP);
    let dst = dir.join(RECOVERY_POINT_FILE);
    {
        use std::io::Write;
        let mut f = fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        crate::failpoints::inject(crate::failpoints::CHECKPOINT_WRITE)
            .and_then(|()| writeln!(f, "{offset}"))
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("fsync of {}", tmp.display()))?;
    }
    fs::rename(&tmp, &dst).ctx(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
    sync_dir(dir)
}
