//! Storage errors. Each variant maps onto one Kafka error code so the broker
//! can answer clients without inspecting message strings.

use thiserror::Error;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The bytes are not a well-formed v2 record batch (bad magic, length,
    /// CRC, truncated, no records). Kafka: `CORRUPT_MESSAGE`.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),

    /// A single batch is larger than `max.message.bytes`. Kafka: `MESSAGE_TOO_LARGE`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    BatchTooLarge { size: usize, max: usize },

    /// The requested offset is outside `[log_start, log_end]`. Kafka: `OFFSET_OUT_OF_RANGE`.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },

    /// Batches a follower copies from its leader do not go on from its log: a batch starts
    /// below the log end offset or at or before the previous batch's last offset. Gaps are
    /// fine; going back is not. Kafka's `UnexpectedAppendOffsetException` and
    /// `OffsetsOutOfOrderException`: internal to replication, never a client's error.
    #[error(
        "offsets go backwards: the batch at byte {position} starts at offset {base_offset}, \
         below the next offset {expected}"
    )]
    OffsetsOutOfOrder {
        position: usize,
        base_offset: i64,
        expected: i64,
    },

    /// An I/O call failed; `context` names the file and operation.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A record breaks a rule of the topic (a null key on a compacted topic).
    /// Kafka: `INVALID_RECORD`.
    #[error("invalid record: {0}")]
    InvalidRecord(String),

    /// The partition directory is in a state recovery cannot repair.
    #[error("corrupt data directory: {0}")]
    CorruptDataDir(String),

    /// A disk error left the log unable to trust its files (a failed fsync, or a failed
    /// write it could not undo); it refuses every later write. Kafka: `KAFKA_STORAGE_ERROR`,
    /// and the broker takes the directory offline.
    #[error("the log is offline after a disk error: {0}")]
    LogOffline(String),
}

impl StorageError {
    /// Wraps an I/O error with a sentence saying what we were doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this error means the disk failed, so the directory must go offline (Kafka
    /// treats every `IOException` so). A full disk (ENOSPC, EDQUOT) on a write the log undid
    /// is not one: nothing changed, and writes work again once space is freed.
    pub fn is_disk_failure(&self) -> bool {
        match self {
            StorageError::LogOffline(_) => true,
            StorageError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }

    /// A failed fsync: after one, Linux may have dropped the written pages and reports the
    /// error only once (a second fsync "succeeds"), so nothing written since the last good
    /// fsync can be trusted, whatever the errno.
    pub(crate) fn fsync_failed(self) -> Self {
        StorageError::LogOffline(format!(
            "{self}; the kernel may have dropped what was written since the last fsync"
        ))
    }
}

/// Shorthand for attaching context to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T, StorageError> {
        self.map_err(|e| StorageError::io(f(), e))
    }
}
