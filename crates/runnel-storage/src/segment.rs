//! One segment: a `.log` file of whole batches plus its sparse `.index`
//! (relative offset u32 → file position u32) and `.timeindex`
//! (timestamp i64 → relative offset u32). A segment knows nothing about the
//! topic or the other segments; [`crate::log::PartitionLog`] owns the policy.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, HEADER_LEN, LENGTH_OFF};
use crate::error::{IoContext, StorageError};
use crate::failpoints;
use crate::index::{OffsetEntry, SparseIndex, TimeEntry};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Read granularity when walking headers: small enough to be cheap when the
/// sparse index lands close, large enough to cover many small batches.
const WALK_CHUNK: usize = 8 * 1024;
/// Read granularity of the recovery scan, which must read every byte anyway.
const SCAN_CHUNK: usize = 1024 * 1024;

/// `dir/<20-digit base offset>.<suffix>`, Kafka's naming so tools recognise it.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// `dir/<20-digit base offset>.<suffix>.cleaned`: a cleaned copy the log cleaner prepares.
pub(crate) fn cleaned_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}.cleaned"))
}

/// What the log needs to know about a batch without its records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeaderSummary {
    pub(crate) position: u64,
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) size: u64,
    pub(crate) max_timestamp: i64,
    pub(crate) leader_epoch: i32,
}

impl HeaderSummary {
    pub(crate) fn parse(h: &BatchHeader<'_>, position: u64) -> Option<Self> {
        Some(HeaderSummary {
            position,
            base_offset: h.base_offset(),
            last_offset: h.last_offset(),
            size: h.total_size()? as u64,
            max_timestamp: h.max_timestamp(),
            leader_epoch: h.partition_leader_epoch(),
        })
    }
}

/// A segment's state before an append, to put back if the append fails.
struct Mark {
    size: u64,
    next_offset: i64,
    max_timestamp: Option<(i64, i64)>,
    bytes_since_index: u64,
    roll_base_ms: Option<i64>,
    index_len: usize,
    time_index_len: usize,
}

/// Why a recovery scan stopped before the end of the file.
#[derive(Debug)]
pub(crate) struct Truncation {
    pub(crate) valid_bytes: u64,
    pub(crate) dropped_bytes: u64,
    pub(crate) reason: String,
}

pub(crate) struct Segment {
    base_offset: i64,
    dir: PathBuf,
    log: File,
    size: u64,
    next_offset: i64,
    index: SparseIndex<OffsetEntry>,
    time_index: SparseIndex<TimeEntry>,
    /// Largest batch maxTimestamp and the base offset of that batch.
    max_timestamp: Option<(i64, i64)>,
    bytes_since_index: u64,
    /// Time from which `segment.ms` is measured; set once the segment holds data.
    pub(crate) roll_base_ms: Option<i64>,
    /// Both index files existed when the segment was opened.
    indexes_existed: bool,
    /// The files are a cleaned copy being prepared (`<base>.<suffix>.cleaned`, see
    /// `compaction`), not yet renamed into place.
    cleaned: bool,
}

fn open_rw(path: &Path, truncate: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))
}

impl Segment {
    /// Creates a fresh, empty segment (replacing any leftover files).
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Self, StorageError> {
        failpoints::inject(failpoints::SEGMENT_CREATE).ctx(|| {
            format!(
                "creating {}",
                segment_path(dir, base_offset, LOG_SUFFIX).display()
            )
        })?;
        Self::open_files(dir, base_offset, true)
    }

    /// Opens the files of an existing segment without loading its indexes;
    /// the caller then either [`Segment::load_indexes`] or [`Segment::scan`]s.
    pub(crate) fn open_existing(dir: &Path, base_offset: i64) -> Result<Self, StorageError> {
        Self::open_files(dir, base_offset, false)
    }

