//! Idempotent-producer state of one partition, after Kafka's `ProducerStateManager` and
//! `ProducerAppendInfo`.
//!
//! For every producer id that wrote to the partition the leader keeps the epoch, the metadata
//! of its last five batches (sequence range and offsets) and the timestamp of its last batch.
//! Before an append (inside the partition's log mutex) every batch with a producer id is
//! checked: an exact retry of one of the last five batches is a duplicate and is answered
//! with the original offsets; an older epoch is fenced (INVALID_PRODUCER_EPOCH); a sequence
//! that does not follow the last one is OUT_OF_ORDER_SEQUENCE_NUMBER; a newer epoch resets
//! the producer and must start at sequence 0. After the append the state records the offsets
//! the log assigned. Batches without a producer id skip all of this.
//!
//! The state is rebuilt on open from the newest valid snapshot (`<20-digit offset>.snapshot`
//! in the partition directory) plus the batch headers after it; see [`ProducerStateManager::
//! load`]. Snapshots are versioned and carry a CRC-32C so a torn one is detected and skipped.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use runnel_storage::batch::{BatchHeader, TIMESTAMP_TYPE_BIT};
use runnel_storage::{failpoints, PartitionLog, SNAPSHOT_SUFFIX};

use kafka_protocol::ResponseError;

/// Batches remembered per producer for duplicate detection (Kafka's
/// `NUM_BATCHES_TO_RETAIN`, which is also the client's max in-flight requests).
pub const BATCHES_TO_RETAIN: usize = 5;
/// A periodic snapshot is taken once this many bytes were appended since the last one, so a
/// restart after a crash scans at most about this much of the log.
pub const SNAPSHOT_INTERVAL_BYTES: u64 = 16 << 20;
/// Snapshot files kept per partition.
const SNAPSHOTS_KEPT: usize = 2;

const SNAPSHOT_MAGIC: &[u8; 4] = b"RNPS";
const SNAPSHOT_VERSION: u16 = 1;
/// magic + version + crc
const SNAPSHOT_PREFIX: usize = 4 + 2 + 4;
const ENTRY_LEN: usize = 8 + 2 + 8 + 1;
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8 + 8;
const TMP_NAME: &str = "producer-state.tmp";

/// A sequence check failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error(
        "out of order sequence number for producer {producer_id} epoch {epoch}: expected \
         sequence {expected}, got {got}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id} sent epoch {epoch}, older than its current epoch {current} \
         (fenced)"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
}

impl ProducerError {
    pub fn code(&self) -> ResponseError {
        match self {
            ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            ProducerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        }
    }
}

/// One appended batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp (the broker clock under LogAppendTime).
    pub max_timestamp: i64,
    /// The LogAppendTime stamped into the batch, -1 under CreateTime.
    pub log_append_time: i64,
}

/// What the partition knows of one producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`BATCHES_TO_RETAIN`].
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of its last batch, for expiration (as Kafka does).
    pub last_timestamp: i64,
}

