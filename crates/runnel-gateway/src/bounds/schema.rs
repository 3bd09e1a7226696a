//! The request schemas of every API the gateway serves, as the bounds walker needs them: each
//! field's encoding and the versions it is present in, in wire order, one module per API.
//! They follow Kafka's message definitions (`clients/src/main/resources/common/message/
//! *Request.json`) as kafka-protocol 0.18 decodes them (where the two differ, the decoder
//! wins: it is what runs). `schemas_match_the_decoder` (in `tests.rs`) checks every one
//! against the decoder, for every supported version, and each schema names the versions it
//! was written for, which must be exactly those the handlers' `apis!` list serves
//! (`schemas_cover_exactly_the_served_versions`): adding an API or a version starts with its
//! schema here.
//!
//! Conventions: `from(n)` is Kafka's `"n+"`, `v(a, b)` is `"a-b"`; a field whose versions
//! start at or below the API's lowest supported version is written `from(0)`. Tagged fields
//! carry their tag; they exist only in flexible versions. Compact and classic encodings of
//! the same field are one entry: the walker picks by the request's header version.
//! Nullability is left out on purpose (see [`Ty::Str`]).

use std::mem::size_of;

use kafka_protocol::messages::*;

use super::{Field, Struct, Ty, Versions};

const fn v(min: i16, max: i16) -> Versions {
    Versions { min, max }
}

const fn from(min: i16) -> Versions {
    v(min, i16::MAX)
}

const fn field(name: &'static str, ty: Ty, versions: Versions) -> Field {
    Field {
        name,
        ty,
        versions,
        tag: None,
    }
}

const fn tagged(name: &'static str, ty: Ty, versions: Versions, tag: u32) -> Field {
    Field {
        name,
        ty,
        versions,
        tag: Some(tag),
    }
}

/// The body schema of a request and the versions it describes: those the gateway serves
/// (`schemas_cover_exactly_the_served_versions` checks that the two agree). `None` for an API
/// the gateway does not serve.
pub(crate) fn request_schema(key: ApiKey) -> Option<(Versions, &'static Struct)> {
    let (versions, body) = match key {
        ApiKey::Produce => (v(3, 13), &produce::REQUEST),
        ApiKey::Fetch => (v(4, 18), &fetch::REQUEST),
        ApiKey::ListOffsets => (v(1, 10), &list_offsets::REQUEST),
        ApiKey::Metadata => (v(0, 13), &metadata::REQUEST),
        ApiKey::ApiVersions => (v(0, 4), &api_versions::REQUEST),
        ApiKey::CreateTopics => (v(2, 7), &create_topics::REQUEST),
        ApiKey::DeleteTopics => (v(1, 6), &delete_topics::REQUEST),
        ApiKey::DescribeConfigs => (v(1, 4), &describe_configs::REQUEST),
        ApiKey::AlterConfigs => (v(0, 2), &alter_configs::REQUEST),
        ApiKey::CreatePartitions => (v(0, 3), &create_partitions::REQUEST),
        ApiKey::IncrementalAlterConfigs => (v(0, 1), &incremental_alter_configs::REQUEST),
        ApiKey::DescribeCluster => (v(0, 2), &describe_cluster::REQUEST),
        ApiKey::FindCoordinator => (v(0, 6), &find_coordinator::REQUEST),
        ApiKey::JoinGroup => (v(0, 9), &join_group::REQUEST),
        ApiKey::SyncGroup => (v(0, 5), &sync_group::REQUEST),
        ApiKey::Heartbeat => (v(0, 4), &heartbeat::REQUEST),
        ApiKey::LeaveGroup => (v(0, 5), &leave_group::REQUEST),
        ApiKey::OffsetCommit => (v(2, 9), &offset_commit::REQUEST),
        ApiKey::OffsetFetch => (v(1, 9), &offset_fetch::REQUEST),
        ApiKey::ListGroups => (v(0, 5), &list_groups::REQUEST),
        ApiKey::DescribeGroups => (v(0, 6), &describe_groups::REQUEST),
        ApiKey::DeleteGroups => (v(0, 2), &delete_groups::REQUEST),
        ApiKey::OffsetDelete => (v(0, 0), &offset_delete::REQUEST),
        ApiKey::InitProducerId => (v(0, 5), &init_producer_id::REQUEST),
        ApiKey::ElectLeaders => (v(0, 2), &elect_leaders::REQUEST),
        ApiKey::OffsetForLeaderEpoch => (v(2, 4), &offset_for_leader_epoch::REQUEST),
        _ => return None,
    };
    Some((versions, body))
}

