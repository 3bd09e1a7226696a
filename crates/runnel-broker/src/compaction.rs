//! The record-level half of log compaction: the storage cleaner
//! ([`runnel_storage::PartitionLog::compact`]) never decodes records, so the broker hands it
//! [`KafkaCodec`], which lists a batch's keys and rewrites a batch keeping some of its records,
//! for every compression codec, plus the produce-time rule of compacted topics
//! ([`reject_null_keys`]).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor, Decompressor};
use kafka_protocol::records::RecordBatchDecoder;
use runnel_storage::batch::{
    self, BatchHeader, COMPRESSION_MASK, CONTROL_BIT, CRC_OFF, HEADER_LEN, LENGTH_OFF,
    LOG_OVERHEAD, MAX_TIMESTAMP_OFF, RECORDS_COUNT_OFF, TIMESTAMP_TYPE_BIT,
};
use runnel_storage::{CompactionCodec, RecordKey, StorageError};

use crate::error::BrokerError;

/// [`CompactionCodec`] over the `kafka-protocol` decoder and its compression codecs.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaCodec;

impl CompactionCodec for KafkaCodec {
    fn keys(&self, batch: &[u8]) -> Result<Vec<RecordKey>, String> {
        let mut buf = Bytes::copy_from_slice(batch);
        let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| e.to_string())?;
        Ok(set
            .records
            .into_iter()
            .map(|r| RecordKey {
                offset: r.offset,
                tombstone: r.value.is_none(),
                key: r.key,
            })
            .collect())
    }

    fn rewrite(&self, batch: &[u8], keep: &[i64]) -> Result<Vec<u8>, String> {
        rewrite_batch(batch, keep)
    }
}

/// Kafka's rule for compacted topics: every record needs a key. Checks every batch of a
/// produce request (decompressing as needed); only compacted topics pay for it. A batch that
/// cannot be decoded at all is left to the log's own validation (CORRUPT_MESSAGE).
pub fn reject_null_keys(batches: &[u8]) -> Result<(), BrokerError> {
    batch::validate_batches(batches)?;
    let mut buf = Bytes::copy_from_slice(batches);
    while buf.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| {
            StorageError::InvalidRecord(format!("cannot decode a record batch: {e}"))
        })?;
        if let Some(r) = set.records.iter().find(|r| r.key.is_none() && !r.control) {
            return Err(StorageError::InvalidRecord(format!(
                "compacted topic cannot accept a record without a key (offset delta {})",
                r.offset
            ))
            .into());
        }
    }
    Ok(())
}

fn decompress(codec_id: i16, mut data: Bytes) -> Result<Bytes, String> {
    let take = |b: &mut Bytes| Ok(b.copy_to_bytes(b.remaining()));
    let r = match codec_id {
        0 => return Ok(data),
        1 => codec::Gzip::decompress(&mut data, take),
        2 => codec::Snappy::decompress(&mut data, take),
        3 => codec::Lz4::decompress(&mut data, take),
        4 => codec::Zstd::decompress(&mut data, take),
        c => return Err(format!("unknown compression codec {c}")),
    };
    r.map_err(|e| e.to_string())
}

fn compress(codec_id: i16, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    let fill = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(raw);
        Ok(())
    };
    let r = match codec_id {
        0 => return Ok(raw.to_vec()),
        1 => codec::Gzip::compress(&mut out, fill),
        2 => codec::Snappy::compress(&mut out, fill),
        3 => codec::Lz4::compress(&mut out, fill),
        4 => codec::Zstd::compress(&mut out, fill),
        c => return Err(format!("unknown compression codec {c}")),
    };
    r.map_err(|e| e.to_string())?;
    Ok(out.to_vec())
}

