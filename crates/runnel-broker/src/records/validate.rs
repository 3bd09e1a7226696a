//! What a client may write: one pass over the batches of a produce request, as Kafka's
//! `LogValidator` does for client appends, before the partition log is locked.
//!
//! Batch rules: the record count matches `lastOffsetDelta + 1`; no control batches from
//! clients; no transactional batches (transactions are not implemented yet); an idempotent
//! batch has a non-negative base sequence. Record rules, for every record (decompressing a
//! compressed batch, bounded by `max.message.bytes`): well-formed lengths and varints (see
//! [`super::walk`]), offset deltas 0..n-1, CreateTime timestamps within
//! `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms` of the broker's clock
//! (KIP-937), and a key on every record of a compacted topic.
//!
//! A batch that breaks a rule fails the whole partition's append, as in Kafka; record-level
//! failures name the offending records (KIP-467's `record_errors`). The CRC is checked by the
//! log on append; here it is checked only when a batch looks wrong, so a corrupted batch is
//! reported as CORRUPT_MESSAGE rather than as whatever rule its garbage happened to break,
//! and a good batch pays for one CRC pass, not two.

use kafka_protocol::ResponseError;
use runnel_storage::batch::{
    self, BatchHeader, COMPRESSION_MASK, CONTROL_BIT, HEADER_LEN, MAGIC_V2, TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
};
use runnel_storage::{LogConfig, TimestampType};

use super::decompress::{decompress, DecompressError};
use super::walk::records;

/// The topic rules a client batch is checked against.
#[derive(Clone, Copy, Debug)]
pub struct ValidationRules {
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
    /// `message.timestamp.type`: timestamps are checked only for CreateTime.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime may be.
    pub before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime may be.
    pub after_max_ms: i64,
    /// `max.message.bytes`: the most a batch's records may decompress to.
    pub max_message_bytes: usize,
}

impl ValidationRules {
    pub fn from_log_config(config: &LogConfig) -> Self {
        ValidationRules {
            compacted: config.cleanup_compact,
            timestamp_type: config.timestamp_type,
            before_max_ms: config.timestamp_before_max_ms,
            after_max_ms: config.timestamp_after_max_ms,
            max_message_bytes: config.max_message_bytes,
        }
    }
}

/// Which Kafka error a refused batch gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationErrorKind {
    /// INVALID_RECORD: the batch breaks a rule of the protocol or the topic.
    InvalidRecord,
    /// INVALID_TIMESTAMP: a record's timestamp is out of the allowed range.
    InvalidTimestamp,
    /// CORRUPT_MESSAGE: the bytes are damaged (CRC, framing, undecompressable).
    Corrupt,
    /// MESSAGE_TOO_LARGE: the records decompress past `max.message.bytes`.
    TooLarge,
}

/// A refused produce batch: the error, a sentence for the client and the log, and the
/// offending records (index within the batch, reason).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub kind: ValidationErrorKind,
    pub message: String,
    pub record_errors: Vec<(i32, String)>,
}

impl ValidationError {
    fn batch(kind: ValidationErrorKind, message: String) -> Self {
        ValidationError {
            kind,
            message,
            record_errors: Vec::new(),
        }
    }

    pub fn code(&self) -> ResponseError {
        match self.kind {
            ValidationErrorKind::InvalidRecord => ResponseError::InvalidRecord,
            ValidationErrorKind::InvalidTimestamp => ResponseError::InvalidTimestamp,
            ValidationErrorKind::Corrupt => ResponseError::CorruptMessage,
            ValidationErrorKind::TooLarge => ResponseError::MessageTooLarge,
        }
    }
}

/// At most this many record errors are listed per batch; the message says how many more.
const MAX_RECORD_ERRORS: usize = 100;

/// True when some batch in `buf` is compressed, so validating it means decompressing (which
/// belongs on a blocking thread). Malformed framing counts as uncompressed: validation
/// refuses it without decompressing anything.
pub fn any_compressed(buf: &[u8]) -> bool {
    let mut pos = 0;
    while let Some(h) = buf.get(pos..).and_then(BatchHeader::new) {
        if h.attributes() & COMPRESSION_MASK != 0 {
            return true;
        }
        match h.total_size() {
            Some(size) => pos += size,
            None => return false,
        }
    }
    false
}

/// Checks every batch of a client's produce request for one partition against `rules`, at
/// the broker time `now_ms`.
pub fn validate_client_batches(
    buf: &[u8],
    rules: &ValidationRules,
    now_ms: i64,
) -> Result<(), ValidationError> {
    let corrupt = |e: runnel_storage::StorageError| {
        ValidationError::batch(ValidationErrorKind::Corrupt, e.to_string())
    };
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let size = BatchHeader::new(rest)
            .and_then(|h| h.total_size())
            .filter(|&s| s <= rest.len());
        let Some(size) = size else {
            // Bad framing: the storage check names what is wrong.
            return Err(batch::validate_batches(buf).err().map_or_else(
                || ValidationError::batch(ValidationErrorKind::Corrupt, "bad batch framing".into()),
                corrupt,
            ));
        };
        let one = &rest[..size];
        if let Err(e) = validate_batch(one, rules, now_ms) {
            batch::validate_batches(one).map_err(corrupt)?;
            return Err(e);
        }
        pos += size;
    }
    if buf.is_empty() {
        return Err(ValidationError::batch(
            ValidationErrorKind::Corrupt,
            "no record batches".into(),
        ));
    }
    Ok(())
}

