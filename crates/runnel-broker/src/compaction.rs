//! The record-level half of log compaction: the storage cleaner
//! ([`runnel_storage::PartitionLog::compact`]) never decodes records, so the broker hands it
//! [`KafkaCodec`], which lists a batch's keys and rewrites a batch keeping some of its records,
//! for every compression codec. Records are read with the bounded reader of
//! [`crate::records`], so a stored batch with a lying record count or a compression bomb is
//! kept as it is (and logged) instead of exhausting the node's memory on every replica.
//!
//! Kafka-compatible readers must accept empty batches (`recordsCount` 0) in a compacted log:
//! the cleaner keeps an idempotent producer's last batch that way when all its records are
//! removed. The group coordinator's `__consumer_offsets` batches carry no producer id, so
//! that log never has any.

use bytes::Bytes;
use runnel_storage::batch::{
    self, BatchHeader, COMPRESSION_MASK, CONTROL_BIT, CRC_OFF, HEADER_LEN, LENGTH_OFF,
    LOG_OVERHEAD, MAX_TIMESTAMP_OFF, RECORDS_COUNT_OFF, TIMESTAMP_TYPE_BIT,
};
use runnel_storage::{CompactionCodec, RecordKey};

use crate::records::decompress::compress;
use crate::records::{decompress, records};

/// [`CompactionCodec`] over the bounded record reader and kafka-protocol's compressors.
#[derive(Clone, Copy, Debug)]
pub struct KafkaCodec {
    /// The most one batch's records may decompress to; a batch past it is kept uncleaned.
    max_decompressed: usize,
}

impl KafkaCodec {
    /// A codec for a topic whose `max.message.bytes` is `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        KafkaCodec {
            max_decompressed: crate::records::stored_decompress_limit(max_message_bytes),
        }
    }
}

impl CompactionCodec for KafkaCodec {
    fn keys(&self, batch: &[u8]) -> Result<Vec<RecordKey>, String> {
        let h = BatchHeader::new(batch).ok_or("batch shorter than its header")?;
        let raw = decompress(
            h.attributes() & COMPRESSION_MASK,
            batch.get(HEADER_LEN..).unwrap_or_default(),
            self.max_decompressed,
        )
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for record in records(&raw, h.records_count()).map_err(|e| e.to_string())? {
            let r = record.map_err(|e| e.to_string())?;
            out.push(RecordKey {
                offset: h.base_offset().saturating_add(i64::from(r.offset_delta)),
                tombstone: r.value.is_none(),
                key: r.key.map(Bytes::copy_from_slice),
            });
        }
        Ok(out)
    }

    fn rewrite(&self, batch: &[u8], keep: &[i64]) -> Result<Vec<u8>, String> {
        rewrite_batch(batch, keep, self.max_decompressed)
    }
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
pub fn rewrite_batch(
    batch: &[u8],
    keep: &[i64],
    max_decompressed: usize,
) -> Result<Vec<u8>, String> {
    let h = BatchHeader::new(batch).ok_or("batch shorter than its header")?;
    if h.total_size() != Some(batch.len()) {
        return Err("batch length does not match its buffer".into());
    }
    if h.attributes() & CONTROL_BIT != 0 {
        return Err("control batches are never rewritten".into());
    }
    let codec_id = h.attributes() & COMPRESSION_MASK;
    let raw =
        decompress(codec_id, &batch[HEADER_LEN..], max_decompressed).map_err(|e| e.to_string())?;
    let (base, base_ts) = (h.base_offset(), h.base_timestamp());
    let mut kept = Vec::with_capacity(raw.len());
    let mut count: i32 = 0;
    let mut max_ts = i64::MIN;
    let mut reader = records(&raw, h.records_count()).map_err(|e| e.to_string())?;
    let mut start = 0;
    while let Some(record) = reader.next() {
        let r = record.map_err(|e| e.to_string())?;
        let end = reader.position();
        if keep
            .binary_search(&base.saturating_add(i64::from(r.offset_delta)))
            .is_ok()
        {
            kept.extend_from_slice(&raw[start..end]);
            count += 1;
            max_ts = max_ts.max(base_ts.saturating_add(r.timestamp_delta));
        }
        start = end;
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
    use crate::records::{validate_client_batches, ValidationErrorKind};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
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
        let mut buf = bytes::BytesMut::new();
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
            let keys = KafkaCodec::new(1 << 20).keys(&original).unwrap();
            assert_eq!(keys.len(), 5);
            assert_eq!(keys[3].offset, 1003);
            assert!(keys[3].tombstone);
            assert_eq!(keys[0].key.as_deref(), Some(&b"a"[..]));
            let out = KafkaCodec::new(1 << 20)
                .rewrite(&original, &[1002, 1003])
                .unwrap();
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
            assert!(KafkaCodec::new(1 << 20)
                .rewrite(&original, &[1002, 1009])
                .is_err());
        }
    }

