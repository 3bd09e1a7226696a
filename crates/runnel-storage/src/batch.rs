//! Kafka v2 record batch headers: a zero-copy view, validation and the few
//! in-place patches the leader makes (offset, leader epoch, LogAppendTime).
//!
//! The storage layer never decodes individual records: everything it needs
//! (offsets, timestamps, sizes) is in the 61-byte header, and keeping records
//! opaque keeps appends and fetches free of per-record work.

use crate::error::StorageError;

/// Bytes of the fixed v2 batch header, up to and including `recordsCount`.
pub const HEADER_LEN: usize = 61;
/// Bytes before the part counted by `batchLength` (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// The only record batch format we store.
pub const MAGIC_V2: i8 = 2;

pub const BASE_OFFSET_OFF: usize = 0;
pub const LENGTH_OFF: usize = 8;
pub const LEADER_EPOCH_OFF: usize = 12;
pub const MAGIC_OFF: usize = 16;
pub const CRC_OFF: usize = 17;
pub const ATTRIBUTES_OFF: usize = 21;
pub const LAST_OFFSET_DELTA_OFF: usize = 23;
pub const BASE_TIMESTAMP_OFF: usize = 27;
pub const MAX_TIMESTAMP_OFF: usize = 35;
pub const PRODUCER_ID_OFF: usize = 43;
pub const PRODUCER_EPOCH_OFF: usize = 51;
pub const BASE_SEQUENCE_OFF: usize = 53;
pub const RECORDS_COUNT_OFF: usize = 57;

/// Attribute bits.
pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub const TRANSACTIONAL_BIT: i16 = 0x10;
pub const CONTROL_BIT: i16 = 0x20;

fn be_i64(b: &[u8], off: usize) -> i64 {
    i64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], off: usize) -> i32 {
    i32::from_be_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], off: usize) -> i16 {
    i16::from_be_bytes(b[off..off + 2].try_into().expect("2 bytes"))
}

/// Read-only view of a batch header. Needs at least [`HEADER_LEN`] bytes;
/// the records that follow may or may not be present.
#[derive(Clone, Copy, Debug)]
pub struct BatchHeader<'a> {
    buf: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    /// Returns `None` if `buf` is shorter than a header.
    pub fn new(buf: &'a [u8]) -> Option<Self> {
        (buf.len() >= HEADER_LEN).then_some(BatchHeader { buf })
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.buf, BASE_OFFSET_OFF)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(self.buf, LENGTH_OFF)
    }
    /// Total size of the batch on disk (`batchLength + 12`), if the length is sane.
    pub fn total_size(&self) -> Option<usize> {
        total_size_from_length(self.batch_length())
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.buf, LEADER_EPOCH_OFF)
    }
    pub fn magic(&self) -> i8 {
        self.buf[MAGIC_OFF] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.buf, CRC_OFF) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.buf, ATTRIBUTES_OFF)
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.buf, LAST_OFFSET_DELTA_OFF)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.buf, BASE_TIMESTAMP_OFF)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.buf, MAX_TIMESTAMP_OFF)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.buf, PRODUCER_ID_OFF)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.buf, PRODUCER_EPOCH_OFF)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.buf, BASE_SEQUENCE_OFF)
    }
    pub fn records_count(&self) -> i32 {
        be_i32(self.buf, RECORDS_COUNT_OFF)
    }
}

/// `batchLength + 12`, rejecting lengths too small to hold a header.
pub(crate) fn total_size_from_length(batch_length: i32) -> Option<usize> {
    let len = usize::try_from(batch_length).ok()?;
    let total = len.checked_add(LOG_OVERHEAD)?;
    (total >= HEADER_LEN).then_some(total)
}

