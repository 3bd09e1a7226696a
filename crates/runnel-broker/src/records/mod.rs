//! Record-level reading of v2 record batches, for the few places the broker looks inside a
//! batch: validating what clients produce, the log cleaner's keys, ListOffsets by timestamp
//! and the group coordinator's own records. Every length and count is checked against the
//! bytes left and decompression is bounded, so a batch with a lying record count, garbage
//! records or a compression bomb is refused instead of exhausting memory.
//!
//! The produce and fetch paths never decode records: produce walks each record once on the
//! bytes ([`validate`]), without materialising them.

/// The least a stored batch's records may decompress to when the broker reads them (the log
/// cleaner, ListOffsets by timestamp, the group coordinator's loading): a batch may predate a
/// lowered `max.message.bytes`, and must stay readable.
pub const MIN_STORED_DECOMPRESS_LIMIT: usize = 16 << 20;

/// The decompression limit for reading stored batches of a topic whose `max.message.bytes` is
/// `max_message_bytes`.
pub fn stored_decompress_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.max(MIN_STORED_DECOMPRESS_LIMIT)
}

pub mod decompress;
pub mod validate;
pub mod walk;

pub use decompress::{decompress, DecompressError};
/// The log's framing and CRC check, which every batch a partition appends passes.
pub use runnel_storage::batch::validate_batches;
pub use validate::{
    any_compressed, validate_client_batches, ValidationError, ValidationErrorKind, ValidationRules,
};
pub use walk::{records, RecordError, RecordView, Records};
