//! Runnel's broker: the replica manager (partition logs this node hosts, following the
//! controller's metadata image), the group coordinator, producer ids and broker/topic
//! configuration. The Kafka gateway drives it; cluster metadata changes go to the Raft
//! controller through [`metadata::MetadataWriter`].

pub mod compaction;
pub mod config;
pub mod error;
pub mod group;
pub mod log_dir;
pub mod metadata;
pub mod partition;
pub mod producer_ids;
pub mod producer_state;
pub mod records;
pub mod replica_manager;
pub mod replication;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use group::GroupCoordinator;
pub use metadata::{
    is_internal_topic, BrokerInfo, ElectionType, MetadataImage, MetadataWriter, PartitionInfo,
    PartitionRef, TopicInfo, Written, NO_LEADER,
};
pub use partition::{now_ms, Partition, ReplicaView};
pub use producer_ids::{ControllerBlockSource, ProducerIdManager};
pub use replica_manager::{has_partition_logs, ReplicaManager};