/// Summary of one validated batch, with its position inside the buffer it
/// was found in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the validated buffer.
    pub position: usize,
    /// Total bytes of the batch, header included.
    pub size: usize,
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub record_count: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchInfo {
    fn from_header(h: &BatchHeader<'_>, position: usize, size: usize) -> Self {
        BatchInfo {
            position,
            size,
            base_offset: h.base_offset(),
            last_offset_delta: h.last_offset_delta(),
            partition_leader_epoch: h.partition_leader_epoch(),
            attributes: h.attributes(),
            record_count: h.records_count(),
            base_timestamp: h.base_timestamp(),
            max_timestamp: h.max_timestamp(),
            producer_id: h.producer_id(),
            producer_epoch: h.producer_epoch(),
            base_sequence: h.base_sequence(),
        }
    }
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }
    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// CRC-32C of a whole batch's CRC-covered range (attributes to end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFF..])
}

/// Validates one complete batch that starts at `buf[0]` and is exactly
/// `buf.len()` bytes long (the caller already checked the length field).
fn check_batch(
    batch: &[u8],
    position: usize,
    allow_empty: bool,
) -> Result<BatchInfo, StorageError> {
    let h = BatchHeader::new(batch).ok_or_else(|| {
        StorageError::CorruptBatch(format!("batch at byte {position} shorter than a header"))
    })?;
    if h.magic() != MAGIC_V2 {
        return Err(StorageError::CorruptBatch(format!(
            "batch at byte {position} has magic {} (only v2 is supported)",
            h.magic()
        )));
    }
    let stored = h.crc();
    let actual = compute_crc(batch);
    if stored != actual {
        return Err(StorageError::CorruptBatch(format!(
            "batch at byte {position} has CRC {stored:#010x}, computed {actual:#010x}"
        )));
    }
    if h.attributes() & COMPRESSION_MASK > 4 {
        return Err(StorageError::CorruptBatch(format!(
            "batch at byte {position} has unknown compression codec {}",
            h.attributes() & COMPRESSION_MASK
        )));
    }
    if h.records_count() < i32::from(!allow_empty) {
        return Err(StorageError::CorruptBatch(format!(
            "batch at byte {position} has recordsCount {}",
            h.records_count()
        )));
    }
    if h.last_offset_delta() < 0 {
        return Err(StorageError::CorruptBatch(format!(
            "batch at byte {position} has negative lastOffsetDelta {}",
            h.last_offset_delta()
        )));
    }
    Ok(BatchInfo::from_header(&h, position, batch.len()))
}

/// Validates a buffer holding one or more v2 batches back to back: magic 2,
/// each length consistent with the buffer, CRC-32C, a known codec, at least
/// one record. Returns one [`BatchInfo`] per batch, in order. An empty buffer
/// is rejected because a produce request without records is malformed.
pub fn validate_batches(buf: &[u8]) -> Result<Vec<BatchInfo>, StorageError> {
    validate(buf, false)
}

/// [`validate_batches`] for batches already in a log (recovery scan, a follower copying its
/// leader): also accepts a batch with `recordsCount` 0, which the log cleaner leaves behind as
/// an idempotent producer's last batch when all its records were compacted away (Kafka does
/// the same, so the producer's sequence and offset survive a rebuild from the log).
pub fn validate_stored_batches(buf: &[u8]) -> Result<Vec<BatchInfo>, StorageError> {
    validate(buf, true)
}

fn validate(buf: &[u8], allow_empty: bool) -> Result<Vec<BatchInfo>, StorageError> {
    if buf.is_empty() {
        return Err(StorageError::CorruptBatch("no record batches".into()));
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < HEADER_LEN {
            return Err(StorageError::CorruptBatch(format!(
                "{} trailing bytes at byte {pos} are shorter than a batch header",
                rest.len()
            )));
        }
        let len = be_i32(rest, LENGTH_OFF);
        let size = total_size_from_length(len).ok_or_else(|| {
            StorageError::CorruptBatch(format!("batch at byte {pos} has invalid batchLength {len}"))
        })?;
        if size > rest.len() {
            return Err(StorageError::CorruptBatch(format!(
                "batch at byte {pos} claims {size} bytes but only {} remain",
                rest.len()
            )));
        }
        out.push(check_batch(&rest[..size], pos, allow_empty)?);
        pos += size;
    }
    Ok(out)
}