    /// A stored batch whose record count lies (valid CRC) or whose records decompress past the
    /// limit is refused by the codec, so the cleaner keeps it as it is instead of allocating
    /// what it claims.
    #[test]
    fn lying_and_oversized_stored_batches_are_refused() {
        let mut lying = encode(&[(Some("a"), Some("1"))], Compression::None);
        lying[RECORDS_COUNT_OFF..RECORDS_COUNT_OFF + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = batch::compute_crc(&lying);
        lying[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
        let codec = KafkaCodec::new(1 << 20);
        assert!(codec.keys(&lying).unwrap_err().contains("cannot hold"));
        assert!(codec.rewrite(&lying, &[0]).is_err());
        let big = "x".repeat(20 << 20);
        let bomb = encode(&[(Some("a"), Some(big.as_str()))], Compression::Zstd);
        assert!(codec
            .keys(&bomb)
            .unwrap_err()
            .contains("decompress to more than"));
    }

    /// A replica manager with a compacted topic "c" (small segments) and a plain one.
    fn compacted_manager(
        dir: &std::path::Path,
        config: crate::config::BrokerConfig,
    ) -> std::sync::Arc<crate::replica_manager::ReplicaManager> {
        use futures::executor::block_on;
        let rm = crate::testing::LocalController::start(dir, 1, config).1;
        let configs = [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "400"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        block_on(rm.create_topic("c", 1, 1, configs, false)).unwrap();
        block_on(rm.create_topic("plain", 1, 1, Default::default(), false)).unwrap();
        rm
    }

    /// Thirty single-record, non-idempotent batches alternating keys "a" and "b".
    fn fill_ab(p: &crate::replica_manager::Partition) {
        for i in 0..30 {
            // Not idempotent (encode()'s batches all carry one producer sequence).
            let mut b = runnel_storage::batch::testing::build_batch_with(
                &runnel_storage::batch::testing::BatchSpec {
                    base_timestamp: T0,
                    records: vec![runnel_storage::batch::testing::TestRecord {
                        key: Some(["a", "b"][i % 2].as_bytes().to_vec()),
                        value: Some(format!("v{i}").into_bytes()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            p.append(&mut b, 0).unwrap();
        }
    }

    /// The partition path: a compacted partition's rules refuse null keys (a plain one's
    /// do not), and `Partition::compact` cleans through plan / execute / install.
    #[test]
    fn compacted_topic_partition_rejects_null_keys_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let rm = compacted_manager(dir.path(), Default::default());
        let c = rm.partition("c", 0).unwrap();
        let plain = rm.partition("plain", 0).unwrap();
        let mut keyless = encode(
            &[(Some("a"), Some("1")), (None, Some("2"))],
            Compression::Lz4,
        );
        let now = crate::partition::now_ms();
        let err =
            validate_client_batches(&keyless, &c.validation_rules().unwrap(), now).unwrap_err();
        assert_eq!(err.kind, ValidationErrorKind::InvalidRecord, "{err}");
        assert_eq!(err.record_errors.len(), 1);
        validate_client_batches(&keyless, &plain.validation_rules().unwrap(), now).unwrap();
        plain.append(&mut keyless, 0).unwrap();
        fill_ab(&c);
        let before = c.size_bytes().unwrap();
        assert_eq!(rm.run_compaction(), 1);
        assert!(c.size_bytes().unwrap() < before);
        let records = decode_all(&c.read(0, usize::MAX, true).unwrap().records);
        assert_eq!(records.last().unwrap().value.as_deref(), Some(&b"v29"[..]));
    }

    /// The cleaner runs as its own task under `run_maintenance` and stops with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cleaner_task_compacts_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            crate::config::BrokerConfig::from_pairs([("log.cleaner.backoff.ms", "100")]).unwrap();
        let rm = compacted_manager(dir.path(), config);
        let c = rm.partition("c", 0).unwrap();
        fill_ab(&c);
        let before = c.size_bytes().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let maintenance = tokio::spawn(rm.clone().run_maintenance(rx));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.size_bytes().unwrap() >= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the cleaner never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), maintenance)
            .await
            .expect("maintenance stops at shutdown")
            .unwrap();
    }

    /// An idempotent producer whose records were all compacted away keeps its last batch as
    /// an empty batch, so producer state rebuilt from the log still knows its sequence.
    #[test]
    fn producer_state_survives_compaction_through_an_empty_batch() {
        use crate::producer_state::ProducerStateManager;
        use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 300,
            cleanup_compact: true,
            cleanup_delete: false,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config, T0).unwrap();
        let rec = |k: &str, v: &str| TestRecord {
            key: Some(k.as_bytes().to_vec()),
            value: Some(v.as_bytes().to_vec()),
            ..TestRecord::default()
        };
        let mut put = |pid: i64, seq: i32, records: Vec<TestRecord>| {
            let mut b = build_batch_with(&BatchSpec {
                base_timestamp: T0,
                producer_id: pid,
                producer_epoch: if pid >= 0 { 3 } else { -1 },
                base_sequence: if pid >= 0 { seq } else { -1 },
                records,
                ..BatchSpec::default()
            });
            log.append(&mut b, 0, T0).unwrap()
        };
        put(42, 0, vec![rec("a", "1"), rec("b", "1")]);
        let last = put(42, 2, vec![rec("a", "2"), rec("c", "2")]);
        put(-1, 0, vec![rec("a", "x"), rec("b", "x"), rec("c", "x")]);
        for i in 0..20 {
            put(-1, 0, vec![rec(&format!("u{i}"), "filler")]);
        }
        let rebuilt = |log: &PartitionLog| {
            let state = ProducerStateManager::load(log, i64::MAX);
            let e = state.entry(42).expect("producer 42 known").clone();
            let b = *e.batches.back().unwrap();
            (e.epoch, b.last_seq, b.first_offset, b.last_offset)
        };
        let expected = (3, 3, last.base_offset, last.last_offset);
        assert_eq!(rebuilt(&log), expected);
        let hw = log.log_end_offset();
        let stats = log.compact(T0, hw, &KafkaCodec::new(1 << 20)).unwrap();
        assert_eq!(stats.batches_emptied, 1, "{stats:?}");
        // No record of producer 42 is left, but its last batch header is.
        let all = log.read(0, usize::MAX, i64::MAX, true).unwrap().records;
        assert!(decode_all(&all).iter().all(|r| r.producer_id != 42));
        let infos = RecordBatchDecoder::decode_batch_info(&mut all.clone()).unwrap();
        let empty: Vec<_> = infos.iter().filter(|b| b.producer_id == 42).collect();
        assert_eq!(empty.len(), 1);
        assert_eq!(
            (empty[0].record_count, empty[0].min_offset),
            (0, last.base_offset)
        );
        // Rebuilt from the compacted log (no snapshot exists), the state is unchanged.
        assert_eq!(rebuilt(&log), expected);
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
        let stats = log.compact(T0, end, &KafkaCodec::new(1 << 20)).unwrap();
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
