use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};
use runnel_storage::batch::{compute_crc, ATTRIBUTES_OFF, CRC_OFF, LENGTH_OFF, LOG_OVERHEAD};

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn rules() -> ValidationRules {
    ValidationRules {
        compacted: false,
        timestamp_type: TimestampType::CreateTime,
        before_max_ms: i64::MAX,
        after_max_ms: 3_600_000,
        max_message_bytes: 1 << 20,
    }
}

fn keyed(n: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(b"v".to_vec()),
            ..Default::default()
        })
        .collect()
}

fn batch(records: Vec<TestRecord>) -> Vec<u8> {
    build_batch_with(&BatchSpec {
        base_timestamp: NOW,
        records,
        ..Default::default()
    })
}

fn refix_crc(b: &mut [u8]) {
    let crc = compute_crc(b);
    b[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The same batch with its records section compressed with `codec_id`.
fn compressed(plain: &[u8], codec_id: i16) -> Vec<u8> {
    compressed_section(&plain[..HEADER_LEN], &plain[HEADER_LEN..], codec_id)
}

fn compressed_section(header: &[u8], raw: &[u8], codec_id: i16) -> Vec<u8> {
    let packed = crate::records::decompress::compress(codec_id, raw).unwrap();
    let mut out = header.to_vec();
    out.extend_from_slice(&packed);
    let len = (out.len() - LOG_OVERHEAD) as i32;
    out[LENGTH_OFF..LENGTH_OFF + 4].copy_from_slice(&len.to_be_bytes());
    let attrs = i16::from_be_bytes([out[ATTRIBUTES_OFF], out[ATTRIBUTES_OFF + 1]]) | codec_id;
    out[ATTRIBUTES_OFF..ATTRIBUTES_OFF + 2].copy_from_slice(&attrs.to_be_bytes());
    refix_crc(&mut out);
    out
}

fn kind(buf: &[u8], r: &ValidationRules) -> ValidationErrorKind {
    validate_client_batches(buf, r, NOW).unwrap_err().kind
}

#[test]
fn good_batches_pass_in_every_codec() {
    let plain = batch(keyed(50));
    validate_client_batches(&plain, &rules(), NOW).unwrap();
    for c in 1..=4 {
        let b = compressed(&plain, c);
        assert!(any_compressed(&b));
        validate_client_batches(&b, &rules(), NOW).unwrap_or_else(|e| panic!("codec {c}: {e}"));
    }
    assert!(!any_compressed(&plain));
    let mut two = plain.clone();
    two.extend_from_slice(&compressed(&plain, 4));
    validate_client_batches(&two, &rules(), NOW).unwrap();
}

#[test]
fn batch_rules() {
    use ValidationErrorKind::*;
    let plain = batch(keyed(3));
    let with_attrs = |bits: i16| {
        let mut b = plain.clone();
        let attrs = i16::from_be_bytes([b[ATTRIBUTES_OFF], b[ATTRIBUTES_OFF + 1]]) | bits;
        b[ATTRIBUTES_OFF..ATTRIBUTES_OFF + 2].copy_from_slice(&attrs.to_be_bytes());
        refix_crc(&mut b);
        b
    };
    assert_eq!(kind(&with_attrs(CONTROL_BIT), &rules()), InvalidRecord);
    assert_eq!(
        kind(&with_attrs(TRANSACTIONAL_BIT), &rules()),
        InvalidRecord
    );
    assert_eq!(
        kind(&with_attrs(TIMESTAMP_TYPE_BIT), &rules()),
        InvalidTimestamp
    );
    // recordsCount 3 but lastOffsetDelta 5.
    let mut lying = plain.clone();
    lying[batch::LAST_OFFSET_DELTA_OFF..batch::LAST_OFFSET_DELTA_OFF + 4]
        .copy_from_slice(&5i32.to_be_bytes());
    refix_crc(&mut lying);
    assert_eq!(kind(&lying, &rules()), InvalidRecord);
    // An idempotent batch without a sequence.
    let idempotent = build_batch_with(&BatchSpec {
        base_timestamp: NOW,
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: -1,
        records: keyed(1),
        ..Default::default()
    });
    assert_eq!(kind(&idempotent, &rules()), InvalidRecord);
}

#[test]
fn a_lying_record_count_with_a_valid_crc_is_invalid() {
    let mut b = batch(keyed(2));
    // Claims 2^31-1 records (and a matching lastOffsetDelta would overflow: use the count).
    b[batch::RECORDS_COUNT_OFF..batch::RECORDS_COUNT_OFF + 4]
        .copy_from_slice(&i32::MAX.to_be_bytes());
    b[batch::LAST_OFFSET_DELTA_OFF..batch::LAST_OFFSET_DELTA_OFF + 4]
        .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
    refix_crc(&mut b);
    let err = validate_client_batches(&b, &rules(), NOW).unwrap_err();
    assert_eq!(err.kind, ValidationErrorKind::InvalidRecord, "{err}");
    assert!(err.message.contains("cannot hold"), "{err}");
}

#[test]
fn garbage_records_with_a_valid_crc_are_invalid_and_a_bad_crc_is_corrupt() {
    let mut b = batch(keyed(2));
    b[HEADER_LEN] = 0x7f; // the first record's length now runs past the batch
    let mut bad_crc = b.clone();
    refix_crc(&mut b);
    assert_eq!(kind(&b, &rules()), ValidationErrorKind::InvalidRecord);
    bad_crc[CRC_OFF] ^= 0xff;
    assert_eq!(kind(&bad_crc, &rules()), ValidationErrorKind::Corrupt);
    // Bad framing is corrupt too, and so is an empty request.
    assert_eq!(kind(&b[..40], &rules()), ValidationErrorKind::Corrupt);
    assert_eq!(kind(&[], &rules()), ValidationErrorKind::Corrupt);
}

#[test]
fn offset_deltas_must_count_from_zero() {
    // Build two records, then swap their offset deltas (0,1 -> 1,0): same lengths.
    let mut b = batch(keyed(2));
    // Record layout: length varint (1 byte), attributes, ts delta (1 byte), offset delta.
    let first = HEADER_LEN + 3;
    let first_len = (b[HEADER_LEN] >> 1) as usize;
    let second = HEADER_LEN + 1 + first_len + 3;
    b.swap(first, second);
    refix_crc(&mut b);
    let err = validate_client_batches(&b, &rules(), NOW).unwrap_err();
    assert_eq!(err.kind, ValidationErrorKind::InvalidRecord);
    let indexes: Vec<i32> = err.record_errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, vec![0, 1]);
}

#[test]
fn compacted_topics_need_keys_and_name_the_records() {
    let mut records = keyed(5);
    records[1].key = None;
    records[3].key = None;
    let b = batch(records);
    validate_client_batches(&b, &rules(), NOW).unwrap();
    let compacted = ValidationRules {
        compacted: true,
        ..rules()
    };
    for buf in [b.clone(), compressed(&b, 1)] {
        let err = validate_client_batches(&buf, &compacted, NOW).unwrap_err();
        assert_eq!(err.kind, ValidationErrorKind::InvalidRecord);
        let indexes: Vec<i32> = err.record_errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![1, 3], "{err}");
        assert!(err.message.contains("2 record(s)"), "{err}");
    }
}