impl ProducerEntry {
    fn last_seq(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// The header fields of one batch that the checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
}

impl ProducerBatch {
    pub fn from_header(h: &BatchHeader<'_>) -> Self {
        Self {
            producer_id: h.producer_id(),
            epoch: h.producer_epoch(),
            first_seq: h.base_sequence(),
            last_offset_delta: h.last_offset_delta(),
            max_timestamp: h.max_timestamp(),
        }
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    pub fn last_seq(&self) -> i32 {
        increment_sequence(self.first_seq, self.last_offset_delta)
    }
}

/// `seq + delta`, wrapping past i32::MAX to 0 like Kafka's `DefaultRecordBatch.incrementSequence`.
pub fn increment_sequence(seq: i32, delta: i32) -> i32 {
    if seq > i32::MAX - delta {
        delta - (i32::MAX - seq) - 1
    } else {
        seq + delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// The outcome of checking a request's batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Nothing idempotent, or all checks passed: append.
    Append,
    /// A retry of an appended batch: answer with its original offsets, append nothing.
    Duplicate {
        producer_id: i64,
        batch: BatchMetadata,
    },
}

/// The producer state of one partition. Owned by the partition and only used under its log
/// mutex.
#[derive(Debug)]
pub struct ProducerStateManager {
    dir: PathBuf,
    producers: HashMap<i64, ProducerEntry>,
    expiration_ms: i64,
    bytes_since_snapshot: u64,
}

impl ProducerStateManager {
    /// An empty state for the partition in `dir` (no file is touched).
    pub fn new(dir: &Path, expiration_ms: i64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            producers: HashMap::new(),
            expiration_ms,
            bytes_since_snapshot: 0,
        }
    }

    pub fn producers(&self) -> &HashMap<i64, ProducerEntry> {
        &self.producers
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks the batches of one append, in order, against the state plus the batches before
    /// them in the same request (Kafka's `analyzeAndValidateProducerState` for a client
    /// append). A duplicate anywhere answers the whole request, as in Kafka.
    pub fn check(&self, batches: &[ProducerBatch]) -> Result<CheckOutcome, ProducerError> {
        // (producer id, epoch, last sequence) of earlier batches of this request; tiny.
        let mut pending: Vec<(i64, i16, i32)> = Vec::new();
        for b in batches.iter().filter(|b| b.is_idempotent()) {
            let committed = self.producers.get(&b.producer_id);
            if let Some(dup) =
                committed.and_then(|e| e.find_duplicate(b.epoch, b.first_seq, b.last_seq()))
            {
                return Ok(CheckOutcome::Duplicate {
                    producer_id: b.producer_id,
                    batch: dup,
                });
            }
            let current = pending
                .iter()
                .rev()
                .find(|p| p.0 == b.producer_id)
                .map(|p| (p.1, p.2))
                .or_else(|| committed.map(|e| (e.epoch, e.last_seq())));
            if let Some((epoch, last_seq)) = current {
                if b.epoch < epoch {
                    return Err(ProducerError::InvalidProducerEpoch {
                        producer_id: b.producer_id,
                        epoch: b.epoch,
                        current: epoch,
                    });
                }
                if b.epoch != epoch {
                    // A new epoch starts the producer's sequences over.
                    if b.first_seq != 0 {
                        return Err(ProducerError::OutOfOrderSequence {
                            producer_id: b.producer_id,
                            epoch: b.epoch,
                            expected: 0,
                            got: b.first_seq,
                        });
                    }
                } else if !in_sequence(last_seq, b.first_seq) {
                    return Err(ProducerError::OutOfOrderSequence {
                        producer_id: b.producer_id,
                        epoch: b.epoch,
                        expected: increment_sequence(last_seq, 1),
                        got: b.first_seq,
                    });
                }
            }
            // An unknown producer (new, or expired) may start at any sequence, like Kafka
            // since KIP-360.
            pending.push((b.producer_id, b.epoch, b.last_seq()));
        }
        Ok(CheckOutcome::Append)
    }

    /// Records an appended batch (or one found in the log on load): no checks.
    pub fn update(&mut self, b: &ProducerBatch, first_offset: i64, log_append_time: i64) {
        if !b.is_idempotent() {
            return;
        }
        let max_timestamp = if log_append_time >= 0 {
            log_append_time
        } else {
            b.max_timestamp
        };
        let entry = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: b.epoch,
                batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
                last_timestamp: max_timestamp,
            });
        if entry.epoch != b.epoch {
            entry.epoch = b.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_seq: b.first_seq,
            last_seq: b.last_seq(),
            first_offset,
            last_offset: first_offset + i64::from(b.last_offset_delta),
            max_timestamp,
            log_append_time,
        });
        entry.last_timestamp = max_timestamp;
    }

    /// Counts appended bytes; true once a periodic snapshot is due.
    pub fn note_appended(&mut self, bytes: usize) -> bool {
        self.bytes_since_snapshot = self.bytes_since_snapshot.saturating_add(bytes as u64);
        self.bytes_since_snapshot >= SNAPSHOT_INTERVAL_BYTES
    }