fn validate_batch(one: &[u8], rules: &ValidationRules, now_ms: i64) -> Result<(), ValidationError> {
    use ValidationErrorKind::*;
    let h = BatchHeader::new(one).expect("framed by the caller");
    if h.magic() != MAGIC_V2 {
        return Err(ValidationError::batch(
            Corrupt,
            format!("record batch magic {} (only v2 is supported)", h.magic()),
        ));
    }
    let attributes = h.attributes();
    if attributes & CONTROL_BIT != 0 {
        return Err(ValidationError::batch(
            InvalidRecord,
            "clients may not write control batches".into(),
        ));
    }
    if attributes & TRANSACTIONAL_BIT != 0 {
        return Err(ValidationError::batch(
            InvalidRecord,
            "transactional batches are not supported: this broker does not implement transactions yet".into(),
        ));
    }
    if attributes & TIMESTAMP_TYPE_BIT != 0 {
        return Err(ValidationError::batch(
            InvalidTimestamp,
            "producers may not set the timestamp type to LogAppendTime; the topic's message.timestamp.type decides".into(),
        ));
    }
    if h.producer_id() >= 0 && h.base_sequence() < 0 {
        return Err(ValidationError::batch(
            InvalidRecord,
            format!(
                "batch of producer {} has the invalid base sequence {}",
                h.producer_id(),
                h.base_sequence()
            ),
        ));
    }
    let count = h.records_count();
    if i64::from(count) != i64::from(h.last_offset_delta()) + 1 {
        return Err(ValidationError::batch(
            InvalidRecord,
            format!(
                "the batch claims {count} records but its lastOffsetDelta is {}",
                h.last_offset_delta()
            ),
        ));
    }
    let data = decompress(
        attributes & COMPRESSION_MASK,
        &one[HEADER_LEN..],
        rules.max_message_bytes,
    )
    .map_err(|e| match e {
        DecompressError::TooLarge { limit } => ValidationError::batch(
            TooLarge,
            format!("the batch's records decompress to more than max.message.bytes ({limit})"),
        ),
        other => ValidationError::batch(Corrupt, other.to_string()),
    })?;
    let iter = records(&data, count)
        .map_err(|e| ValidationError::batch(InvalidRecord, format!("malformed batch: {e}")))?;
    let check_time = rules.timestamp_type == TimestampType::CreateTime;
    let base_ts = h.base_timestamp();
    let mut errors: Vec<(i32, String)> = Vec::new();
    let mut failed = 0usize;
    let mut kind = InvalidRecord;
    for (i, record) in iter.enumerate() {
        let record = record.map_err(|e| {
            ValidationError::batch(InvalidRecord, format!("malformed record batch: {e}"))
        })?;
        let problem = if record.offset_delta as usize != i {
            Some((
                InvalidRecord,
                format!(
                    "offset delta {} where {i} was expected",
                    record.offset_delta
                ),
            ))
        } else if rules.compacted && record.key.is_none() {
            Some((
                InvalidRecord,
                "compacted topic cannot accept a record without a key".to_string(),
            ))
        } else if check_time {
            timestamp_problem(
                base_ts.saturating_add(record.timestamp_delta),
                rules,
                now_ms,
            )
            .map(|why| (InvalidTimestamp, why))
        } else {
            None
        };
        if let Some((k, why)) = problem {
            // Kafka reports INVALID_TIMESTAMP only when every problem is a timestamp.
            if failed == 0 {
                kind = k;
            } else if k != kind {
                kind = InvalidRecord;
            }
            failed += 1;
            if errors.len() < MAX_RECORD_ERRORS {
                errors.push((i as i32, why));
            }
        }
    }
    if failed == 0 {
        return Ok(());
    }
    let more = failed - errors.len();
    let message = format!(
        "{failed} record(s) of the batch were refused, the first (record {}): {}{}",
        errors[0].0,
        errors[0].1,
        if more > 0 {
            format!(" ({more} more not listed)")
        } else {
            String::new()
        }
    );
    Err(ValidationError {
        kind,
        message,
        record_errors: errors,
    })
}

fn timestamp_problem(ts: i64, rules: &ValidationRules, now_ms: i64) -> Option<String> {
    if ts < now_ms.saturating_sub(rules.before_max_ms) {
        Some(format!(
            "timestamp {ts} is more than message.timestamp.before.max.ms ({} ms) before the broker's time {now_ms}",
            rules.before_max_ms
        ))
    } else if ts > now_ms.saturating_add(rules.after_max_ms) {
        Some(format!(
            "timestamp {ts} is more than message.timestamp.after.max.ms ({} ms) after the broker's time {now_ms}",
            rules.after_max_ms
        ))
    } else {
        None
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