/// Zigzag varint (up to 64 bits) at `*pos`.
fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("record truncated inside a varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Re-encodes one v2 batch keeping only the records at the offsets in `keep` (ascending).
///
/// The kept records are copied byte for byte out of the decompressed records section: their
/// offset and timestamp deltas stay relative to the original base offset and base timestamp,
/// which the header keeps, as it keeps lastOffsetDelta, producer id/epoch, base sequence,
/// leader epoch and attributes (Kafka's cleaner does the same, so a cleaned batch still spans
/// its original offset range). The records are recompressed with the batch's codec; the length,
/// recordsCount, maxTimestamp (CreateTime: the kept records' largest) and CRC are recomputed.
/// `RecordBatchEncoder` cannot be used: it rebases offsets on the first kept record and
/// derives lastOffsetDelta from the kept records.
pub fn rewrite_batch(batch: &[u8], keep: &[i64]) -> Result<Vec<u8>, String> {
    let h = BatchHeader::new(batch).ok_or("batch shorter than its header")?;
    if h.total_size() != Some(batch.len()) {
        return Err("batch length does not match its buffer".into());
    }
    if h.attributes() & CONTROL_BIT != 0 {
        return Err("control batches are never rewritten".into());
    }
    let codec_id = h.attributes() & COMPRESSION_MASK;
    let raw = decompress(codec_id, Bytes::copy_from_slice(&batch[HEADER_LEN..]))?;
    let (base, base_ts) = (h.base_offset(), h.base_timestamp());
    let mut kept = Vec::with_capacity(raw.len());
    let mut count: i32 = 0;
    let mut max_ts = i64::MIN;
    let mut pos = 0;
    for _ in 0..h.records_count() {
        let start = pos;
        let len =
            usize::try_from(read_varlong(&raw, &mut pos)?).map_err(|_| "negative record length")?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= raw.len())
            .ok_or("record runs past the batch")?;
        pos += 1; // record attributes
        let ts_delta = read_varlong(&raw, &mut pos)?;
        let offset_delta = read_varlong(&raw, &mut pos)?;
        if pos > end {
            return Err("record header runs past the record".into());
        }
        pos = end;
        if keep.binary_search(&(base + offset_delta)).is_ok() {
            kept.extend_from_slice(&raw[start..end]);
            count += 1;
            max_ts = max_ts.max(base_ts.saturating_add(ts_delta));
        }
    }
    if pos != raw.len() {
        return Err("bytes after the last record".into());
    }
    if count as usize != keep.len() || count == 0 {
        return Err(format!(
            "{} offsets to keep but {count} records found",
            keep.len()
        ));
    }
    let records = compress(codec_id, &kept)?;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&records);
    let length = i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| "batch too large")?;
    out[LENGTH_OFF..LENGTH_OFF + 4].copy_from_slice(&length.to_be_bytes());
    out[RECORDS_COUNT_OFF..RECORDS_COUNT_OFF + 4].copy_from_slice(&count.to_be_bytes());
    if h.attributes() & TIMESTAMP_TYPE_BIT == 0 {
        out[MAX_TIMESTAMP_OFF..MAX_TIMESTAMP_OFF + 8].copy_from_slice(&max_ts.to_be_bytes());
    }
    let crc = batch::compute_crc(&out);
    out[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use runnel_storage::{LogConfig, PartitionLog};

    const T0: i64 = 1_700_000_000_000;

    /// A producer-like batch: records `(key, value)` at offsets `0..n`, idempotent fields set.
    fn encode(records: &[(Option<&str>, Option<&str>)], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 42,
                producer_epoch: 3,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: 100 + i as i32,
                timestamp: T0 + i as i64 * 10,
                key: k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                headers: {
                    let mut h = IndexMap::new();
                    h.insert(
                        StrBytes::from_static_str("h"),
                        Some(Bytes::from_static(b"x")),
                    );
                    h
                },
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Record> {
        let mut buf = Bytes::copy_from_slice(bytes);
        RecordBatchDecoder::decode_all(&mut buf)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .collect()
    }

    #[test]
    fn rewrite_keeps_offsets_fields_and_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Snappy,
            Compression::Lz4,
        ] {
            let recs = [
                (Some("a"), Some("1")),
                (Some("b"), Some("2")),
                (Some("a"), Some("3")),
                (Some("c"), None),
                (Some("b"), Some("5")),
            ];
            let mut original = encode(&recs, compression);
            batch::set_base_offset(&mut original, 1000);
            let keys = KafkaCodec.keys(&original).unwrap();
            assert_eq!(keys.len(), 5);
            assert_eq!(keys[3].offset, 1003);
            assert!(keys[3].tombstone);
            assert_eq!(keys[0].key.as_deref(), Some(&b"a"[..]));
            let out = KafkaCodec.rewrite(&original, &[1002, 1003]).unwrap();
            let info = &batch::validate_batches(&out).unwrap()[0];
            let orig = &batch::validate_batches(&original).unwrap()[0];
            assert_eq!(info.base_offset, 1000, "{compression:?}");
            assert_eq!(info.last_offset_delta, 4);
            assert_eq!(info.record_count, 2);
            assert_eq!(info.compression(), orig.compression());
            assert_eq!(info.producer_id, 42);
            assert_eq!(info.producer_epoch, 3);
            assert_eq!(info.base_sequence, orig.base_sequence);
            assert_eq!(info.base_timestamp, T0);
            assert_eq!(info.max_timestamp, T0 + 30);
            let got = decode_all(&out);
            assert_eq!(got.len(), 2);
            assert_eq!((got[0].offset, got[1].offset), (1002, 1003));
            assert_eq!((got[0].timestamp, got[1].timestamp), (T0 + 20, T0 + 30));
            assert_eq!(got[0].value.as_deref(), Some(&b"3"[..]));
            assert_eq!(got[1].value, None);
            assert_eq!(got[0].headers.len(), 1);
            assert_eq!(got[0].sequence, 102);
            // Asking for offsets the batch does not hold is an error, not a silent loss.
            assert!(KafkaCodec.rewrite(&original, &[1002, 1009]).is_err());
        }
    }

    #[test]
    fn null_keys_are_rejected_for_compacted_topics() {
        let ok = encode(&[(Some("a"), Some("1"))], Compression::Gzip);
        reject_null_keys(&ok).unwrap();
        let mut two = ok.clone();
        two.extend(encode(
            &[(Some("a"), Some("1")), (None, Some("2"))],
            Compression::Zstd,
        ));
        let err = reject_null_keys(&two).unwrap_err();
        assert!(
            matches!(err, BrokerError::Storage(StorageError::InvalidRecord(_))),
            "{err}"
        );
        let mut bad = ok.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            reject_null_keys(&bad),
            Err(BrokerError::Storage(StorageError::CorruptBatch(_)))
        ));
    }

    /// Real gzip and zstd batches through the storage cleaner with this codec.
    #[test]
    fn compacts_a_log_of_compressed_batches() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 400,
            cleanup_compact: true,
            cleanup_delete: false,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config, T0).unwrap();
        let mut latest = std::collections::BTreeMap::new();
        for round in 0..12 {
            let compression = if round % 2 == 0 {
                Compression::Gzip
            } else {
                Compression::Zstd
            };
            let vals: Vec<String> = (0..5).map(|i| format!("r{round}-{i}")).collect();
            let unique = format!("u{round}");
            let recs: Vec<(Option<&str>, Option<&str>)> = vec![
                (Some("k1"), Some(vals[0].as_str())),
                (Some(["k2", "k3", "k4"][round % 3]), Some(vals[1].as_str())),
                (Some("k1"), Some(vals[2].as_str())),
                (Some("k5"), Some(vals[3].as_str())),
                (Some(unique.as_str()), Some(vals[4].as_str())),
            ];
            let mut b = encode(&recs, compression);
            let info = log.append(&mut b, 0, T0).unwrap();
            for (i, (k, v)) in recs.iter().enumerate() {
                latest.insert(
                    k.unwrap().to_string(),
                    (info.base_offset + i as i64, v.unwrap().to_string()),
                );
            }
        }
        assert!(log.segment_count() > 3);
        let end = log.log_end_offset();
        let before = log.size_bytes();
        let stats = log.compact(T0, end, &KafkaCodec).unwrap();
        assert!(stats.cleaned && stats.records_removed > 0, "{stats:?}");
        assert!(
            stats.batches_rewritten > 0,
            "{stats:?} {}",
            log.segment_count()
        );
        assert!(log.size_bytes() < before);
        let all = log.read(0, usize::MAX, i64::MAX, true).unwrap().records;
        let records = decode_all(&all);
        // Each key at most once below the active segment, its latest at its original offset.
        let active_base = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_suffix(".log").and_then(|b| b.parse::<i64>().ok())
            })
            .max()
            .unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for r in &records {
            let k = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
            let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            seen.entry(k).or_insert_with(Vec::new).push((r.offset, v));
        }
        for (k, (off, v)) in &latest {
            let copies = &seen[k];
            assert_eq!(copies.last().unwrap(), &(*off, v.clone()), "key {k}");
            for (o, _) in &copies[..copies.len() - 1] {
                assert!(
                    *o >= active_base,
                    "key {k}: stale copy at {o} below {active_base}"
                );
            }
        }
        assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
        // Sealed segments hold each key at most once.
        drop(log);
        let log = PartitionLog::open(
            dir.path(),
            LogConfig {
                cleanup_compact: true,
                ..LogConfig::default()
            },
            T0,
        )
        .unwrap();
        let again = decode_all(&log.read(0, usize::MAX, i64::MAX, true).unwrap().records);
        assert_eq!(again.len(), records.len());
    }
}
