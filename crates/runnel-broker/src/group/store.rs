//! Reading and writing one `__consumer_offsets` partition: replaying it into the latest value
//! per key, and appending batches of coordinator records.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::ResponseError;
use runnel_storage::AppendInfo;

use super::records::{build_batch, decode_batches, CoordinatorRecord, GroupValue, OffsetValue};
use crate::error::BrokerError;
use crate::replica_manager::Partition;

/// How much one read of the log asks for while loading.
const LOAD_READ_BYTES: usize = 1 << 20;

/// The state a partition's records describe: the latest value per key, tombstones applied.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) groups: HashMap<String, GroupValue>,
    pub(crate) offsets: HashMap<String, BTreeMap<(String, i32), OffsetValue>>,
}

impl Replayed {
    pub(crate) fn apply(&mut self, record: CoordinatorRecord) {
        match record {
            CoordinatorRecord::Group { group, value } => match value {
                Some(v) => {
                    self.groups.insert(group, v);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
            CoordinatorRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    self.offsets
                        .entry(group)
                        .or_default()
                        .insert((topic, partition), v);
                }
                None => {
                    if let Some(offsets) = self.offsets.get_mut(&group) {
                        offsets.remove(&(topic, partition));
                        if offsets.is_empty() {
                            self.offsets.remove(&group);
                        }
                    }
                }
            },
        }
    }
}

/// Reads the partition from its log start to its log end and replays every record. The end,
/// not the high watermark: a new leader's high watermark can lag until its followers fetch,
/// and everything in its log was written by a leader of the partition (Kafka loads to the
/// log end too).
/// A record that cannot be decoded is logged and skipped (the state its key had before stays),
/// so one bad record does not keep the partition's groups from loading.
pub(crate) fn replay_partition(partition: &Partition) -> Result<Replayed, BrokerError> {
    let mut replayed = Replayed::default();
    let mut offset = partition.log_start_offset()?;
    let end = partition.log_end_offset()?;
    let corrupt = |what: String| {
        BrokerError::DataDir(format!(
            "{}-{} cannot be loaded: {what}",
            partition.topic(),
            partition.index()
        ))
    };
    while offset < end {
        let read = partition.read_to_log_end(offset, LOAD_READ_BYTES, true)?;
        if read.records.is_empty() {
            break;
        }
        let decoded = decode_batches(read.records).map_err(|e| corrupt(e.to_string()))?;
        for skipped in &decoded.skipped {
            tracing::warn!(
                topic = partition.topic(),
                partition = partition.index(),
                offset = skipped.offset,
                reason = %skipped.reason,
                "skipping a record that cannot be decoded while loading group state"
            );
        }
        for record in decoded.records {
            replayed.apply(record);
        }
        match decoded.next {
            Some(next) if next > offset => offset = next,
            _ => return Err(corrupt(format!("no progress reading at offset {offset}"))),
        }
    }
    Ok(replayed)
}

/// Appends `records` as one batch.
pub(crate) fn append(
    partition: &Partition,
    leader_epoch: i32,
    records: &[CoordinatorRecord],
    now_ms: i64,
) -> Result<AppendInfo, BrokerError> {
    let mut batch =
        build_batch(records, now_ms).map_err(|e| BrokerError::InvalidRequest(e.to_string()))?;
    partition.append(&mut batch, leader_epoch)
}

/// The error an OffsetCommit reports when its records could not be written (Kafka's mapping
/// in `GroupMetadataManager.storeOffsets`).
pub(crate) fn commit_error(e: &BrokerError) -> ResponseError {
    match e.code() {
        ResponseError::UnknownTopicOrPartition
        | ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
            ResponseError::NotCoordinator
        }
        ResponseError::MessageTooLarge
        | ResponseError::RecordListTooLarge
        | ResponseError::InvalidFetchSize => ResponseError::InvalidCommitOffsetSize,
        other => other,
    }
}

/// The error a SyncGroup (or static rejoin) reports when the group could not be written
/// (Kafka's mapping in `GroupMetadataManager.storeGroup`).
pub(crate) fn store_error(e: &BrokerError) -> ResponseError {
    match commit_error(e) {
        ResponseError::InvalidCommitOffsetSize => ResponseError::UnknownServerError,
        other => other,
    }
}
