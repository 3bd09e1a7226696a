//! Runnel's broker: the replica manager (partition logs this node hosts), topic metadata and
//! broker/topic configuration. The Kafka gateway drives it; later the Raft controller will own
//! the metadata and replication will move high watermarks.

pub mod compaction;
pub mod config;
pub mod error;
pub mod group;
pub mod metadata;
pub mod producer_ids;
pub mod producer_state;
pub mod replica_manager;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use group::GroupCoordinator;
pub use metadata::{is_internal_topic, BrokerInfo, MetadataImage, PartitionInfo, TopicInfo};
pub use producer_ids::ProducerIdManager;
pub use replica_manager::{now_ms, Partition, ReplicaManager};
