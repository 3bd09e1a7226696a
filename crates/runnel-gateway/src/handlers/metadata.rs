//! Metadata: live brokers, topics and partition leaders from the controller's image as this
//! node has applied it. Missing topics are auto-created when both the client and the broker
//! allow it, as Kafka does.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use runnel_broker::{is_internal_topic, MetadataImage, TopicInfo, NO_LEADER};
use uuid::Uuid;

use super::str_bytes;
use crate::Context;

fn topic_response(
    image: &MetadataImage,
    topic: &TopicInfo,
    listener: &str,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            // A replica on a fenced or unregistered broker cannot serve.
            let offline = p
                .replicas
                .iter()
                .copied()
                .filter(|r| !image.is_live(*r))
                .map(BrokerId)
                .collect();
            // As Kafka: a leader that clients of this listener cannot reach is no leader to
            // them (LISTENER_NOT_FOUND), rather than an address they must not use.
            let reachable = image
                .brokers
                .get(&p.leader)
                .is_some_and(|b| b.endpoint(listener).is_some());
            let (error, leader) = if !p.has_leader() {
                (ResponseError::LeaderNotAvailable.code(), p.leader)
            } else if !reachable {
                (ResponseError::ListenerNotFound.code(), NO_LEADER)
            } else {
                (0, p.leader)
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
                .with_offline_replicas(offline)
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

pub(crate) async fn handle(
    ctx: &Context,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 has no null: an empty list means "all topics". Later versions use null for that.
    let all_topics = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    // Before v4 clients could not opt out of auto-creation.
    let allow_create = version < 4 || request.allow_auto_topic_creation;

    let topics = if all_topics {
        let image = ctx.broker.image();
        image
            .topics
            .values()
            .map(|t| topic_response(&image, t, &ctx.listener))
            .collect()
    } else {
        let mut topics = Vec::new();
        for requested in request.topics.unwrap_or_default() {
            topics.push(match &requested.name {
                Some(name) => lookup_by_name(ctx, name.as_str(), allow_create).await,
                None => {
                    let image = ctx.broker.image();
                    match image.topic_by_id(requested.topic_id) {
                        Some(t) => topic_response(&image, t, &ctx.listener),
                        None => {
                            error_topic(None, requested.topic_id, ResponseError::UnknownTopicId)
                        }
                    }
                }
            });
        }
        topics
    };

    let image = ctx.broker.image();
    // Brokers without this listener are left out, as in Kafka.
    let brokers = image
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = b.endpoint(&ctx.listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(str_bytes(host.to_owned()))
                    .with_port(port)
                    .with_rack(b.rack.clone().map(str_bytes)),
            )
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(image.cluster_id.clone())))
        .with_controller_id(BrokerId(super::controller_id_for_clients(ctx)))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}

async fn lookup_by_name(ctx: &Context, name: &str, allow_create: bool) -> MetadataResponseTopic {
    let image = ctx.broker.image();
    if let Some(topic) = image.topic(name) {
        return topic_response(&image, topic, &ctx.listener);
    }
    if !allow_create {
        return error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    match ctx.broker.auto_create_topic(name).await {
        Ok(Some(topic)) => topic_response(&ctx.broker.image(), &topic, &ctx.listener),
        Ok(None) => error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        ),
        Err(e) if e.code() == ResponseError::InvalidTopicException => {
            tracing::debug!(topic = name, error = %e, "metadata for an invalid topic name");
            error_topic(Some(name), Uuid::nil(), e.code())
        }
        Err(e) => {
            tracing::warn!(topic = name, error = %e, "auto-creating topic failed");
            error_topic(Some(name), Uuid::nil(), e.code())
        }
    }
}
