//! One segment: a `.log` file of whole batches plus its sparse `.index`
//! (relative offset u32 → file position u32) and `.timeindex`
//! (timestamp i64 → relative offset u32). A segment knows nothing about the
//! topic or the other segments; [`crate::log::PartitionLog`] owns the policy.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, HEADER_LEN, LENGTH_OFF};
use crate::error::{IoContext, StorageError};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
const INDEX_ENTRY: usize = 8;
const TIME_INDEX_ENTRY: usize = 12;
/// Read granularity when walking headers: small enough to be cheap when the
/// sparse index lands close, large enough to cover many small batches.
const WALK_CHUNK: usize = 8 * 1024;
/// Read granularity of the recovery scan, which must read every byte anyway.
const SCAN_CHUNK: usize = 1024 * 1024;

/// Offset index entry: (offset relative to the segment base, file position).
type IndexEntry = (u32, u32);
/// Time index entry: (timestamp, relative offset of the batch holding it).
type TimeEntry = (i64, u32);

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
    index_file: File,
    time_index_file: File,
    size: u64,
    next_offset: i64,
    index: Vec<IndexEntry>,
    time_index: Vec<TimeEntry>,
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
        let index_file = open_rw(&index_path, truncate)?;
        let time_index_file = open_rw(&time_index_path, truncate)?;
        let size = log
            .metadata()
            .ctx(|| format!("reading size of {}", log_path.display()))?
            .len();
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log,
            index_file,
            time_index_file,
            size,
            next_offset: base_offset,
            index: Vec::new(),
            time_index: Vec::new(),
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
        self.index.len()
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
        let read_all = |f: &File, what: &str| -> Result<Vec<u8>, StorageError> {
            let len = f
                .metadata()
                .ctx(|| format!("reading size of {}", self.path(what).display()))?
                .len();
            let mut buf = vec![0; len as usize];
            f.read_exact_at(&mut buf, 0)
                .ctx(|| format!("reading {}", self.path(what).display()))?;
            Ok(buf)
        };
        let raw = read_all(&self.index_file, INDEX_SUFFIX)?;
        if raw.len() % INDEX_ENTRY != 0 {
            tracing::warn!(segment = %self.path(INDEX_SUFFIX).display(), bytes = raw.len(), "offset index size is not a multiple of 8, rebuilding");
            return Ok(false);
        }
        let index: Vec<(u32, u32)> = raw
            .chunks_exact(INDEX_ENTRY)
            .map(|c| {
                (
                    u32::from_be_bytes(c[..4].try_into().expect("4")),
                    u32::from_be_bytes(c[4..].try_into().expect("4")),
                )
            })
            .collect();
        let index_ok = index.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && index
                .iter()
                .all(|&(rel, pos)| i64::from(rel) < span && u64::from(pos) < self.size);
        if !index_ok {
            tracing::warn!(segment = %self.path(INDEX_SUFFIX).display(), "offset index entries are out of order or beyond the log, rebuilding");
            return Ok(false);
        }
        let raw = read_all(&self.time_index_file, TIME_INDEX_SUFFIX)?;
        if raw.len() % TIME_INDEX_ENTRY != 0 {
            tracing::warn!(segment = %self.path(TIME_INDEX_SUFFIX).display(), bytes = raw.len(), "time index size is not a multiple of 12, rebuilding");
            return Ok(false);
        }
        let time_index: Vec<(i64, u32)> = raw
            .chunks_exact(TIME_INDEX_ENTRY)
            .map(|c| {
                (
                    i64::from_be_bytes(c[..8].try_into().expect("8")),
                    u32::from_be_bytes(c[8..].try_into().expect("4")),
                )
            })
            .collect();
        let time_ok = time_index
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && time_index.iter().all(|&(_, rel)| i64::from(rel) < span);
        if !time_ok || (time_index.is_empty() && self.size > 0) {
            // A sealed non-empty segment always ends with a time entry.
            tracing::warn!(segment = %self.path(TIME_INDEX_SUFFIX).display(), "time index is empty or its entries are out of order, rebuilding");
            return Ok(false);
        }
        self.max_timestamp = time_index
            .last()
            .map(|&(ts, rel)| (ts, self.base_offset + i64::from(rel)));
        self.bytes_since_index = self.size - index.last().map_or(0, |e| u64::from(e.1));
        self.index = index;
        self.time_index = time_index;
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
        let mut raw = Vec::with_capacity(self.index.len() * INDEX_ENTRY);
        for &(rel, pos) in &self.index {
            raw.extend_from_slice(&rel.to_be_bytes());
            raw.extend_from_slice(&pos.to_be_bytes());
        }
        replace_contents(&self.index_file, &raw, &self.path(INDEX_SUFFIX))?;
        let mut raw = Vec::with_capacity(self.time_index.len() * TIME_INDEX_ENTRY);
        for &(ts, rel) in &self.time_index {
            raw.extend_from_slice(&ts.to_be_bytes());
            raw.extend_from_slice(&rel.to_be_bytes());
        }
        replace_contents(&self.time_index_file, &raw, &self.path(TIME_INDEX_SUFFIX))
    }

    /// Updates metadata and in-memory indexes for a batch stored at
    /// `summary.position`; returns the index entries that became due.
    fn track(
        &mut self,
        s: &HeaderSummary,
        index_interval: u32,
    ) -> (Option<IndexEntry>, Option<TimeEntry>) {
        if !matches!(self.max_timestamp, Some((t, _)) if s.max_timestamp <= t) {
            self.max_timestamp = Some((s.max_timestamp, s.base_offset));
        }
        let mut entries = (None, None);
        if self.bytes_since_index >= u64::from(index_interval) {
            let e = ((s.base_offset - self.base_offset) as u32, s.position as u32);
            self.index.push(e);
            entries.0 = Some(e);
            let (ts, off) = self.max_timestamp.expect("set above");
            if !matches!(self.time_index.last(), Some(l) if ts <= l.0) {
                let te = (ts, (off - self.base_offset) as u32);
                self.time_index.push(te);
                entries.1 = Some(te);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += s.size;
        self.next_offset = s.last_offset + 1;
        self.size = s.position + s.size;
        entries
    }

    /// Appends already validated and offset-assigned batches with a single
    /// write, then indexes them. On a failed write the file is cut back so
    /// disk and memory agree.
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        batches: &[batch::BatchInfo],
        index_interval: u32,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let start = self.size;
        if let Err(e) = self.log.write_all_at(bytes, start) {
            let _ = self.log.set_len(start);
            return Err(StorageError::io(
                format!(
                    "appending {} bytes to {}",
                    bytes.len(),
                    self.path(LOG_SUFFIX).display()
                ),
                e,
            ));
        }
        if self.roll_base_ms.is_none() {
            self.roll_base_ms = Some(now_ms);
        }
        for b in batches {
            let s = HeaderSummary {
                position: start + b.position as u64,
                base_offset: b.base_offset,
                last_offset: b.last_offset(),
                size: b.size as u64,
                max_timestamp: b.max_timestamp,
                leader_epoch: b.partition_leader_epoch,
            };
            let (idx, tidx) = self.track(&s, index_interval);
            if let Some(e) = idx {
                self.write_index_entry(e)?;
            }
            if let Some(e) = tidx {
                self.write_time_entry(e)?;
            }
        }
        Ok(())
    }

    fn write_index_entry(&mut self, (rel, pos): (u32, u32)) -> Result<(), StorageError> {
        let mut e = [0u8; INDEX_ENTRY];
        e[..4].copy_from_slice(&rel.to_be_bytes());
        e[4..].copy_from_slice(&pos.to_be_bytes());
        let at = ((self.index.len() - 1) * INDEX_ENTRY) as u64;
        self.index_file
            .write_all_at(&e, at)
            .ctx(|| format!("writing {}", self.path(INDEX_SUFFIX).display()))
    }

    fn write_time_entry(&mut self, (ts, rel): (i64, u32)) -> Result<(), StorageError> {
        let mut e = [0u8; TIME_INDEX_ENTRY];
        e[..8].copy_from_slice(&ts.to_be_bytes());
        e[8..].copy_from_slice(&rel.to_be_bytes());
        let at = ((self.time_index.len() - 1) * TIME_INDEX_ENTRY) as u64;
        self.time_index_file
            .write_all_at(&e, at)
            .ctx(|| format!("writing {}", self.path(TIME_INDEX_SUFFIX).display()))
    }

    /// Called when the segment stops being active: records its final max
    /// timestamp in the time index so a later open can learn it without
    /// scanning (as Kafka does on roll).
    pub(crate) fn seal(&mut self) -> Result<(), StorageError> {
        if let Some((ts, off)) = self.max_timestamp {
            if !matches!(self.time_index.last(), Some(l) if ts <= l.0) {
                let e = (ts, (off - self.base_offset) as u32);
                self.time_index.push(e);
                self.write_time_entry(e)?;
            }
        }
        Ok(())
    }

    /// fsyncs the log and both indexes.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        for (f, suffix) in [
            (&self.log, LOG_SUFFIX),
            (&self.index_file, INDEX_SUFFIX),
            (&self.time_index_file, TIME_INDEX_SUFFIX),
        ] {
            f.sync_data()
                .ctx(|| format!("fsync of {}", self.path(suffix).display()))?;
        }
        Ok(())
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
        let i = self.index.partition_point(|e| e.0 <= rel);
        if i == 0 {
            0
        } else {
            u64::from(self.index[i - 1].1)
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
        let i = self.time_index.partition_point(|e| e.0 < ts);
        let start = if i == 0 {
            0
        } else {
            self.index_lookup(self.base_offset + i64::from(self.time_index[i - 1].1))
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
    /// entries past it and recomputing the max timestamp.
    pub(crate) fn truncate_to_position(
        &mut self,
        position: u64,
        next_offset: i64,
    ) -> Result<(), StorageError> {
        self.log.set_len(position).ctx(|| {
            format!(
                "truncating {} to {position} bytes",
                self.path(LOG_SUFFIX).display()
            )
        })?;
        self.size = position;
        self.next_offset = next_offset;
        let rel_end = next_offset - self.base_offset;
        self.index.retain(|e| u64::from(e.1) < position);
        self.time_index.retain(|e| i64::from(e.1) < rel_end);
        self.max_timestamp = None;
        let mut max = None;
        self.walk_headers(0, |s| {
            if !matches!(max, Some((t, _)) if s.max_timestamp <= t) {
                max = Some((s.max_timestamp, s.base_offset));
            }
            true
        })?;
        self.max_timestamp = max;
        self.bytes_since_index = position - self.index.last().map_or(0, |e| u64::from(e.1));
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

fn replace_contents(f: &File, raw: &[u8], path: &Path) -> Result<(), StorageError> {
    f.set_len(0)
        .ctx(|| format!("truncating {}", path.display()))?;
    f.write_all_at(raw, 0)
        .ctx(|| format!("writing {}", path.display()))
}
