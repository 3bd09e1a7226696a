//! Runnel's storage engine: a segmented, append-only partition log holding
//! Kafka v2 record batches as raw bytes.
//!
//! Batches are validated and patched through their 61-byte headers only
//! ([`batch`]); records are never decoded, which keeps append and fetch cost
//! proportional to bytes, not records. Each partition is a [`PartitionLog`]
//! made of segments (`.log` + sparse `.index` + `.timeindex`), recovered
//! after a crash by rescanning everything above the fsynced recovery point.

pub mod batch;
mod compaction;
mod config;
mod epochs;
mod error;
pub mod failpoints;
mod index;
mod log;
mod segment;

pub use compaction::{
    Cleaned, CompactionCodec, CompactionPlan, CompactionStats, RecordKey, DEFAULT_MAX_MAP_KEYS,
};
pub use config::{LogConfig, TimestampType};
pub use epochs::{end_offset_for, LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use error::StorageError;
pub use log::{AppendInfo, PartitionLog, ReadResult, SNAPSHOT_SUFFIX};

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod epochs_tests;
#[cfg(all(test, feature = "failpoints"))]
mod failpoint_tests;
#[cfg(test)]
mod tests;
