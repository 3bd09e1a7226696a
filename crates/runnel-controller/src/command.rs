//! The commands of the metadata log and [`apply`], which replays one onto the image.
//!
//! Kafka's KRaft controller splits a request into records (appended to the log) and a
//! response; state changes only when a record is replayed. Here the command itself is the log
//! record: the active controller fills in everything that is not deterministic (the topic id,
//! which doubles as the replica-placement seed, the broker incarnation) before proposing it,
//! and [`apply`] is a pure function of the image and the command. Every node replays the same
//! log and computes the same image and the same [`CommandResult`].
//!
//! A command that fails validation leaves the image unchanged and yields a
//! [`ControllerError`] (with its Kafka error code), on every node alike.
//!
//! One module per area, as Kafka has one `*ControlManager` per area: `cluster` (brokers),
//! `topics` (topics, partitions, configs), `replication` (leaders, ISRs, elections),
//! `producer_ids`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::{Endpoint, MetadataImage, PartitionInfo, TopicInfo};
use crate::{cluster, producer_ids, replication, topics};

/// Most partitions a topic may have. Kafka has no fixed cap; this one keeps a mistyped count
/// from making every node of the cluster allocate without bound while replaying the log.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// Largest producer-id block one command may take (Kafka's brokers ask for 1000 at a time).
pub const MAX_PRODUCER_ID_BLOCK: i32 = 1_000_000;

/// Which leader ElectLeaders picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// Make the first replica leader again if it is unfenced and in the ISR.
    Preferred,
    /// Give a leaderless partition a leader: from the ISR if one is live, otherwise any live
    /// replica (which may lose acknowledged records).
    Unclean,
}

impl ElectionType {
    /// From ElectLeaders' `election_type` field (0 preferred, 1 unclean).
    pub fn from_kafka(value: i8) -> Option<Self> {
        match value {
            0 => Some(Self::Preferred),
            1 => Some(Self::Unclean),
            _ => None,
        }
    }
}

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: i32,
}

impl PartitionRef {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// A command of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerCommand {
    /// Sets the cluster id once (the first command the first active controller proposes).
    /// Applying it again with the same id is a no-op; another id is refused.
    InitCluster {
        cluster_id: String,
    },
    /// A broker process announces itself. The registration starts fenced. The same
    /// incarnation again (a retried request) only updates the addresses; a new incarnation is
    /// a restart: the broker is fenced out of ISRs and leaderships first, then re-registered
    /// with a new broker epoch.
    RegisterBroker {
        id: i32,
        incarnation: Uuid,
        host: String,
        port: i32,
        /// Every named listener; `host`/`port` are the first. Absent in commands written
        /// before named listeners existed.
        #[serde(default)]
        listeners: Vec<Endpoint>,
        rpc_address: String,
        rack: Option<String>,
        /// The id of the broker's data dir. Another one than registered before means an empty
        /// (replaced) disk: the broker leaves every ISR and ELR.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        directory_id: Option<Uuid>,
        /// The broker epoch its clean-shutdown marker holds, -1 without one (Kafka's
        /// PreviousBrokerEpoch). Anything but the registered epoch is an unclean shutdown:
        /// with ELR enabled, the broker leaves every ISR and ELR. `None` (commands written
        /// before this existed) skips the check.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_broker_epoch: Option<i64>,
    },
    /// The cluster's min.insync.replicas default (the active controller's config). Setting it
    /// enables eligible leader replicas (KIP-966); changing it clears every ELR.
    SetMinInsyncReplicas {
        value: i32,
    },
    /// The broker's session expired (or it shut down): move its leaderships to other live ISR
    /// members and take it out of ISRs. Fencing a fenced broker is a no-op.
    FenceBroker {
        id: i32,
    },
    /// The broker caught up with the metadata log: it may lead and join ISRs again. Leaderless
    /// partitions that have it in their ISR (or, with unclean election enabled, as a replica)
    /// get it as leader. Unfencing an unfenced broker is a no-op.
    UnfenceBroker {
        id: i32,
    },
    /// `id` is drawn at random by the active controller and also seeds replica placement.
    /// With `assignment`, `partitions` and `replication_factor` may be -1 (or must match it);
    /// an empty assignment means none. Without one, `partitions` and `replication_factor`
    /// are the resolved counts (the active controller applies `num.partitions` /
    /// `default.replication.factor` for -1 before proposing).
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows the topic to `total` partitions. `assignment` lists the replicas of the new
    /// partitions only (`total - current` entries); empty means none.
    CreatePartitions {
        name: String,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// The partition leader changes the ISR (Kafka's AlterPartition). `leader_epoch` and
    /// `partition_epoch` are the values the leader last saw; a mismatch refuses the change.
    /// `topic_id`, when given, must match the topic's id, so a request meant for a deleted
    /// topic never applies to a new topic of the same name.
    AlterPartition {
        topic: String,
        #[serde(default)]
        topic_id: Option<Uuid>,
        partition: i32,
        leader_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
        /// (broker, broker epoch) of members the change adds, as their fetches carried it
        /// (KIP-903); a broker registered under another epoch since is refused.
        #[serde(default)]
        joining_broker_epochs: Vec<(i32, i64)>,
    },
    /// `None` means every partition of every topic; then partitions that need no election are
    /// left out of the result.
    ElectLeaders {
        topic_partitions: Option<Vec<PartitionRef>>,
        election: ElectionType,
    },
    /// Replaces the topic's config overrides with `configs`.
    AlterConfigs {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    /// Hands the broker the next `count` producer ids.
    AllocateProducerIds {
        broker_id: i32,
        count: i32,
    },
}

/// The outcome of one partition of an ElectLeaders command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    /// The new leader, or why none was elected.
    pub result: Result<i32, ControllerError>,
}

/// Producer ids `[first, first + size)`, owned by `broker_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub broker_id: i32,
    pub first: i64,
    pub size: i32,
}

