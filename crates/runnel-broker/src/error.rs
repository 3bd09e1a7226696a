//! Broker errors, each mapped to the Kafka error code clients see on the wire.

use kafka_protocol::ResponseError;
use runnel_controller::error::ControllerError;
use runnel_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of topic '{topic}' does not exist")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("only {in_sync} in-sync replicas, min.insync.replicas is {needed}")]
    NotEnoughReplicas { in_sync: usize, needed: usize },
    /// Written and replicated, but the ISR shrank below `min.insync.replicas` meanwhile.
    #[error("the records were written but only {in_sync} replicas are in sync now, min.insync.replicas is {needed}")]
    NotEnoughReplicasAfterAppend { in_sync: usize, needed: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A client's batch broke a record rule (Kafka's LogValidator); may name records.
    #[error(transparent)]
    Validation(#[from] crate::records::ValidationError),
    /// An idempotent producer's batch failed its sequence or epoch check.
    #[error(transparent)]
    Producer(#[from] crate::producer_state::ProducerError),
    /// This node does not lead the partition (it may follow it, or hold no replica).
    #[error("this node is not the leader of partition {partition} of topic '{topic}'")]
    NotLeader { topic: String, partition: i32 },
    /// An acks=all produce was not replicated to the in-sync replicas in time.
    #[error("{0}")]
    RequestTimedOut(String),
    /// No active controller answered in time; the client retries.
    #[error("no active controller answered: {0}")]
    ControllerUnavailable(String),
    /// The controller refused the command.
    #[error("{0}")]
    Controller(ControllerError),
    /// The local metadata is older than the partition's log: wait for newer metadata.
    #[error("{0}")]
    StaleMetadata(String),
    /// The data dir cannot be used (not a directory, in use, unreadable, inconsistent).
    #[error("{0}")]
    DataDir(String),
    /// A new leader does not know its high watermark yet (KIP-207): the client retries.
    #[error("{0}")]
    OffsetNotAvailable(String),
    /// The data dir went offline after a disk error (see [`crate::log_dir::LogDir`]).
    #[error("{0}")]
    LogDirOffline(String),
}

impl BrokerError {
    /// The topic already exists, whether this node or the controller noticed.
    pub fn is_topic_exists(&self) -> bool {
        matches!(
            self,
            BrokerError::TopicExists(_)
                | BrokerError::Controller(ControllerError::TopicAlreadyExists(_))
        )
    }

    /// A read asked for an offset outside the log (the client resets its position; nothing
    /// went wrong on this node).
    pub fn is_offset_out_of_range(&self) -> bool {
        matches!(
            self,
            BrokerError::Storage(StorageError::OffsetOutOfRange { .. })
        )
    }

    /// The Kafka error code for this error.
    pub fn code(&self) -> ResponseError {
        match self {
            BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
                ResponseError::UnknownTopicOrPartition
            }
            BrokerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
            BrokerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            BrokerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            BrokerError::InvalidConfig(_) => ResponseError::InvalidConfig,
            BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
            BrokerError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            BrokerError::NotEnoughReplicasAfterAppend { .. } => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            BrokerError::Storage(e) => match e {
                StorageError::CorruptBatch(_) => ResponseError::CorruptMessage,
                StorageError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
                StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
                _ => ResponseError::KafkaStorageError,
            },
            BrokerError::Producer(e) => e.code(),
            BrokerError::Validation(e) => e.code(),
            BrokerError::NotLeader { .. } | BrokerError::StaleMetadata(_) => {
                ResponseError::NotLeaderOrFollower
            }
            BrokerError::ControllerUnavailable(_) | BrokerError::RequestTimedOut(_) => {
                ResponseError::RequestTimedOut
            }
            BrokerError::Controller(e) => e.code(),
            BrokerError::OffsetNotAvailable(_) => ResponseError::OffsetNotAvailable,
            BrokerError::DataDir(_) | BrokerError::LogDirOffline(_) => {
                ResponseError::KafkaStorageError
            }
        }
    }
}