    /// Forgets producers whose last batch is older than `producer.id.expiration.ms`.
    pub fn remove_expired(&mut self, now_ms: i64) -> usize {
        let before = self.producers.len();
        let expiration = self.expiration_ms;
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration);
        before - self.producers.len()
    }

    // ---- snapshots --------------------------------------------------------------------

    fn snapshot_path(&self, offset: i64) -> PathBuf {
        self.dir.join(format!("{offset:020}.{SNAPSHOT_SUFFIX}"))
    }

    /// Expires idle producers and writes the state as of `offset` (the log end offset), then
    /// keeps only the newest [`SNAPSHOTS_KEPT`] snapshots. `sync` fsyncs file and directory
    /// (clean shutdown); periodic snapshots skip it: a torn one fails its CRC on load and the
    /// previous one (or the log itself) is used instead.
    pub fn write_snapshot(&mut self, offset: i64, now_ms: i64, sync: bool) -> std::io::Result<()> {
        if self.bytes_since_snapshot == 0 && self.snapshot_path(offset).exists() {
            return Ok(()); // nothing appended since that snapshot
        }
        let expired = self.remove_expired(now_ms);
        if expired > 0 {
            tracing::info!(dir = %self.dir.display(), expired, "expired idle producer ids");
        }
        let bytes = encode_snapshot(offset, &self.producers);
        let tmp = self.dir.join(TMP_NAME);
        let mut f = fs::File::create(&tmp)?;
        failpoints::inject(failpoints::PRODUCER_SNAPSHOT_WRITE)?;
        f.write_all(&bytes)?;
        if sync {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, self.snapshot_path(offset))?;
        if sync {
            fs::File::open(&self.dir)?.sync_all()?;
        }
        self.bytes_since_snapshot = 0;
        let mut all = list_snapshots(&self.dir);
        all.sort_unstable_by(|a, b| b.cmp(a));
        for old in all.into_iter().skip(SNAPSHOTS_KEPT) {
            let _ = fs::remove_file(self.snapshot_path(old));
        }
        Ok(())
    }

    /// Forgets every producer and deletes every snapshot (Kafka's `ProducerStateManager.
    /// truncateFullyAndStartAt`), for a log about to restart empty past records this replica
    /// never saw: a snapshot at or below the new start would otherwise pass for the state
    /// there. The deletions are fsynced so they reach disk before the log is emptied.
    pub fn truncate_fully(&mut self) -> std::io::Result<()> {
        self.producers.clear();
        self.bytes_since_snapshot = 0;
        for offset in list_snapshots(&self.dir) {
            match fs::remove_file(self.snapshot_path(offset)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Rebuilds the state of `log`: the newest valid snapshot at or below the log end (corrupt
    /// and future ones are deleted with a warning), then the headers of the batches after it,
    /// read in chunks. Records are never decoded.
    pub fn load(log: &PartitionLog, expiration_ms: i64) -> Self {
        let dir = log.dir();
        let mut state = Self::new(dir, expiration_ms);
        let _ = fs::remove_file(dir.join(TMP_NAME));
        let log_end = log.log_end_offset();
        let mut snapshots = list_snapshots(dir);
        snapshots.sort_unstable_by(|a, b| b.cmp(a));
        let mut from = log.log_start_offset();
        for offset in snapshots {
            let path = state.snapshot_path(offset);
            if offset > log_end {
                tracing::warn!(file = %path.display(), log_end, "deleting a producer-state snapshot past the log end");
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| decode_snapshot(&b))
            {
                Ok((snap_offset, producers)) if snap_offset == offset => {
                    state.producers = producers;
                    from = from.max(offset);
                    break;
                }
                Ok((snap_offset, _)) => {
                    tracing::warn!(file = %path.display(), snap_offset, "deleting a producer-state snapshot whose offset does not match its name");
                    let _ = fs::remove_file(&path);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "deleting a corrupt producer-state snapshot");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        if let Err(e) = state.scan_log(log, from) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot rebuild producer state from the log; duplicates of batches written before the restart may not be recognised");
        }
        state
    }

    /// Applies the batch headers of `log` from `from` to the log end.
    fn scan_log(
        &mut self,
        log: &PartitionLog,
        from: i64,
    ) -> Result<(), runnel_storage::StorageError> {
        const CHUNK: usize = 1 << 20;
        let log_end = log.log_end_offset();
        let mut next = from;
        while next < log_end {
            let read = log.read(next, CHUNK, log_end, true)?;
            let buf = &read.records[..];
            if buf.is_empty() {
                break;
            }
            let (consumed, after) = self.apply_stored_batches(buf, next);
            next = after;
            if consumed == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Applies the producer fields of stored batches (offsets already assigned) that end at
    /// or after `from`, as replayed from the log or copied from a leader by a follower.
    /// Returns the bytes of whole batches consumed and the offset after the last batch
    /// applied (`from` when none was).
    pub fn apply_stored_batches(&mut self, buf: &[u8], from: i64) -> (usize, i64) {
        let mut next = from;
        let mut pos = 0;
        while let Some(h) = buf.get(pos..).and_then(BatchHeader::new) {
            let Some(size) = h.total_size().filter(|s| pos + s <= buf.len()) else {
                break;
            };
            if h.last_offset() >= next {
                let append_time = if h.attributes() & TIMESTAMP_TYPE_BIT != 0 {
                    h.max_timestamp()
                } else {
                    -1
                };
                self.update(
                    &ProducerBatch::from_header(&h),
                    h.base_offset(),
                    append_time,
                );
                next = h.last_offset() + 1;
            }
            pos += size;
        }
        (pos, next)
    }
}

fn list_snapshots(dir: &Path) -> Vec<i64> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (stem, suffix) = name.to_str()?.split_once('.')?;
            (suffix == SNAPSHOT_SUFFIX && stem.len() == 20)
                .then(|| stem.parse::<i64>().ok())
                .flatten()
        })
        .collect()
}

/// Layout (big-endian): magic "RNPS", version u16, CRC-32C u32 of everything after it, then
/// offset i64, producer count u32, and per producer: id i64, epoch i16, last timestamp i64,
/// batch count u8, and per batch: first seq i32, last seq i32, first offset i64, last offset
/// i64, max timestamp i64, log append time i64.
fn encode_snapshot(offset: i64, producers: &HashMap<i64, ProducerEntry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        SNAPSHOT_PREFIX + 12 + producers.len() * (ENTRY_LEN + BATCHES_TO_RETAIN * BATCH_LEN),
    );
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
    let mut ids: Vec<&i64> = producers.keys().collect();
    ids.sort_unstable();
    for id in ids {
        let e = &producers[id];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.last_timestamp.to_be_bytes());
        out.push(e.batches.len() as u8);
        for b in &e.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.first_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
            out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            out.extend_from_slice(&b.log_append_time.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&out[SNAPSHOT_PREFIX..]);
    out[6..10].copy_from_slice(&crc.to_be_bytes());
    out
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.pos + N;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        self.pos = end;
        Ok(bytes.try_into().expect("N bytes"))
    }
    fn i16(&mut self) -> Result<i16, String> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.take().map(i64::from_be_bytes)
    }
}

