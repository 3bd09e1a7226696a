//! Record batches as a client sends them or a log holds them: produce validation, bounded
//! decompression and the record reader, the log cleaner's codec and the group coordinator's
//! loading. The first byte picks the topic rules and how the rest is read; the rest is the
//! batches.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_broker::compaction::KafkaCodec;
use runnel_broker::records::{decompress, records, validate_client_batches, ValidationRules};
use runnel_storage::batch::{BatchHeader, COMPRESSION_MASK, HEADER_LEN};
use runnel_storage::{CompactionCodec, TimestampType};

/// The broker's clock during validation.
const NOW_MS: i64 = 1_700_000_000_000;
const HOUR_MS: i64 = 3_600_000;

fn rules(selector: u8) -> ValidationRules {
    let (before_max_ms, after_max_ms, max_message_bytes) = match (selector >> 2) & 3 {
        0 => (i64::MAX, HOUR_MS, 1 << 20), // Kafka's defaults
        1 => (HOUR_MS, HOUR_MS, 1 << 20),
        2 => (0, 0, 100), // nothing passes the clock, tiny batches only
        // The most the configs allow (max.message.bytes is an Int).
        _ => (i64::MAX, i64::MAX, i32::MAX as usize),
    };
    ValidationRules {
        compacted: selector & 1 != 0,
        timestamp_type: match selector & 2 {
            0 => TimestampType::CreateTime,
            _ => TimestampType::LogAppendTime,
        },
        before_max_ms,
        after_max_ms,
        max_message_bytes,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, batches)) = data.split_first() else {
        return;
    };
    let _ = validate_client_batches(batches, &rules(selector), NOW_MS);
    let _ = runnel_storage::batch::validate_batches(batches);

    // The records of the first batch, or (high bit set) the bytes as a records section in
    // the codec of the selector's low bits.
    let (codec, section, count) = match BatchHeader::new(batches) {
        Some(h) if selector & 0x80 == 0 => (
            h.attributes() & COMPRESSION_MASK,
            &batches[HEADER_LEN..],
            h.records_count(),
        ),
        _ => (
            i16::from(selector & 7),
            batches,
            i32::from(selector >> 3 & 0xf),
        ),
    };
    if let Ok(raw) = decompress(codec, section, 1 << 20) {
        if let Ok(reader) = records(&raw, count) {
            reader.for_each(drop);
        }
    }

    // The log cleaner: the batch's keys, then the batch rewritten keeping some of them.
    let codec = KafkaCodec::new(1 << 20);
    if let Ok(keys) = codec.keys(batches) {
        let mut keep: Vec<i64> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| selector >> (i % 8) & 1 == 0)
            .map(|(_, k)| k.offset)
            .collect();
        keep.sort_unstable();
        keep.dedup();
        if !keep.is_empty() {
            let _ = codec.rewrite(batches, &keep);
        }
    }

    let _ = runnel_broker::group::records::decode_batches(bytes::Bytes::copy_from_slice(batches));
});