    /// Opens a cleaned copy written by the log cleaner (`<base>.log.cleaned`), with fresh
    /// `<base>.index.cleaned` and `<base>.timeindex.cleaned`; the caller scans it to build
    /// the indexes. [`Segment::mark_installed`] once the files are renamed into place.
    pub(crate) fn open_cleaned(dir: &Path, base_offset: i64) -> Result<Self, StorageError> {
        Self::open_with(dir, base_offset, false, true)
    }

    fn open_files(dir: &Path, base_offset: i64, truncate: bool) -> Result<Self, StorageError> {
        Self::open_with(dir, base_offset, truncate, false)
    }

    fn open_with(
        dir: &Path,
        base_offset: i64,
        truncate: bool,
        cleaned: bool,
    ) -> Result<Self, StorageError> {
        let name = |suffix: &str| {
            if cleaned {
                cleaned_path(dir, base_offset, suffix)
            } else {
                segment_path(dir, base_offset, suffix)
            }
        };
        let log_path = name(LOG_SUFFIX);
        let log = if cleaned {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&log_path)
                .ctx(|| format!("opening {}", log_path.display()))?
        } else {
            open_rw(&log_path, truncate)?
        };
        let index_path = name(INDEX_SUFFIX);
        let time_index_path = name(TIME_INDEX_SUFFIX);
        let indexes_existed = index_path.exists() && time_index_path.exists();
        let index = SparseIndex::new(open_rw(&index_path, truncate)?);
        let time_index = SparseIndex::new(open_rw(&time_index_path, truncate)?);
        let size = log
            .metadata()
            .ctx(|| format!("reading size of {}", log_path.display()))?
            .len();
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log,
            size,
            next_offset: base_offset,
            index,
            time_index,
            max_timestamp: None,
            bytes_since_index: 0,
            roll_base_ms: None,
            indexes_existed,
            cleaned,
        })
    }

    fn path(&self, suffix: &str) -> PathBuf {
        if self.cleaned {
            cleaned_path(&self.dir, self.base_offset, suffix)
        } else {
            segment_path(&self.dir, self.base_offset, suffix)
        }
    }

    /// The cleaned copy's files were renamed to the segment's own names.
    pub(crate) fn mark_installed(&mut self) {
        self.cleaned = false;
    }

    /// The `.log` file, for readers that work without the log's lock (the cleaner reads a
    /// duplicate of this descriptor, which stays valid whatever happens to the name).
    pub(crate) fn log_file(&self) -> &File {
        &self.log
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.max_timestamp
    }
    #[cfg(test)]
    pub(crate) fn index_len(&self) -> usize {
        self.index.entries().len()
    }

    /// Whether `offset` can be stored relative to this segment's base.
    pub(crate) fn fits_relative(&self, offset: i64) -> bool {
        offset >= self.base_offset && offset - self.base_offset <= i64::from(u32::MAX)
    }

    /// Loads the index files of a segment below the recovery point, whose
    /// data is known durable. `next_offset` is the following segment's base.
    /// Returns `Ok(false)` if an index is missing or malformed, in which
    /// case the caller rebuilds it with [`Segment::scan`].
    pub(crate) fn load_indexes(&mut self, next_offset: i64) -> Result<bool, StorageError> {
        self.next_offset = next_offset;
        if !self.indexes_existed {
            tracing::warn!(segment = %self.path(LOG_SUFFIX).display(), "index file missing, rebuilding");
            return Ok(false);
        }
        let span = next_offset - self.base_offset;
        let size = self.size;
        let Some(index) = self.index.load(&self.path(INDEX_SUFFIX), |entries| {
            entries
                .iter()
                .all(|e| i64::from(e.rel) < span && u64::from(e.position) < size)
        })?
        else {
            return Ok(false);
        };
        // A sealed non-empty segment always ends with a time entry.
        let Some(time_index) = self
            .time_index
            .load(&self.path(TIME_INDEX_SUFFIX), |entries| {
                entries.iter().all(|e| i64::from(e.rel) < span) && !(entries.is_empty() && size > 0)
            })?
        else {
            return Ok(false);
        };
        self.max_timestamp = time_index
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.rel)));
        self.bytes_since_index = self.size - index.last().map_or(0, |e| u64::from(e.position));
        self.index.set_entries(index);
        self.time_index.set_entries(time_index);
        Ok(true)
    }

    /// Reads every batch, checking length, CRC and offset continuity, and
    /// rebuilds both indexes from what it saw. At the first bad or incomplete
    /// batch the file is cut there. `now_ms` seeds the segment.ms clock.
    pub(crate) fn scan(
        &mut self,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<Option<Truncation>, StorageError> {
        let log_path = self.path(LOG_SUFFIX);
        let file_len = self.size;
        self.size = 0;
        self.next_offset = self.base_offset;
        self.index.clear();
        self.time_index.clear();
        self.max_timestamp = None;
        self.bytes_since_index = 0;
        self.roll_base_ms = None;

        let mut buf: Vec<u8> = Vec::new();
        let mut buf_pos: u64 = 0;
        let mut pos: u64 = 0;
        let mut problem: Option<String> = None;
        while pos < file_len {
            let avail = file_len - pos;
            if avail < HEADER_LEN as u64 {
                problem = Some(format!("incomplete batch header ({avail} bytes)"));
                break;
            }
            fill(
                &self.log,
                &log_path,
                &mut buf,
                &mut buf_pos,
                pos,
                HEADER_LEN as u64,
                file_len,
            )?;
            let at = (pos - buf_pos) as usize;
            let len_field = i32::from_be_bytes(
                buf[at + LENGTH_OFF..at + LENGTH_OFF + 4]
                    .try_into()
                    .expect("4"),
            );
            let Some(size) = batch::total_size_from_length(len_field) else {
                problem = Some(format!("invalid batchLength {len_field}"));
                break;
            };
            if size as u64 > avail {
                problem = Some(format!(
                    "incomplete batch: header says {size} bytes, {avail} present"
                ));
                break;
            }
            fill(
                &self.log,
                &log_path,
                &mut buf,
                &mut buf_pos,
                pos,
                size as u64,
                file_len,
            )?;
            let at = (pos - buf_pos) as usize;
            let bytes = &buf[at..at + size];
            if let Err(e) = batch::validate_stored_batches(bytes) {
                problem = Some(e.to_string());
                break;
            }
            let h = BatchHeader::new(bytes).expect("validated");
            let summary = HeaderSummary::parse(&h, pos).expect("validated");
            // Offsets only grow; a compacted segment may skip some (whole batches removed).
            if summary.base_offset < self.next_offset {
                problem = Some(format!(
                    "batch base offset {} where at least {} was expected",
                    summary.base_offset, self.next_offset
                ));
                break;
            }
            if !self.fits_relative(summary.last_offset) || pos + size as u64 > u64::from(u32::MAX) {
                problem = Some("batch does not fit the segment's 32-bit index".into());
                break;
            }
            if self.roll_base_ms.is_none() {
                self.roll_base_ms = Some(roll_base(summary.max_timestamp, now_ms));
            }
            self.track(&summary, index_interval);
            pos += size as u64;
        }
        self.write_indexes()?;
        match problem {
            None => Ok(None),
            Some(reason) => {
                self.log
                    .set_len(pos)
                    .ctx(|| format!("truncating {} to {pos} bytes", log_path.display()))?;
                Ok(Some(Truncation {
                    valid_bytes: pos,
                    dropped_bytes: file_len - pos,
                    reason,
                }))
            }
        }
    }

    /// Replaces both index files with the in-memory entries.
    fn write_indexes(&mut self) -> Result<(), StorageError> {
        self.index.write_all(&self.path(INDEX_SUFFIX))?;
        self.time_index.write_all(&self.path(TIME_INDEX_SUFFIX))
    }

    /// Updates metadata and in-memory indexes for a batch stored at
    /// `summary.position`; returns whether the offset and the time index got an entry.
    fn track(&mut self, s: &HeaderSummary, index_interval: u32) -> (bool, bool) {
        if !matches!(self.max_timestamp, Some((t, _)) if s.max_timestamp <= t) {
            self.max_timestamp = Some((s.max_timestamp, s.base_offset));
        }
        let mut added = (false, false);
        if self.bytes_since_index >= u64::from(index_interval) {
            self.index.push(OffsetEntry {
                rel: (s.base_offset - self.base_offset) as u32,
                position: s.position as u32,
            });
            added.0 = true;
            let (ts, off) = self.max_timestamp.expect("set above");
            if !matches!(self.time_index.last(), Some(l) if ts <= l.timestamp) {
                self.time_index.push(TimeEntry {
                    timestamp: ts,
                    rel: (off - self.base_offset) as u32,
                });
                added.1 = true;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += s.size;
        self.next_offset = s.last_offset + 1;
        self.size = s.position + s.size;
        added
    }

    /// Appends already validated and offset-assigned batches with a single
    /// write, then indexes them. `bytes` holds exactly `batches`, whose
    /// positions count from wherever the first one was found (a follower writes
    /// a fetched buffer in several runs). All or nothing: when the write or an
    /// index write fails, the files and the in-memory state are put back as they
    /// were, so the batches do not count as appended and a retry is no duplicate;
    /// if even that fails the error is [`StorageError::LogOffline`].
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        batches: &[batch::BatchInfo],
        index_interval: u32,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let mark = self.mark();
        let Err(e) = self.write_and_index(bytes, batches, index_interval, now_ms) else {
            return Ok(());
        };
        match self.undo(&mark) {
            Ok(()) => Err(e),
            Err(undo) => Err(StorageError::LogOffline(format!(
                "{e}; cutting the segment back failed too: {undo}"
            ))),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            bytes_since_index: self.bytes_since_index,
            roll_base_ms: self.roll_base_ms,
            index_len: self.index.len(),
            time_index_len: self.time_index.len(),
        }
    }

    /// Puts the segment back to `mark`, on disk and in memory.
    fn undo(&mut self, mark: &Mark) -> Result<(), StorageError> {
        self.size = mark.size;
        self.next_offset = mark.next_offset;
        self.max_timestamp = mark.max_timestamp;
        self.bytes_since_index = mark.bytes_since_index;
        self.roll_base_ms = mark.roll_base_ms;
        let (index_path, time_path) = (self.path(INDEX_SUFFIX), self.path(TIME_INDEX_SUFFIX));
        self.index.truncate(mark.index_len, &index_path)?;
        self.time_index.truncate(mark.time_index_len, &time_path)?;
        self.log
            .set_len(mark.size)
            .ctx(|| format!("truncating {}", self.path(LOG_SUFFIX).display()))
    }

    fn write_and_index(
        &mut self,
        bytes: &[u8],
        batches: &[batch::BatchInfo],
        index_interval: u32,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let start = self.size;
        failpoints::inject(failpoints::SEGMENT_WRITE)
            .and_then(|()| self.log.write_all_at(bytes, start))
            .ctx(|| {
                format!(
                    "appending {} bytes to {}",
                    bytes.len(),
                    self.path(LOG_SUFFIX).display()
                )
            })?;
        if self.roll_base_ms.is_none() {
            self.roll_base_ms = Some(now_ms);
        }
        let origin = batches.first().map_or(0, |b| b.position);
        for b in batches {
            let s = HeaderSummary {
                position: start + (b.position - origin) as u64,
                base_offset: b.base_offset,
                last_offset: b.last_offset(),
                size: b.size as u64,
                max_timestamp: b.max_timestamp,
                leader_epoch: b.partition_leader_epoch,
            };
            let (idx, tidx) = self.track(&s, index_interval);
            if idx {
                self.write_index_entry()?;
            }
            if tidx {
                self.write_time_entry()?;
            }
        }
        Ok(())
    }

    /// Writes the entry [`Segment::track`] just added to the offset index.
    fn write_index_entry(&mut self) -> Result<(), StorageError> {
        let path = self.path(INDEX_SUFFIX);
        self.index.write_last(&path)
    }

    /// Writes the entry just added to the time index.
    fn write_time_entry(&mut self) -> Result<(), StorageError> {
        let path = self.path(TIME_INDEX_SUFFIX);
        self.time_index.write_last(&path)
    }

    /// Called when the segment stops being active: records its final max
    /// timestamp in the time index so a later open can learn it without
    /// scanning (as Kafka does on roll).
    pub(crate) fn seal(&mut self) -> Result<(), StorageError> {
        if let Some((ts, off)) = self.max_timestamp {
            if !matches!(self.time_index.last(), Some(l) if ts <= l.timestamp) {
                self.time_index.push(TimeEntry {
                    timestamp: ts,
                    rel: (off - self.base_offset) as u32,
                });
                self.write_time_entry()?;
            }
        }
        Ok(())
    }

    /// fsyncs the log and both indexes.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        failpoints::inject(failpoints::SEGMENT_FSYNC)
            .and_then(|()| self.log.sync_data())
            .ctx(|| format!("fsync of {}", self.path(LOG_SUFFIX).display()))?;
        self.index.sync(&self.path(INDEX_SUFFIX))?;
        self.time_index.sync(&self.path(TIME_INDEX_SUFFIX))
    }

    /// Removes the segment's files; the `.log` first so that a crash midway
    /// leaves only stray index files, which open() cleans up.
    pub(crate) fn delete_files(self) -> Result<(), StorageError> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let p = self.path(suffix);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(format!("deleting {}", p.display()), e)),
            }
        }
        Ok(())
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StorageError> {
        self.log.read_exact_at(buf, pos).ctx(|| {
            format!(
                "reading {} bytes of {} at byte {pos}",
                buf.len(),
                self.path(LOG_SUFFIX).display()
            )
        })
    }

    /// Position of the last indexed batch starting at or before `offset`.
    fn index_lookup(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let index = self.index.entries();
        let i = index.partition_point(|e| e.rel <= rel);
        if i == 0 {
            0
        } else {
            u64::from(index[i - 1].position)
        }
    }

    /// Calls `f` with each batch header from `start` (a batch boundary) to
    /// the end of the segment until it returns false.
    pub(crate) fn walk_headers(
        &self,
        start: u64,
        mut f: impl FnMut(&HeaderSummary) -> bool,
    ) -> Result<(), StorageError> {
        let mut chunk = Vec::new();
        let mut chunk_pos = 0u64;
        let mut pos = start;
        while pos < self.size {
            let in_chunk =
                pos >= chunk_pos && pos + HEADER_LEN as u64 <= chunk_pos + chunk.len() as u64;
            if !in_chunk {
                let len = (WALK_CHUNK as u64).min(self.size - pos) as usize;
                if len < HEADER_LEN {
                    return Err(self.corrupt(pos, "partial header"));
                }
                chunk.resize(len, 0);
                self.read_exact_at(&mut chunk, pos)?;
                chunk_pos = pos;
            }
            let at = (pos - chunk_pos) as usize;
            let h = BatchHeader::new(&chunk[at..]).expect("length checked");
            let s = HeaderSummary::parse(&h, pos)
                .filter(|s| pos + s.size <= self.size)
                .ok_or_else(|| self.corrupt(pos, "bad batch length"))?;
            if !f(&s) {
                return Ok(());
            }
            pos += s.size;
        }
        Ok(())
    }

    fn corrupt(&self, pos: u64, what: &str) -> StorageError {
        StorageError::CorruptDataDir(format!(
            "{} changed on disk: {what} at byte {pos}",
            self.path(LOG_SUFFIX).display()
        ))
    }

    /// The batch containing `offset`, or the first batch after it if
    /// `offset` falls in a gap; `None` if the segment ends before it.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<HeaderSummary>, StorageError> {
        let mut found = None;
        self.walk_headers(self.index_lookup(offset), |s| {
            if s.last_offset >= offset {
                found = Some(*s);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// The first batch whose maxTimestamp >= `ts`, using the time index to
    /// skip batches known to be older.
    pub(crate) fn find_timestamp(&self, ts: i64) -> Result<Option<HeaderSummary>, StorageError> {
        let time_index = self.time_index.entries();
        let i = time_index.partition_point(|e| e.timestamp < ts);
        let start = if i == 0 {
            0
        } else {
            self.index_lookup(self.base_offset + i64::from(time_index[i - 1].rel))
        };
        let mut found = None;
        self.walk_headers(start, |s| {
            if s.max_timestamp >= ts {
                found = Some(*s);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// Cuts the segment at `position` (a batch boundary), dropping index
    /// entries past it and recomputing the max timestamp and the next offset.
    /// The next offset is read from the batches that remain, not taken from the
    /// cut: offsets may skip ahead (compaction, a follower's copy of a compacted
    /// log), and a segment loaded without a scan only knows the next segment's base.
    pub(crate) fn truncate_to_position(&mut self, position: u64) -> Result<(), StorageError> {
        self.log.set_len(position).ctx(|| {
            format!(
                "truncating {} to {position} bytes",
                self.path(LOG_SUFFIX).display()
            )
        })?;
        self.size = position;
        let mut max = None;
        let mut next_offset = self.base_offset;
        self.walk_headers(0, |s| {
            if !matches!(max, Some((t, _)) if s.max_timestamp <= t) {
                max = Some((s.max_timestamp, s.base_offset));
            }
            next_offset = s.last_offset + 1;
            true
        })?;
        self.max_timestamp = max;
        self.next_offset = next_offset;
        let rel_end = next_offset - self.base_offset;
        self.index.retain(|e| u64::from(e.position) < position);
        self.time_index.retain(|e| i64::from(e.rel) < rel_end);
        self.bytes_since_index = position - self.index.last().map_or(0, |e| u64::from(e.position));
        if position == 0 {
            self.roll_base_ms = None;
        }
        self.write_indexes()
    }

    /// Reads the first batch's maxTimestamp to restart the segment.ms clock
    /// of a segment that becomes active again.
    pub(crate) fn init_roll_base(&mut self, now_ms: i64) -> Result<(), StorageError> {
        if self.roll_base_ms.is_none() && self.size > 0 {
            let mut first = None;
            self.walk_headers(0, |s| {
                first = Some(s.max_timestamp);
                false
            })?;
            self.roll_base_ms = first.map(|ts| roll_base(ts, now_ms));
        }
        Ok(())
    }
}

/// Like Kafka, segment age after a restart is measured from the first
/// batch's timestamp (clamped so clock skew cannot postpone the roll),
/// falling back to now when the batch carries no timestamp.
fn roll_base(first_batch_max_ts: i64, now_ms: i64) -> i64 {
    if first_batch_max_ts >= 0 {
        first_batch_max_ts.min(now_ms)
    } else {
        now_ms
    }
}

/// Makes sure `buf` (holding file bytes from `*buf_pos`) covers `need`
/// bytes from `pos`, reading a large chunk when it does not.
fn fill(
    file: &File,
    path: &Path,
    buf: &mut Vec<u8>,
    buf_pos: &mut u64,
    pos: u64,
    need: u64,
    file_len: u64,
) -> Result<(), StorageError> {
    if pos >= *buf_pos && pos + need <= *buf_pos + buf.len() as u64 {
        return Ok(());
    }
    let len = need.max(SCAN_CHUNK as u64).min(file_len - pos) as usize;
    buf.resize(len, 0);
    file.read_exact_at(buf, pos)
        .ctx(|| format!("reading {} at byte {pos}", path.display()))?;
    *buf_pos = pos;
    Ok(())
}