// Produce (produce_request)
mod produce {
    use super::*;

    pub(super) static PARTITION_PRODUCE_DATA: Struct = Struct {
        size: size_of::<produce_request::PartitionProduceData>(),
        fields: &[
            field("index", Ty::Int32, from(0)),
            field("records", Ty::Bytes, from(0)),
        ],
    };

    pub(super) static TOPIC_PRODUCE_DATA: Struct = Struct {
        size: size_of::<produce_request::TopicProduceData>(),
        fields: &[
            field("name", Ty::Str, v(0, 12)),
            field("topic_id", Ty::Uuid, from(13)),
            field(
                "partition_data",
                Ty::Array(&Ty::Struct(&PARTITION_PRODUCE_DATA)),
                from(0),
            ),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<ProduceRequest>(),
        fields: &[
            field("transactional_id", Ty::Str, from(0)),
            field("acks", Ty::Int16, from(0)),
            field("timeout_ms", Ty::Int32, from(0)),
            field(
                "topic_data",
                Ty::Array(&Ty::Struct(&TOPIC_PRODUCE_DATA)),
                from(0),
            ),
        ],
    };
}

// Fetch (fetch_request)
mod fetch {
    use super::*;

    pub(super) static FETCH_PARTITION: Struct = Struct {
        size: size_of::<fetch_request::FetchPartition>(),
        fields: &[
            field("partition", Ty::Int32, from(0)),
            field("current_leader_epoch", Ty::Int32, from(9)),
            field("fetch_offset", Ty::Int64, from(0)),
            field("last_fetched_epoch", Ty::Int32, from(12)),
            field("log_start_offset", Ty::Int64, from(5)),
            field("partition_max_bytes", Ty::Int32, from(0)),
            tagged("replica_directory_id", Ty::Uuid, from(17), 0),
            tagged("high_watermark", Ty::Int64, from(18), 1),
        ],
    };

    pub(super) static FETCH_TOPIC: Struct = Struct {
        size: size_of::<fetch_request::FetchTopic>(),
        fields: &[
            field("topic", Ty::Str, v(0, 12)),
            field("topic_id", Ty::Uuid, from(13)),
            field(
                "partitions",
                Ty::Array(&Ty::Struct(&FETCH_PARTITION)),
                from(0),
            ),
        ],
    };

    pub(super) static FORGOTTEN_TOPIC: Struct = Struct {
        size: size_of::<fetch_request::ForgottenTopic>(),
        fields: &[
            field("topic", Ty::Str, v(7, 12)),
            field("topic_id", Ty::Uuid, from(13)),
            field("partitions", Ty::Array(&Ty::Int32), from(7)),
        ],
    };