#[test]
fn timestamps_outside_the_window_are_refused() {
    let mut records = keyed(3);
    records[2].timestamp_delta = 2 * 3_600_000; // two hours ahead of NOW
    let b = batch(records);
    let err = validate_client_batches(&b, &rules(), NOW).unwrap_err();
    assert_eq!(err.kind, ValidationErrorKind::InvalidTimestamp);
    assert_eq!(err.record_errors.len(), 1);
    assert_eq!(err.record_errors[0].0, 2);
    // In the past: only with a before.max.ms limit.
    let old = build_batch_with(&BatchSpec {
        base_timestamp: NOW - 86_400_000,
        records: keyed(1),
        ..Default::default()
    });
    validate_client_batches(&old, &rules(), NOW).unwrap();
    let strict = ValidationRules {
        before_max_ms: 1000,
        ..rules()
    };
    assert_eq!(kind(&old, &strict), ValidationErrorKind::InvalidTimestamp);
    // LogAppendTime topics do not look at the producer's timestamps.
    let log_append = ValidationRules {
        timestamp_type: TimestampType::LogAppendTime,
        ..rules()
    };
    validate_client_batches(&b, &log_append, NOW).unwrap();
    // A key problem and a timestamp problem together are INVALID_RECORD.
    let mut mixed = keyed(2);
    mixed[0].key = None;
    mixed[1].timestamp_delta = 2 * 3_600_000;
    let compacted = ValidationRules {
        compacted: true,
        ..rules()
    };
    assert_eq!(
        kind(&batch(mixed), &compacted),
        ValidationErrorKind::InvalidRecord
    );
}

#[test]
fn a_compression_bomb_is_too_large() {
    // One record whose value is 64 MiB of zeros, compressed to a few KiB.
    let big = batch(vec![TestRecord {
        key: Some(b"k".to_vec()),
        value: Some(vec![0; 64 << 20]),
        ..Default::default()
    }]);
    for c in 1..=4 {
        let bomb = compressed(&big, c);
        assert!(bomb.len() < 4 << 20, "codec {c}: {} bytes", bomb.len());
        let err = validate_client_batches(&bomb, &rules(), NOW).unwrap_err();
        assert_eq!(err.kind, ValidationErrorKind::TooLarge, "codec {c}: {err}");
    }
}

#[test]
fn record_errors_are_capped() {
    let b = batch(
        (0..500)
            .map(|_| TestRecord {
                key: None,
                value: Some(b"v".to_vec()),
                ..Default::default()
            })
            .collect(),
    );
    let compacted = ValidationRules {
        compacted: true,
        ..rules()
    };
    let err = validate_client_batches(&b, &compacted, NOW).unwrap_err();
    assert_eq!(err.record_errors.len(), MAX_RECORD_ERRORS);
    assert!(err.message.contains("400 more"), "{err}");
}

/// What validation costs per record next to the CRC the log computes anyway (a measurement,
/// not a check: `cargo test --release -p runnel-broker speed_of_validation -- --ignored
/// --nocapture`; about 21 ns per 100-byte record against 4 ns of CRC on the CI machine).
#[test]
#[ignore]
fn speed_of_validation() {
    let records: Vec<TestRecord> = (0..10_000)
        .map(|_| TestRecord {
            key: None,
            value: Some(vec![7u8; 100]),
            ..Default::default()
        })
        .collect();
    let b = batch(records);
    let start = std::time::Instant::now();
    let n = 300;
    for _ in 0..n {
        validate_client_batches(&b, &rules(), NOW).unwrap();
    }
    let per_record = start.elapsed().as_nanos() as f64 / (n as f64 * 10_000.0);
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(runnel_storage::batch::compute_crc(&b));
    }
    let crc = start.elapsed().as_nanos() as f64 / (n as f64 * 10_000.0);
    println!(
        "validation: {per_record:.1} ns/record; crc: {crc:.1} ns/record ({} bytes)",
        b.len()
    );
}