/// What applying a command produced: the response the active controller sends back.
/// `changed` lists the partitions whose leader or ISR changed, in topic then partition order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    ClusterInitialized {
        cluster_id: String,
    },
    BrokerRegistered {
        broker_id: i32,
        broker_epoch: i64,
        changed: Vec<PartitionRef>,
    },
    BrokerFenced {
        broker_id: i32,
        changed: Vec<PartitionRef>,
    },
    BrokerUnfenced {
        broker_id: i32,
        changed: Vec<PartitionRef>,
    },
    MinInsyncReplicasSet {
        value: i32,
        changed: Vec<PartitionRef>,
    },
    TopicCreated(TopicInfo),
    TopicDeleted {
        name: String,
        id: Uuid,
    },
    /// The partitions added.
    PartitionsCreated {
        name: String,
        partitions: Vec<PartitionInfo>,
    },
    /// The partition after the change (Kafka's AlterPartition response carries it).
    PartitionAltered(PartitionInfo),
    LeadersElected(Vec<ElectionResult>),
    ConfigsAltered {
        topic: String,
        changed: Vec<PartitionRef>,
    },
    ProducerIdsAllocated(ProducerIdBlock),
}

/// Replays one command onto the image. Deterministic: no clock, no randomness, no I/O; a
/// refused command leaves the image as it was.
pub fn apply(
    image: &mut MetadataImage,
    command: &ControllerCommand,
) -> Result<CommandResult, ControllerError> {
    use ControllerCommand::*;
    match command {
        InitCluster { cluster_id } => cluster::init_cluster(image, cluster_id),
        RegisterBroker {
            id,
            incarnation,
            host,
            port,
            listeners,
            rpc_address,
            rack,
            directory_id,
            previous_broker_epoch,
        } => cluster::register_broker(
            image,
            cluster::Registration {
                id: *id,
                incarnation: *incarnation,
                host,
                port: *port,
                listeners,
                rpc_address,
                rack: rack.as_deref(),
                directory_id: *directory_id,
                previous_broker_epoch: *previous_broker_epoch,
            },
        ),
        SetMinInsyncReplicas { value } => cluster::set_min_insync_replicas(image, *value),
        FenceBroker { id } => cluster::fence_broker(image, *id),
        UnfenceBroker { id } => cluster::unfence_broker(image, *id),
        CreateTopic {
            name,
            id,
            partitions,
            replication_factor,
            assignment,
            configs,
        } => topics::create_topic(
            image,
            name,
            *id,
            *partitions,
            *replication_factor,
            assignment.as_deref(),
            configs,
        ),
        DeleteTopic { name } => topics::delete_topic(image, name),
        CreatePartitions {
            name,
            total,
            assignment,
        } => topics::create_partitions(image, name, *total, assignment.as_deref()),
        AlterPartition {
            topic,
            topic_id,
            partition,
            leader_id,
            leader_epoch,
            partition_epoch,
            new_isr,
            joining_broker_epochs,
        } => replication::alter_partition(
            image,
            replication::AlterPartition {
                topic,
                topic_id: *topic_id,
                partition: *partition,
                leader_id: *leader_id,
                leader_epoch: *leader_epoch,
                partition_epoch: *partition_epoch,
                new_isr,
                joining_broker_epochs,
            },
        ),
        ElectLeaders {
            topic_partitions,
            election,
        } => Ok(replication::elect_leaders(
            image,
            topic_partitions.as_deref(),
            *election,
        )),
        AlterConfigs { topic, configs } => topics::alter_configs(image, topic, configs),
        AllocateProducerIds { broker_id, count } => {
            producer_ids::allocate(image, *broker_id, *count)
        }
    }
}

impl MetadataImage {
    /// [`apply`] as a method.
    pub fn apply(&mut self, command: &ControllerCommand) -> Result<CommandResult, ControllerError> {
        apply(self, command)
    }
}
