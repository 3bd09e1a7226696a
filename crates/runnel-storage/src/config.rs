//! Per-partition log configuration, mirroring Kafka's topic-level settings.

/// How the broker treats record timestamps (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    #[default]
    CreateTime,
    /// Overwrite each batch's maxTimestamp with the broker's clock at append.
    LogAppendTime,
}

impl TimestampType {
    /// Parses the Kafka config value (`CreateTime` / `LogAppendTime`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CreateTime" => Some(TimestampType::CreateTime),
            "LogAppendTime" => Some(TimestampType::LogAppendTime),
            _ => None,
        }
    }

    /// The Kafka config value for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// Settings of one partition log. Field names follow the Kafka topic configs
/// they implement so the broker can map `DescribeConfigs`/`AlterConfigs` 1:1.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this.
    pub segment_ms: u64,
    /// `retention.ms`: delete segments whose newest timestamp is older; -1 = unlimited.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is bigger; -1 = unlimited.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes of log between sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: largest accepted single batch.
    pub max_message_bytes: usize,
    /// `flush.messages`: fsync after this many records (u64::MAX = leave it to the OS).
    pub flush_messages: u64,
    /// `flush.ms`: fsync interval used by [`crate::PartitionLog::flush_if_due`].
    pub flush_ms: u64,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` contains `delete`: retention.ms / retention.bytes delete old segments.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the log cleaner keeps the latest record per key
    /// (see [`crate::PartitionLog::compact`]).
    pub cleanup_compact: bool,
    /// `min.cleanable.dirty.ratio`: clean only when dirty bytes / cleanable bytes reach this.
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms`: how long a tombstone survives after it was first cleaned.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments holding records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `message.timestamp.before.max.ms`: how far before the broker's clock a CreateTime
    /// record may be (checked by the broker on produce).
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far after the broker's clock a CreateTime
    /// record may be.
    pub timestamp_after_max_ms: i64,
}

impl Default for LogConfig {
    /// Kafka's broker defaults.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            flush_messages: u64::MAX,
            flush_ms: u64::MAX,
            timestamp_type: TimestampType::CreateTime,
            cleanup_delete: true,
            cleanup_compact: false,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
        }
    }
}
