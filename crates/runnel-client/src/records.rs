//! Producer and consumer record types, and record batch encoding/decoding on top of
//! `kafka_protocol::records`.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use crate::error::{Error, Result};
use crate::idempotence::ProducerIdentity;

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, or `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation timestamp in milliseconds since the epoch; `None` means "now".
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with just a value.
    pub fn value(value: impl Into<Bytes>) -> Self {
        Self {
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// A record with a key and a value.
    pub fn key_value(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Self::default()
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record's timestamp (creation or log-append time, see `timestamp_type`).
    pub timestamp: i64,
    /// Whether `timestamp` is the creation time or the log-append time.
    pub timestamp_type: TimestampType,
    /// The key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, or `None` for a null value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Encodes `records` as a single v2 record batch (non-idempotent, non-transactional), the
/// format a Produce request carries.
pub fn encode_record_batch(records: &[ProducerRecord], compression: Compression) -> Result<Bytes> {
    encode_batch(records, compression, None)
}

/// Encodes `records` as a single v2 record batch of an idempotent producer: the header carries
/// the producer id, epoch and `base_sequence`, the sequence number of the first record.
pub fn encode_idempotent_record_batch(
    records: &[ProducerRecord],
    compression: Compression,
    producer: ProducerIdentity,
    base_sequence: i32,
) -> Result<Bytes> {
    if base_sequence < 0 {
        return Err(Error::InvalidArgument(format!(
            "a base sequence must not be negative, not {base_sequence}"
        )));
    }
    encode_batch(records, compression, Some((producer, base_sequence)))
}

fn encode_batch(
    records: &[ProducerRecord],
    compression: Compression,
    idempotent: Option<(ProducerIdentity, i32)>,
) -> Result<Bytes> {
    if records.is_empty() {
        return Err(Error::InvalidArgument(
            "cannot encode an empty record batch".into(),
        ));
    }
    let (producer_id, producer_epoch, base_sequence) = match idempotent {
        Some((p, seq)) => (p.producer_id, p.producer_epoch, seq),
        // With base sequence -1 (NO_SEQUENCE) below.
        None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, -1),
    };
    let now = now_ms();
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let offset = i as i64;
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset,
                // The encoder starts a new batch whenever `offset - sequence` changes, and
                // writes the first record's sequence as the batch's base sequence: keep the
                // difference constant (wrapping, as only the base is written).
                sequence: base_sequence.wrapping_add(offset as i32),
                timestamp: r.timestamp.unwrap_or(now),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                    .collect::<IndexMap<_, _>>(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| Error::Records(format!("cannot encode records: {e:#}")))?;
    Ok(buf.freeze())
}

/// The result of decoding the `records` field of a fetched partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedRecords {
    /// Data records at or above the requested offset (control records removed).
    pub records: Vec<ConsumedRecord>,
    /// The offset after the last complete batch, if any complete batch was present. Use it
    /// as the next fetch offset even when `records` is empty (e.g. only control records).
    pub next_offset: Option<i64>,
}

// Record batch v2 header layout (byte offsets).
const BATCH_LENGTH_OFFSET: usize = 8;
const LOG_OVERHEAD: usize = 12; // base offset (8) + batch length (4)
const MAGIC_OFFSET: usize = 16;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BATCH_HEADER_LEN: usize = 61;

/// Decodes the record batches in a fetch response's `records` bytes.
///
/// A broker may return a partial batch at the end (when `max_bytes` cuts it off); that tail is
/// ignored. Records below `min_offset` (a batch may start before the requested offset) and
/// control records are skipped.
pub fn decode_record_batches(mut data: Bytes, min_offset: i64) -> Result<DecodedRecords> {
    let mut out = DecodedRecords::default();
    while data.len() >= LOG_OVERHEAD {
        let batch_len = i32::from_be_bytes(
            data[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if batch_len < 0 {
            return Err(Error::Records(format!("negative batch length {batch_len}")));
        }
        let total = LOG_OVERHEAD + batch_len as usize;
        if data.len() < total {
            break; // truncated trailing batch
        }
        let mut batch = data.split_to(total);
        if batch.len() <= MAGIC_OFFSET {
            return Err(Error::Records("record batch too short".into()));
        }
        let magic = batch[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(Error::Records(format!(
                "legacy message format v{magic} is not supported (only record batch v2)"
            )));
        }
        if batch.len() < BATCH_HEADER_LEN {
            return Err(Error::Records("record batch header too short".into()));
        }
        let base_offset = (&batch[..8]).get_i64();
        let last_offset_delta =
            (&batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]).get_i32();
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| Error::Records(format!("cannot decode record batch: {e:#}")))?;
        out.next_offset = Some(base_offset + i64::from(last_offset_delta) + 1);
        for r in set.records {
            if r.control || r.offset < min_offset {
                continue;
            }
            out.records.push(ConsumedRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type: r.timestamp_type,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample_records() -> Vec<ProducerRecord> {
        vec![
            ProducerRecord {
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![
                    ("h1".into(), Some(Bytes::from_static(b"v1"))),
                    ("h2".into(), None),
                ],
                timestamp: Some(1_700_000_000_000),
            },
            ProducerRecord {
                key: None,
                value: Some(Bytes::from(vec![b'x'; 10_000])),
                headers: vec![],
                timestamp: Some(1_700_000_000_005),
            },
            ProducerRecord {
                key: Some(Bytes::from_static(b"tombstone")),
                value: None,
                headers: vec![],
                timestamp: Some(1_699_999_999_999),
            },
        ]
    }

    #[test]
    fn batch_round_trip_every_compression() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let input = sample_records();
            let bytes = encode_record_batch(&input, compression).unwrap();
            // Exactly one batch, with the compression bits set in the attributes.
            let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
            assert_eq!(info.len(), 1, "{compression:?}");
            assert_eq!(info[0].compression, compression);
            assert_eq!(info[0].record_count, 3);
            assert_eq!(info[0].producer_id, -1);
            assert_eq!(info[0].base_sequence, -1);

            let decoded = decode_record_batches(bytes, 0).unwrap();
            assert_eq!(decoded.next_offset, Some(3), "{compression:?}");
            assert_eq!(decoded.records.len(), input.len());
            for (i, (got, want)) in decoded.records.iter().zip(&input).enumerate() {
                assert_eq!(got.offset, i as i64);
                assert_eq!(got.key, want.key);
                assert_eq!(got.value, want.value);
                assert_eq!(got.headers, want.headers);
                assert_eq!(Some(got.timestamp), want.timestamp);
            }
        }
    }

    #[test]
    fn decode_skips_records_below_offset_and_truncated_tail() {
        let input = sample_records();
        let batch = encode_record_batch(&input, Compression::None).unwrap();
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch);
        // A second copy of the batch, cut short: must be ignored.
        two.extend_from_slice(&batch[..batch.len() - 5]);
        let decoded = decode_record_batches(two.freeze(), 1).unwrap();
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.records[0].offset, 1);
        assert_eq!(decoded.next_offset, Some(3));
    }

    #[test]
    fn decode_empty_is_empty() {
        let decoded = decode_record_batches(Bytes::new(), 0).unwrap();
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, None);
    }

    #[test]
    fn decode_skips_control_records() {
        let rec = Record {
            transactional: true,
            control: true,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 10,
            sequence: -1,
            timestamp: 0,
            key: Some(Bytes::from_static(&[0, 0, 0, 0])),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            headers: IndexMap::new(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&rec],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let decoded = decode_record_batches(buf.freeze(), 0).unwrap();
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, Some(11));
    }

    #[test]
    fn empty_batch_is_rejected() {
        assert!(encode_record_batch(&[], Compression::None).is_err());
        let id = ProducerIdentity {
            producer_id: 1,
            producer_epoch: 0,
        };
        assert!(encode_idempotent_record_batch(&[], Compression::None, id, 0).is_err());
        let one = [ProducerRecord::value("x")];
        assert!(encode_idempotent_record_batch(&one, Compression::None, id, -1).is_err());
    }

    /// The CRC-32C in a v2 batch header covers everything from the attributes to the end.
    fn crc_is_valid(batch: &[u8]) -> bool {
        const CRC_OFFSET: usize = 17;
        let stored = u32::from_be_bytes(batch[CRC_OFFSET..CRC_OFFSET + 4].try_into().unwrap());
        stored == crc32c::crc32c(&batch[CRC_OFFSET + 4..])
    }

    fn compression() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
            Just(Compression::Lz4),
            Just(Compression::Zstd),
        ]
    }

    fn producer_record() -> impl Strategy<Value = ProducerRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        )
            .prop_map(|(key, value)| ProducerRecord {
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: vec![],
                timestamp: Some(1_700_000_000_000),
            })
    }

    proptest! {
        /// The producer fields and sequence numbers round-trip through kafka-protocol's
        /// decoder, in one batch with a valid CRC, next to the records themselves.
        #[test]
        fn idempotent_batches_round_trip(
            producer_id in 0..=i64::MAX,
            producer_epoch in 0..=i16::MAX,
            base_sequence in 0..=i32::MAX,
            records in proptest::collection::vec(producer_record(), 1..12),
            compression in compression(),
        ) {
            let id = ProducerIdentity { producer_id, producer_epoch };
            let bytes =
                encode_idempotent_record_batch(&records, compression, id, base_sequence).unwrap();
            prop_assert!(crc_is_valid(&bytes));

            let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
            prop_assert_eq!(info.len(), 1);
            prop_assert_eq!(info[0].producer_id, producer_id);
            prop_assert_eq!(info[0].producer_epoch, producer_epoch);
            prop_assert_eq!(info[0].base_sequence, base_sequence);
            prop_assert_eq!(info[0].record_count as usize, records.len());
            prop_assert!(!info[0].transactional);

            let set = RecordBatchDecoder::decode(&mut bytes.clone()).unwrap();
            prop_assert_eq!(set.records.len(), records.len());
            for (i, (got, want)) in set.records.iter().zip(&records).enumerate() {
                prop_assert_eq!(got.producer_id, producer_id);
                prop_assert_eq!(got.producer_epoch, producer_epoch);
                prop_assert_eq!(got.sequence, base_sequence.wrapping_add(i as i32));
                prop_assert_eq!(&got.key, &want.key);
                prop_assert_eq!(&got.value, &want.value);
            }
        }

        /// The plain encoder marks its batches as carrying no producer and no sequence.
        #[test]
        fn plain_batches_carry_no_producer(
            records in proptest::collection::vec(producer_record(), 1..8),
            compression in compression(),
        ) {
            let bytes = encode_record_batch(&records, compression).unwrap();
            prop_assert!(crc_is_valid(&bytes));
            let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
            prop_assert_eq!(info[0].producer_id, NO_PRODUCER_ID);
            prop_assert_eq!(info[0].producer_epoch, NO_PRODUCER_EPOCH);
            prop_assert_eq!(info[0].base_sequence, -1);
        }
    }
}