    pub(super) static REPLICA_STATE: Struct = Struct {
        size: size_of::<fetch_request::ReplicaState>(),
        fields: &[
            field("replica_id", Ty::Int32, from(15)),
            field("replica_epoch", Ty::Int64, from(15)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<FetchRequest>(),
        fields: &[
            tagged("cluster_id", Ty::Str, from(0), 0),
            field("replica_id", Ty::Int32, v(0, 14)),
            tagged("replica_state", Ty::Struct(&REPLICA_STATE), from(15), 1),
            field("max_wait_ms", Ty::Int32, from(0)),
            field("min_bytes", Ty::Int32, from(0)),
            field("max_bytes", Ty::Int32, from(0)),
            field("isolation_level", Ty::Int8, from(0)),
            field("session_id", Ty::Int32, from(7)),
            field("session_epoch", Ty::Int32, from(7)),
            field("topics", Ty::Array(&Ty::Struct(&FETCH_TOPIC)), from(0)),
            field(
                "forgotten_topics_data",
                Ty::Array(&Ty::Struct(&FORGOTTEN_TOPIC)),
                from(7),
            ),
            field("rack_id", Ty::Str, from(11)),
        ],
    };
}

// ListOffsets (list_offsets_request)
mod list_offsets {
    use super::*;

    pub(super) static LIST_OFFSETS_PARTITION: Struct = Struct {
        size: size_of::<list_offsets_request::ListOffsetsPartition>(),
        fields: &[
            field("partition_index", Ty::Int32, from(0)),
            field("current_leader_epoch", Ty::Int32, from(4)),
            field("timestamp", Ty::Int64, from(0)),
        ],
    };

    pub(super) static LIST_OFFSETS_TOPIC: Struct = Struct {
        size: size_of::<list_offsets_request::ListOffsetsTopic>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field(
                "partitions",
                Ty::Array(&Ty::Struct(&LIST_OFFSETS_PARTITION)),
                from(0),
            ),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<ListOffsetsRequest>(),
        fields: &[
            field("replica_id", Ty::Int32, from(0)),
            field("isolation_level", Ty::Int8, from(2)),
            field(
                "topics",
                Ty::Array(&Ty::Struct(&LIST_OFFSETS_TOPIC)),
                from(0),
            ),
            field("timeout_ms", Ty::Int32, from(10)),
        ],
    };
}

// Metadata (metadata_request)
mod metadata {
    use super::*;

    pub(super) static METADATA_REQUEST_TOPIC: Struct = Struct {
        size: size_of::<metadata_request::MetadataRequestTopic>(),
        fields: &[
            field("topic_id", Ty::Uuid, from(10)),
            field("name", Ty::Str, from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<MetadataRequest>(),
        fields: &[
            field(
                "topics",
                Ty::Array(&Ty::Struct(&METADATA_REQUEST_TOPIC)),
                from(0),
            ),
            field("allow_auto_topic_creation", Ty::Bool, from(4)),
            field("include_cluster_authorized_operations", Ty::Bool, v(8, 10)),
            field("include_topic_authorized_operations", Ty::Bool, from(8)),
        ],
    };
}

// ApiVersions (api_versions_request)
mod api_versions {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<ApiVersionsRequest>(),
        fields: &[
            field("client_software_name", Ty::Str, from(3)),
            field("client_software_version", Ty::Str, from(3)),
        ],
    };
}

// CreateTopics (create_topics_request)
mod create_topics {
    use super::*;

    pub(super) static CREATABLE_REPLICA_ASSIGNMENT: Struct = Struct {
        size: size_of::<create_topics_request::CreatableReplicaAssignment>(),
        fields: &[
            field("partition_index", Ty::Int32, from(0)),
            field("broker_ids", Ty::Array(&Ty::Int32), from(0)),
        ],
    };

    pub(super) static CREATABLE_TOPIC: Struct = Struct {
        size: size_of::<create_topics_request::CreatableTopic>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field("num_partitions", Ty::Int32, from(0)),
            field("replication_factor", Ty::Int16, from(0)),
            field(
                "assignments",
                Ty::Array(&Ty::Struct(&CREATABLE_REPLICA_ASSIGNMENT)),
                from(0),
            ),
            field(
                "configs",
                Ty::Array(&Ty::Struct(&CREATABLE_TOPIC_CONFIG)),
                from(0),
            ),
        ],
    };

    pub(super) static CREATABLE_TOPIC_CONFIG: Struct = Struct {
        size: size_of::<create_topics_request::CreatableTopicConfig>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field("value", Ty::Str, from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<CreateTopicsRequest>(),
        fields: &[
            field("topics", Ty::Array(&Ty::Struct(&CREATABLE_TOPIC)), from(0)),
            field("timeout_ms", Ty::Int32, from(0)),
            field("validate_only", Ty::Bool, from(0)),
        ],
    };
}

// DeleteTopics (delete_topics_request)
mod delete_topics {
    use super::*;

    pub(super) static DELETE_TOPIC_STATE: Struct = Struct {
        size: size_of::<delete_topics_request::DeleteTopicState>(),
        fields: &[
            field("name", Ty::Str, from(6)),
            field("topic_id", Ty::Uuid, from(6)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<DeleteTopicsRequest>(),
        fields: &[
            field(
                "topics",
                Ty::Array(&Ty::Struct(&DELETE_TOPIC_STATE)),
                from(6),
            ),
            field("topic_names", Ty::Array(&Ty::Str), v(0, 5)),
            field("timeout_ms", Ty::Int32, from(0)),
        ],
    };
}

// DescribeConfigs (describe_configs_request)
mod describe_configs {
    use super::*;

    pub(super) static DESCRIBE_CONFIGS_RESOURCE: Struct = Struct {
        size: size_of::<describe_configs_request::DescribeConfigsResource>(),
        fields: &[
            field("resource_type", Ty::Int8, from(0)),
            field("resource_name", Ty::Str, from(0)),
            field("configuration_keys", Ty::Array(&Ty::Str), from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<DescribeConfigsRequest>(),
        fields: &[
            field(
                "resources",
                Ty::Array(&Ty::Struct(&DESCRIBE_CONFIGS_RESOURCE)),
                from(0),
            ),
            field("include_synonyms", Ty::Bool, from(0)),
            field("include_documentation", Ty::Bool, from(3)),
        ],
    };
}

// AlterConfigs (alter_configs_request)
mod alter_configs {
    use super::*;

    pub(super) static ALTER_CONFIGS_RESOURCE: Struct = Struct {
        size: size_of::<alter_configs_request::AlterConfigsResource>(),
        fields: &[
            field("resource_type", Ty::Int8, from(0)),
            field("resource_name", Ty::Str, from(0)),
            field(
                "configs",
                Ty::Array(&Ty::Struct(&ALTERABLE_CONFIG)),
                from(0),
            ),
        ],
    };

    pub(super) static ALTERABLE_CONFIG: Struct = Struct {
        size: size_of::<alter_configs_request::AlterableConfig>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field("value", Ty::Str, from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<AlterConfigsRequest>(),
        fields: &[
            field(
                "resources",
                Ty::Array(&Ty::Struct(&ALTER_CONFIGS_RESOURCE)),
                from(0),
            ),
            field("validate_only", Ty::Bool, from(0)),
        ],
    };
}

// CreatePartitions (create_partitions_request)
mod create_partitions {
    use super::*;

    pub(super) static CREATE_PARTITIONS_ASSIGNMENT: Struct = Struct {
        size: size_of::<create_partitions_request::CreatePartitionsAssignment>(),
        fields: &[field("broker_ids", Ty::Array(&Ty::Int32), from(0))],
    };

    pub(super) static CREATE_PARTITIONS_TOPIC: Struct = Struct {
        size: size_of::<create_partitions_request::CreatePartitionsTopic>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field("count", Ty::Int32, from(0)),
            field(
                "assignments",
                Ty::Array(&Ty::Struct(&CREATE_PARTITIONS_ASSIGNMENT)),
                from(0),
            ),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<CreatePartitionsRequest>(),
        fields: &[
            field(
                "topics",
                Ty::Array(&Ty::Struct(&CREATE_PARTITIONS_TOPIC)),
                from(0),
            ),
            field("timeout_ms", Ty::Int32, from(0)),
            field("validate_only", Ty::Bool, from(0)),
        ],
    };
}

// IncrementalAlterConfigs (incremental_alter_configs_request)
mod incremental_alter_configs {
    use super::*;

    pub(super) static ALTER_CONFIGS_RESOURCE: Struct = Struct {
        size: size_of::<incremental_alter_configs_request::AlterConfigsResource>(),
        fields: &[
            field("resource_type", Ty::Int8, from(0)),
            field("resource_name", Ty::Str, from(0)),
            field(
                "configs",
                Ty::Array(&Ty::Struct(&ALTERABLE_CONFIG)),
                from(0),
            ),
        ],
    };

    pub(super) static ALTERABLE_CONFIG: Struct = Struct {
        size: size_of::<incremental_alter_configs_request::AlterableConfig>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field("config_operation", Ty::Int8, from(0)),
            field("value", Ty::Str, from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<IncrementalAlterConfigsRequest>(),
        fields: &[
            field(
                "resources",
                Ty::Array(&Ty::Struct(&ALTER_CONFIGS_RESOURCE)),
                from(0),
            ),
            field("validate_only", Ty::Bool, from(0)),
        ],
    };
}

// DescribeCluster (describe_cluster_request)
mod describe_cluster {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<DescribeClusterRequest>(),
        fields: &[
            field("include_cluster_authorized_operations", Ty::Bool, from(0)),
            field("endpoint_type", Ty::Int8, from(1)),
            field("include_fenced_brokers", Ty::Bool, from(2)),
        ],
    };
}

// FindCoordinator (find_coordinator_request)
mod find_coordinator {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<FindCoordinatorRequest>(),
        fields: &[
            field("key", Ty::Str, v(0, 3)),
            field("key_type", Ty::Int8, from(1)),
            field("coordinator_keys", Ty::Array(&Ty::Str), from(4)),
        ],
    };
}

// JoinGroup (join_group_request)
mod join_group {
    use super::*;

    pub(super) static JOIN_GROUP_REQUEST_PROTOCOL: Struct = Struct {
        size: size_of::<join_group_request::JoinGroupRequestProtocol>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field("metadata", Ty::Bytes, from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<JoinGroupRequest>(),
        fields: &[
            field("group_id", Ty::Str, from(0)),
            field("session_timeout_ms", Ty::Int32, from(0)),
            field("rebalance_timeout_ms", Ty::Int32, from(1)),
            field("member_id", Ty::Str, from(0)),
            field("group_instance_id", Ty::Str, from(5)),
            field("protocol_type", Ty::Str, from(0)),
            field(
                "protocols",
                Ty::Array(&Ty::Struct(&JOIN_GROUP_REQUEST_PROTOCOL)),
                from(0),
            ),
            field("reason", Ty::Str, from(8)),
        ],
    };
}

// SyncGroup (sync_group_request)
mod sync_group {
    use super::*;

    pub(super) static SYNC_GROUP_REQUEST_ASSIGNMENT: Struct = Struct {
        size: size_of::<sync_group_request::SyncGroupRequestAssignment>(),
        fields: &[
            field("member_id", Ty::Str, from(0)),
            field("assignment", Ty::Bytes, from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<SyncGroupRequest>(),
        fields: &[
            field("group_id", Ty::Str, from(0)),
            field("generation_id", Ty::Int32, from(0)),
            field("member_id", Ty::Str, from(0)),
            field("group_instance_id", Ty::Str, from(3)),
            field("protocol_type", Ty::Str, from(5)),
            field("protocol_name", Ty::Str, from(5)),
            field(
                "assignments",
                Ty::Array(&Ty::Struct(&SYNC_GROUP_REQUEST_ASSIGNMENT)),
                from(0),
            ),
        ],
    };
}

// Heartbeat (heartbeat_request)
mod heartbeat {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<HeartbeatRequest>(),
        fields: &[
            field("group_id", Ty::Str, from(0)),
            field("generation_id", Ty::Int32, from(0)),
            field("member_id", Ty::Str, from(0)),
            field("group_instance_id", Ty::Str, from(3)),
        ],
    };
}

// LeaveGroup (leave_group_request)
mod leave_group {
    use super::*;

    pub(super) static MEMBER_IDENTITY: Struct = Struct {
        size: size_of::<leave_group_request::MemberIdentity>(),
        fields: &[
            field("member_id", Ty::Str, from(3)),
            field("group_instance_id", Ty::Str, from(3)),
            field("reason", Ty::Str, from(5)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<LeaveGroupRequest>(),
        fields: &[
            field("group_id", Ty::Str, from(0)),
            field("member_id", Ty::Str, v(0, 2)),
            field("members", Ty::Array(&Ty::Struct(&MEMBER_IDENTITY)), from(3)),
        ],
    };
}

// OffsetCommit (offset_commit_request)
mod offset_commit {
    use super::*;

    pub(super) static OFFSET_COMMIT_REQUEST_PARTITION: Struct = Struct {
        size: size_of::<offset_commit_request::OffsetCommitRequestPartition>(),
        fields: &[
            field("partition_index", Ty::Int32, from(0)),
            field("committed_offset", Ty::Int64, from(0)),
            field("committed_leader_epoch", Ty::Int32, from(6)),
            field("committed_metadata", Ty::Str, from(0)),
        ],
    };

    pub(super) static OFFSET_COMMIT_REQUEST_TOPIC: Struct = Struct {
        size: size_of::<offset_commit_request::OffsetCommitRequestTopic>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field(
                "partitions",
                Ty::Array(&Ty::Struct(&OFFSET_COMMIT_REQUEST_PARTITION)),
                from(0),
            ),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<OffsetCommitRequest>(),
        fields: &[
            field("group_id", Ty::Str, from(0)),
            field("generation_id_or_member_epoch", Ty::Int32, from(0)),
            field("member_id", Ty::Str, from(0)),
            field("group_instance_id", Ty::Str, from(7)),
            field("retention_time_ms", Ty::Int64, v(0, 4)),
            field(
                "topics",
                Ty::Array(&Ty::Struct(&OFFSET_COMMIT_REQUEST_TOPIC)),
                from(0),
            ),
        ],
    };
}

// OffsetFetch (offset_fetch_request)
mod offset_fetch {
    use super::*;

    pub(super) static OFFSET_FETCH_REQUEST_GROUP: Struct = Struct {
        size: size_of::<offset_fetch_request::OffsetFetchRequestGroup>(),
        fields: &[
            field("group_id", Ty::Str, from(8)),
            field("member_id", Ty::Str, from(9)),
            field("member_epoch", Ty::Int32, from(9)),
            field(
                "topics",
                Ty::Array(&Ty::Struct(&OFFSET_FETCH_REQUEST_TOPICS)),
                from(8),
            ),
        ],
    };

    pub(super) static OFFSET_FETCH_REQUEST_TOPIC: Struct = Struct {
        size: size_of::<offset_fetch_request::OffsetFetchRequestTopic>(),
        fields: &[
            field("name", Ty::Str, v(0, 7)),
            field("partition_indexes", Ty::Array(&Ty::Int32), v(0, 7)),
        ],
    };

    pub(super) static OFFSET_FETCH_REQUEST_TOPICS: Struct = Struct {
        size: size_of::<offset_fetch_request::OffsetFetchRequestTopics>(),
        fields: &[
            field("name", Ty::Str, from(8)),
            field("partition_indexes", Ty::Array(&Ty::Int32), from(8)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<OffsetFetchRequest>(),
        fields: &[
            field("group_id", Ty::Str, v(0, 7)),
            field(
                "topics",
                Ty::Array(&Ty::Struct(&OFFSET_FETCH_REQUEST_TOPIC)),
                v(0, 7),
            ),
            field(
                "groups",
                Ty::Array(&Ty::Struct(&OFFSET_FETCH_REQUEST_GROUP)),
                from(8),
            ),
            field("require_stable", Ty::Bool, from(7)),
        ],
    };
}

// ListGroups (list_groups_request)
mod list_groups {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<ListGroupsRequest>(),
        fields: &[
            field("states_filter", Ty::Array(&Ty::Str), from(4)),
            field("types_filter", Ty::Array(&Ty::Str), from(5)),
        ],
    };
}

// DescribeGroups (describe_groups_request)
mod describe_groups {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<DescribeGroupsRequest>(),
        fields: &[
            field("groups", Ty::Array(&Ty::Str), from(0)),
            field("include_authorized_operations", Ty::Bool, from(3)),
        ],
    };
}

// DeleteGroups (delete_groups_request)
mod delete_groups {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<DeleteGroupsRequest>(),
        fields: &[field("groups_names", Ty::Array(&Ty::Str), from(0))],
    };
}

// OffsetDelete (offset_delete_request)
mod offset_delete {
    use super::*;

    pub(super) static OFFSET_DELETE_REQUEST_PARTITION: Struct = Struct {
        size: size_of::<offset_delete_request::OffsetDeleteRequestPartition>(),
        fields: &[field("partition_index", Ty::Int32, from(0))],
    };

    pub(super) static OFFSET_DELETE_REQUEST_TOPIC: Struct = Struct {
        size: size_of::<offset_delete_request::OffsetDeleteRequestTopic>(),
        fields: &[
            field("name", Ty::Str, from(0)),
            field(
                "partitions",
                Ty::Array(&Ty::Struct(&OFFSET_DELETE_REQUEST_PARTITION)),
                from(0),
            ),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<OffsetDeleteRequest>(),
        fields: &[
            field("group_id", Ty::Str, from(0)),
            field(
                "topics",
                Ty::Array(&Ty::Struct(&OFFSET_DELETE_REQUEST_TOPIC)),
                from(0),
            ),
        ],
    };
}

// InitProducerId (init_producer_id_request)
mod init_producer_id {
    use super::*;

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<InitProducerIdRequest>(),
        fields: &[
            field("transactional_id", Ty::Str, from(0)),
            field("transaction_timeout_ms", Ty::Int32, from(0)),
            field("producer_id", Ty::Int64, from(3)),
            field("producer_epoch", Ty::Int16, from(3)),
        ],
    };
}

// ElectLeaders (elect_leaders_request)
mod elect_leaders {
    use super::*;

    pub(super) static TOPIC_PARTITIONS: Struct = Struct {
        size: size_of::<elect_leaders_request::TopicPartitions>(),
        fields: &[
            field("topic", Ty::Str, from(0)),
            field("partitions", Ty::Array(&Ty::Int32), from(0)),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<ElectLeadersRequest>(),
        fields: &[
            field("election_type", Ty::Int8, from(1)),
            field(
                "topic_partitions",
                Ty::Array(&Ty::Struct(&TOPIC_PARTITIONS)),
                from(0),
            ),
            field("timeout_ms", Ty::Int32, from(0)),
        ],
    };
}

// OffsetForLeaderEpoch (offset_for_leader_epoch_request)
mod offset_for_leader_epoch {
    use super::*;

    pub(super) static OFFSET_FOR_LEADER_PARTITION: Struct = Struct {
        size: size_of::<offset_for_leader_epoch_request::OffsetForLeaderPartition>(),
        fields: &[
            field("partition", Ty::Int32, from(0)),
            field("current_leader_epoch", Ty::Int32, from(0)),
            field("leader_epoch", Ty::Int32, from(0)),
        ],
    };

    pub(super) static OFFSET_FOR_LEADER_TOPIC: Struct = Struct {
        size: size_of::<offset_for_leader_epoch_request::OffsetForLeaderTopic>(),
        fields: &[
            field("topic", Ty::Str, from(0)),
            field(
                "partitions",
                Ty::Array(&Ty::Struct(&OFFSET_FOR_LEADER_PARTITION)),
                from(0),
            ),
        ],
    };

    pub(super) static REQUEST: Struct = Struct {
        size: size_of::<OffsetForLeaderEpochRequest>(),
        fields: &[
            field("replica_id", Ty::Int32, from(3)),
            field(
                "topics",
                Ty::Array(&Ty::Struct(&OFFSET_FOR_LEADER_TOPIC)),
                from(0),
            ),
        ],
    };
}