type Decoded = (i64, HashMap<i64, ProducerEntry>);

fn decode_snapshot(buf: &[u8]) -> Result<Decoded, String> {
    if buf.len() < SNAPSHOT_PREFIX || &buf[..4] != SNAPSHOT_MAGIC {
        return Err("not a producer-state snapshot".into());
    }
    let version = u16::from_be_bytes([buf[4], buf[5]]);
    if version != SNAPSHOT_VERSION {
        return Err(format!("unknown snapshot version {version}"));
    }
    let stored = u32::from_be_bytes(buf[6..10].try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(&buf[SNAPSHOT_PREFIX..]);
    if stored != actual {
        return Err(format!("CRC {stored:#010x}, computed {actual:#010x}"));
    }
    let mut c = Cursor {
        buf,
        pos: SNAPSHOT_PREFIX,
    };
    let offset = c.i64()?;
    let count = c.i32()? as u32;
    let mut producers = HashMap::with_capacity((count as usize).min(1 << 16));
    for _ in 0..count {
        let id = c.i64()?;
        let epoch = c.i16()?;
        let last_timestamp = c.i64()?;
        let n = c.take::<1>()?[0] as usize;
        if n > BATCHES_TO_RETAIN {
            return Err(format!("producer {id} has {n} batches"));
        }
        let mut batches = VecDeque::with_capacity(BATCHES_TO_RETAIN);
        for _ in 0..n {
            batches.push_back(BatchMetadata {
                first_seq: c.i32()?,
                last_seq: c.i32()?,
                first_offset: c.i64()?,
                last_offset: c.i64()?,
                max_timestamp: c.i64()?,
                log_append_time: c.i64()?,
            });
        }
        producers.insert(
            id,
            ProducerEntry {
                epoch,
                batches,
                last_timestamp,
            },
        );
    }
    if c.pos != buf.len() {
        return Err(format!("{} trailing bytes", buf.len() - c.pos));
    }
    Ok((offset, producers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, records: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq: seq,
            last_offset_delta: records - 1,
            max_timestamp: 1_000,
        }
    }

    /// Checks and, if accepted, applies at `*next` like an append would.
    fn append(
        s: &mut ProducerStateManager,
        b: ProducerBatch,
        next: &mut i64,
    ) -> Result<CheckOutcome, ProducerError> {
        let out = s.check(&[b])?;
        if out == CheckOutcome::Append {
            s.update(&b, *next, -1);
            *next += i64::from(b.last_offset_delta) + 1;
        }
        Ok(out)
    }

    fn state() -> ProducerStateManager {
        ProducerStateManager::new(Path::new("/nonexistent"), 86_400_000)
    }

    #[test]
    fn in_order_and_duplicates_of_last_five() {
        let mut s = state();
        let mut next = 0;
        for i in 0..7 {
            assert_eq!(
                append(&mut s, batch(1, 0, i * 2, 2), &mut next).unwrap(),
                CheckOutcome::Append
            );
        }
        assert_eq!(next, 14);
        // The last five batches (seq 4.. 13) are recognised with their original offsets.
        for i in 2..7 {
            let got = append(&mut s, batch(1, 0, i * 2, 2), &mut next).unwrap();
            let CheckOutcome::Duplicate { batch: m, .. } = got else {
                panic!("{got:?}")
            };
            assert_eq!(
                (m.first_offset, m.last_offset),
                (i64::from(i) * 2, i64::from(i) * 2 + 1)
            );
        }
        assert_eq!(next, 14);
        // Older than the last five: out of order.
        let err = append(&mut s, batch(1, 0, 2, 2), &mut next).unwrap_err();
        assert_eq!(
            err,
            ProducerError::OutOfOrderSequence {
                producer_id: 1,
                epoch: 0,
                expected: 14,
                got: 2
            }
        );
        assert_eq!(err.code(), ResponseError::OutOfOrderSequenceNumber);
        // Same first sequence but a different range is no duplicate.
        assert!(append(&mut s, batch(1, 0, 12, 1), &mut next).is_err());
    }

    #[test]
    fn gap_is_out_of_order() {
        let mut s = state();
        let mut next = 0;
        append(&mut s, batch(7, 0, 0, 3), &mut next).unwrap();
        let err = append(&mut s, batch(7, 0, 4, 1), &mut next).unwrap_err();
        assert!(matches!(
            err,
            ProducerError::OutOfOrderSequence {
                expected: 3,
                got: 4,
                ..
            }
        ));
        append(&mut s, batch(7, 0, 3, 1), &mut next).unwrap();
    }

    #[test]
    fn unknown_producer_may_start_anywhere_and_non_idempotent_skip() {
        let mut s = state();
        let mut next = 0;
        append(&mut s, batch(3, 2, 500, 1), &mut next).unwrap();
        append(&mut s, batch(-1, -1, -1, 4), &mut next).unwrap();
        append(&mut s, batch(-1, -1, -1, 4), &mut next).unwrap();
        assert_eq!(s.producers().len(), 1);
    }

    #[test]
    fn epoch_fencing_and_bump() {
        let mut s = state();
        let mut next = 0;
        append(&mut s, batch(1, 3, 0, 1), &mut next).unwrap();
        append(&mut s, batch(1, 3, 1, 1), &mut next).unwrap();
        let err = append(&mut s, batch(1, 2, 2, 1), &mut next).unwrap_err();
        assert_eq!(
            err,
            ProducerError::InvalidProducerEpoch {
                producer_id: 1,
                epoch: 2,
                current: 3
            }
        );
        assert_eq!(err.code(), ResponseError::InvalidProducerEpoch);
        // A newer epoch must start at 0.
        let err = append(&mut s, batch(1, 4, 2, 1), &mut next).unwrap_err();
        assert!(matches!(
            err,
            ProducerError::OutOfOrderSequence {
                expected: 0,
                got: 2,
                ..
            }
        ));
        append(&mut s, batch(1, 4, 0, 1), &mut next).unwrap();
        let e = s.entry(1).unwrap();
        assert_eq!((e.epoch, e.batches.len()), (4, 1));
        // The old epoch's batches are gone: its retry is fenced, not a duplicate.
        assert!(matches!(
            append(&mut s, batch(1, 3, 1, 1), &mut next),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut s = state();
        let mut next = 0;
        append(&mut s, batch(1, 0, i32::MAX - 1, 2), &mut next).unwrap();
        assert_eq!(s.entry(1).unwrap().batches[0].last_seq, i32::MAX);
        append(&mut s, batch(1, 0, 0, 3), &mut next).unwrap();
        // A batch straddling the wrap.
        append(&mut s, batch(2, 0, i32::MAX - 1, 4), &mut next).unwrap();
        assert_eq!(s.entry(2).unwrap().batches[0].last_seq, 1);
        assert!(append(&mut s, batch(2, 0, 3, 1), &mut next).is_err());
        append(&mut s, batch(2, 0, 2, 1), &mut next).unwrap();
        let CheckOutcome::Duplicate { .. } =
            append(&mut s, batch(2, 0, i32::MAX - 1, 4), &mut next).unwrap()
        else {
            panic!("wrapped batch not recognised")
        };
    }

    #[test]
    fn several_batches_in_one_request() {
        let mut s = state();
        let mut next = 0;
        append(&mut s, batch(1, 0, 0, 2), &mut next).unwrap();
        // In order across the request.
        assert_eq!(
            s.check(&[batch(1, 0, 2, 1), batch(1, 0, 3, 1)]).unwrap(),
            CheckOutcome::Append
        );
        // A gap between two batches of the same request.
        assert!(s.check(&[batch(1, 0, 2, 1), batch(1, 0, 4, 1)]).is_err());
        // A duplicate answers the request.
        assert!(matches!(
            s.check(&[batch(1, 0, 0, 2), batch(1, 0, 2, 1)]).unwrap(),
            CheckOutcome::Duplicate { .. }
        ));
    }

    #[test]
    fn expiration() {
        let mut s = state();
        s.expiration_ms = 100;
        let mut next = 0;
        append(&mut s, batch(1, 0, 0, 1), &mut next).unwrap(); // timestamp 1000
        let mut b = batch(2, 0, 0, 1);
        b.max_timestamp = 1_150;
        append(&mut s, b, &mut next).unwrap();
        assert_eq!(s.remove_expired(1_120), 1);
        assert!(s.entry(1).is_none() && s.entry(2).is_some());
    }

    fn sample_state(dir: &Path) -> ProducerStateManager {
        let mut s = ProducerStateManager::new(dir, i64::MAX);
        let mut next = 0;
        for pid in 0..20 {
            for i in 0..(pid % 8) as i32 {
                append(&mut s, batch(pid, (pid % 3) as i16, i, 1), &mut next).unwrap();
            }
        }
        s.update(&batch(99, 1, 0, 1), next, 12_345);
        s
    }

    #[test]
    fn snapshot_round_trip_keeps_two_and_skips_torn() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sample_state(dir.path());
        let bytes = encode_snapshot(77, &s.producers);
        let (offset, decoded) = decode_snapshot(&bytes).unwrap();
        assert_eq!((offset, &decoded), (77, &s.producers));
        for off in [10, 20, 30] {
            s.write_snapshot(off, 0, true).unwrap();
        }
        let mut files = list_snapshots(dir.path());
        files.sort_unstable();
        assert_eq!(files, vec![20, 30]);
        // Torn: any cut or flipped byte is detected.
        for cut in [0, 5, 12, bytes.len() - 1] {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(decode_snapshot(&flipped).unwrap_err().contains("CRC"));
    }
}