/// A header-only copy of `batch` (one whole batch) with `recordsCount` 0, as Kafka's cleaner
/// writes when it must keep an idempotent producer's last batch but none of its records: base
/// offset, lastOffsetDelta, leader epoch, producer id/epoch, base sequence and the
/// transactional/control/timestamp-type bits are kept, compression is none, both timestamps
/// are the batch's max timestamp, and the CRC is recomputed.
pub fn empty_batch_like(batch: &[u8]) -> Vec<u8> {
    let mut out = batch[..HEADER_LEN].to_vec();
    let len = (HEADER_LEN - LOG_OVERHEAD) as i32;
    out[LENGTH_OFF..LENGTH_OFF + 4].copy_from_slice(&len.to_be_bytes());
    let attrs = be_i16(&out, ATTRIBUTES_OFF) & !COMPRESSION_MASK;
    out[ATTRIBUTES_OFF..ATTRIBUTES_OFF + 2].copy_from_slice(&attrs.to_be_bytes());
    let max_ts = be_i64(&out, MAX_TIMESTAMP_OFF);
    out[BASE_TIMESTAMP_OFF..BASE_TIMESTAMP_OFF + 8].copy_from_slice(&max_ts.to_be_bytes());
    out[RECORDS_COUNT_OFF..RECORDS_COUNT_OFF + 4].copy_from_slice(&0i32.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Overwrites baseOffset. Not covered by the CRC, so no recomputation.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[BASE_OFFSET_OFF..BASE_OFFSET_OFF + 8].copy_from_slice(&offset.to_be_bytes());
}

/// Overwrites partitionLeaderEpoch. Not covered by the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_OFF..LEADER_EPOCH_OFF + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `now_ms` as base and max timestamp,
/// and recomputes the CRC since attributes and timestamps are covered by it.
/// `batch` must be exactly one whole batch.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attrs = be_i16(batch, ATTRIBUTES_OFF) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_OFF..ATTRIBUTES_OFF + 2].copy_from_slice(&attrs.to_be_bytes());
    batch[BASE_TIMESTAMP_OFF..BASE_TIMESTAMP_OFF + 8].copy_from_slice(&now_ms.to_be_bytes());
    batch[MAX_TIMESTAMP_OFF..MAX_TIMESTAMP_OFF + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Builders of valid v2 batches for tests in this and other crates.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// One record of a test batch.
    #[derive(Clone, Debug, Default)]
    pub struct TestRecord {
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        /// Added to the batch's base timestamp.
        pub timestamp_delta: i64,
        pub headers: Vec<(String, Option<Vec<u8>>)>,
    }

    /// Everything configurable about a test batch. Offsets deltas are the
    /// record indexes, like a real producer writes them.
    #[derive(Clone, Debug)]
    pub struct BatchSpec {
        pub base_offset: i64,
        pub partition_leader_epoch: i32,
        pub attributes: i16,
        pub base_timestamp: i64,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
        pub records: Vec<TestRecord>,
    }

    impl Default for BatchSpec {
        fn default() -> Self {
            BatchSpec {
                base_offset: 0,
                partition_leader_epoch: -1,
                attributes: 0,
                base_timestamp: 0,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                records: Vec::new(),
            }
        }
    }

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => put_varint(out, -1),
            Some(b) => {
                put_varint(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }

    /// Encodes a batch per the spec, with a correct length and CRC.
    /// Panics on an empty record list (storage would reject it anyway).
    pub fn build_batch_with(spec: &BatchSpec) -> Vec<u8> {
        assert!(
            !spec.records.is_empty(),
            "a batch needs at least one record"
        );
        let mut records = Vec::new();
        let mut max_delta = i64::MIN;
        for (i, r) in spec.records.iter().enumerate() {
            let mut body = Vec::new();
            body.push(0u8); // record attributes
            put_varint(&mut body, r.timestamp_delta);
            put_varint(&mut body, i as i64);
            put_bytes(&mut body, r.key.as_deref());
            put_bytes(&mut body, r.value.as_deref());
            put_varint(&mut body, r.headers.len() as i64);
            for (k, v) in &r.headers {
                put_bytes(&mut body, Some(k.as_bytes()));
                put_bytes(&mut body, v.as_deref());
            }
            put_varint(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
            max_delta = max_delta.max(r.timestamp_delta);
        }
        let total = HEADER_LEN + records.len();
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(&spec.base_offset.to_be_bytes());
        b.extend_from_slice(&((total - LOG_OVERHEAD) as i32).to_be_bytes());
        b.extend_from_slice(&spec.partition_leader_epoch.to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&[0; 4]); // crc, filled below
        b.extend_from_slice(&spec.attributes.to_be_bytes());
        b.extend_from_slice(&((spec.records.len() - 1) as i32).to_be_bytes());
        b.extend_from_slice(&spec.base_timestamp.to_be_bytes());
        b.extend_from_slice(&(spec.base_timestamp + max_delta).to_be_bytes());
        b.extend_from_slice(&spec.producer_id.to_be_bytes());
        b.extend_from_slice(&spec.producer_epoch.to_be_bytes());
        b.extend_from_slice(&spec.base_sequence.to_be_bytes());
        b.extend_from_slice(&(spec.records.len() as i32).to_be_bytes());
        b.extend_from_slice(&records);
        let crc = compute_crc(&b);
        b[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// A valid uncompressed producer batch of `record_count` records with
    /// null keys and `value_size`-byte values, base offset 0 and the current
    /// wall-clock time as timestamps, like a real producer would send.
    pub fn build_batch(record_count: usize, value_size: usize) -> Vec<u8> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        build_batch_sizes(0, now_ms, &vec![value_size; record_count])
    }

    /// A valid uncompressed batch with one record per entry of
    /// `value_sizes` (null key, value of that many bytes), record `i` having
    /// timestamp `base_timestamp + i`.
    pub fn build_batch_sizes(
        base_offset: i64,
        base_timestamp: i64,
        value_sizes: &[usize],
    ) -> Vec<u8> {
        let records = value_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| TestRecord {
                key: None,
                value: Some((0..n).map(|j| (i + j) as u8).collect()),
                timestamp_delta: i as i64,
                headers: Vec::new(),
            })
            .collect();
        build_batch_with(&BatchSpec {
            base_offset,
            base_timestamp,
            records,
            ..BatchSpec::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_accessors_read_builder_fields() {
        let b = build_batch_with(&BatchSpec {
            base_offset: 42,
            partition_leader_epoch: 7,
            attributes: TRANSACTIONAL_BIT,
            base_timestamp: 1000,
            producer_id: 99,
            producer_epoch: 3,
            base_sequence: 11,
            records: vec![
                TestRecord {
                    key: Some(b"k".to_vec()),
                    value: Some(b"v".to_vec()),
                    timestamp_delta: 5,
                    headers: vec![("h".into(), None)],
                },
                TestRecord::default(),
            ],
        });
        let h = BatchHeader::new(&b).unwrap();
        assert_eq!(h.base_offset(), 42);
        assert_eq!(h.total_size(), Some(b.len()));
        assert_eq!(h.partition_leader_epoch(), 7);
        assert_eq!(h.magic(), 2);
        assert_eq!(h.attributes(), TRANSACTIONAL_BIT);
        assert_eq!(h.last_offset_delta(), 1);
        assert_eq!(h.last_offset(), 43);
        assert_eq!(h.base_timestamp(), 1000);
        assert_eq!(h.max_timestamp(), 1005);
        assert_eq!(h.producer_id(), 99);
        assert_eq!(h.producer_epoch(), 3);
        assert_eq!(h.base_sequence(), 11);
        assert_eq!(h.records_count(), 2);
        let info = &validate_batches(&b).unwrap()[0];
        assert!(info.is_transactional());
        assert!(!info.is_control());
        assert_eq!(info.compression(), 0);
        assert_eq!(info.last_offset(), 43);
        assert!(BatchHeader::new(&b[..60]).is_none());
        let simple = build_batch(3, 10);
        let info = &validate_batches(&simple).unwrap()[0];
        assert_eq!((info.record_count, info.last_offset_delta), (3, 2));
    }

    #[test]
    fn validate_rejects_malformed_buffers() {
        let b = build_batch_sizes(0, 0, &[10, 20]);
        let corrupt =
            |buf: &[u8]| matches!(validate_batches(buf), Err(StorageError::CorruptBatch(_)));
        assert!(corrupt(&[]));
        assert!(corrupt(&b[..b.len() - 1]));
        assert!(corrupt(&b[..30]));
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert_eq!(validate_batches(&two).unwrap().len(), 2);
        two.push(0);
        assert!(corrupt(&two));
        let mut bad_magic = b.clone();
        bad_magic[MAGIC_OFF] = 1;
        assert!(corrupt(&bad_magic));
        let mut bad_len = b.clone();
        bad_len[LENGTH_OFF..LENGTH_OFF + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(corrupt(&bad_len));
        let mut bad_crc = b.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        assert!(corrupt(&bad_crc));
        let mut bad_codec = b.clone();
        bad_codec[ATTRIBUTES_OFF + 1] = 7;
        let crc = compute_crc(&bad_codec);
        bad_codec[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(corrupt(&bad_codec));
        let mut no_records = b.clone();
        no_records[RECORDS_COUNT_OFF..RECORDS_COUNT_OFF + 4].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&no_records);
        no_records[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(corrupt(&no_records));
        // A log may hold an empty batch (left by the cleaner); produce input may not.
        let info = &validate_stored_batches(&no_records).unwrap()[0];
        assert_eq!(info.record_count, 0);
    }

    #[test]
    fn empty_batch_like_keeps_the_producer_fields() {
        let b = build_batch_with(&BatchSpec {
            base_offset: 40,
            partition_leader_epoch: 2,
            attributes: 3, // lz4 (the records are not really compressed; only the header matters)
            base_timestamp: 1000,
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 20,
            records: vec![
                TestRecord::default(),
                TestRecord {
                    timestamp_delta: 9,
                    ..TestRecord::default()
                },
            ],
        });
        let e = empty_batch_like(&b);
        assert_eq!(e.len(), HEADER_LEN);
        assert!(validate_batches(&e).is_err());
        let info = &validate_stored_batches(&e).unwrap()[0];
        assert_eq!((info.base_offset, info.last_offset()), (40, 41));
        assert_eq!(
            (info.producer_id, info.producer_epoch, info.base_sequence),
            (7, 1, 20)
        );
        assert_eq!((info.record_count, info.compression()), (0, 0));
        assert_eq!((info.base_timestamp, info.max_timestamp), (1009, 1009));
        assert_eq!(info.partition_leader_epoch, 2);
    }

    #[test]
    fn patches_keep_batch_valid() {
        let mut b = build_batch_sizes(0, 500, &[3, 4, 5]);
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 9);
        let info = &validate_batches(&b).unwrap()[0];
        assert_eq!((info.base_offset, info.partition_leader_epoch), (1234, 9));
        set_log_append_time(&mut b, 777);
        let info = &validate_batches(&b).unwrap()[0];
        assert!(info.is_log_append_time());
        assert_eq!((info.base_timestamp, info.max_timestamp), (777, 777));
    }

    fn arb_batch() -> impl Strategy<Value = Vec<u8>> {
        (
            0..i64::MAX / 2,
            -1i64..1_000_000_000_000,
            prop::collection::vec(0usize..300, 1..20),
        )
            .prop_map(|(off, ts, sizes)| build_batch_sizes(off, ts, &sizes))
    }

    proptest! {
        #[test]
        fn valid_batches_validate(batches in prop::collection::vec(arb_batch(), 1..5)) {
            let buf: Vec<u8> = batches.concat();
            let infos = validate_batches(&buf).unwrap();
            prop_assert_eq!(infos.len(), batches.len());
            let mut pos = 0;
            for (info, b) in infos.iter().zip(&batches) {
                prop_assert_eq!(info.position, pos);
                prop_assert_eq!(info.size, b.len());
                pos += b.len();
            }
        }

        #[test]
        fn any_flipped_byte_after_magic_is_detected(b in arb_batch(), idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut b = b;
            let i = MAGIC_OFF + idx.index(b.len() - MAGIC_OFF);
            b[i] ^= 1 << bit;
            prop_assert!(matches!(validate_batches(&b), Err(StorageError::CorruptBatch(_))));
        }
    }
}
