//! Metadata: brokers, topics and partition leaders from the local metadata image. Missing
//! topics are auto-created when both the client and the broker allow it, as Kafka does.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;
use runnel_broker::{is_internal_topic, BrokerError, TopicInfo};
use uuid::Uuid;

use super::str_bytes;
use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 13 };

fn topic_response(topic: &TopicInfo) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.id)
        // Flagged so clients hide them from topic listings by default.
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

fn error_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(str_bytes(n))))
        .with_topic_id(id)
        .with_topic_authorized_operations(i32::MIN)
}

pub(crate) fn handle(ctx: &Context, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 has no null: an empty list means "all topics". Later versions use null for that.
    let all_topics = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    // Before v4 clients could not opt out of auto-creation.
    let allow_create = version < 4 || request.allow_auto_topic_creation;

    let topics = if all_topics {
        ctx.broker
            .image()
            .topics
            .values()
            .map(topic_response)
            .collect()
    } else {
        request
            .topics
            .unwrap_or_default()
            .iter()
            .map(|requested| match &requested.name {
                Some(name) => lookup_by_name(ctx, name.as_str(), allow_create),
                None => match ctx.broker.image().topic_by_id(requested.topic_id) {
                    Some(t) => topic_response(t),
                    None => error_topic(None, requested.topic_id, ResponseError::UnknownTopicId),
                },
            })
            .collect()
    };

    let image = ctx.broker.image();
    let brokers = image
        .brokers
        .values()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(image.cluster_id.clone())))
        .with_controller_id(BrokerId(image.controller_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}

fn lookup_by_name(ctx: &Context, name: &str, allow_create: bool) -> MetadataResponseTopic {
    if let Some(topic) = ctx.broker.image().topic(name) {
        return topic_response(topic);
    }
    if !allow_create {
        return error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    match ctx.broker.auto_create_topic(name) {
        Ok(Some(topic)) => topic_response(&topic),
        Ok(None) => error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        ),
        Err(e @ BrokerError::InvalidTopic { .. }) => {
            tracing::debug!(topic = name, error = %e, "metadata for an invalid topic name");
            error_topic(Some(name), Uuid::nil(), e.code())
        }
        Err(e) => {
            tracing::warn!(topic = name, error = %e, "auto-creating topic failed");
            error_topic(Some(name), Uuid::nil(), e.code())
        }
    }
}
