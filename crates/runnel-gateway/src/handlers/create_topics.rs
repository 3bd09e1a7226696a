//! CreateTopics: validates names, counts and configs, then has the controller create the
//! topic; every replica opens its logs when it applies the change.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;
use runnel_broker::BrokerError;

use super::{error_parts, str_bytes};
use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    // Kafka rejects every copy of a name that appears twice in one request.
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.as_str().to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if duplicates.contains(&name) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "topic '{name}' appears more than once in the request"
                    )))),
            );
            continue;
        }
        results.push(
            match create(ctx, &name, topic, request.validate_only).await {
                Ok((info, partitions, replication_factor)) => {
                    let mut result = result
                        .with_topic_id(info.id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(replication_factor);
                    if version >= 5 {
                        let configs = ctx
                            .broker
                            .config()
                            .describe_topic(&info.configs)
                            .into_iter()
                            .map(|c| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(c.name))
                                    .with_value(Some(str_bytes(c.value)))
                                    .with_config_source(c.source as i8)
                            })
                            .collect();
                        result.configs = Some(configs);
                    }
                    result
                }
                Err(e) => {
                    tracing::info!(topic = %name, error = %e, "create topic failed");
                    let (code, message) = error_parts(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            },
        );
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create(
    ctx: &Context,
    name: &str,
    topic: CreatableTopic,
    validate_only: bool,
) -> Result<(runnel_broker::TopicInfo, i32, i16), BrokerError> {
    let mut configs = BTreeMap::new();
    for c in topic.configs {
        let value = c.value.ok_or_else(|| {
            BrokerError::InvalidConfig(format!("config '{}' has a null value", c.name.as_str()))
        })?;
        configs.insert(c.name.as_str().to_string(), value.as_str().to_string());
    }
    let (partitions, replication_factor) = (topic.num_partitions, topic.replication_factor);
    let assignment = if topic.assignments.is_empty() {
        None
    } else {
        // Manual assignment: counts come from it, and Kafka requires -1 in the count fields.
        if partitions != -1 || replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "with replica assignments, num_partitions and replication_factor must be -1".into(),
            ));
        }
        let mut assignment = topic.assignments;
        assignment.sort_by_key(|a| a.partition_index);
        if assignment
            .iter()
            .enumerate()
            .any(|(i, a)| a.partition_index != i as i32)
        {
            return Err(BrokerError::InvalidRequest(
                "replica assignments must name partitions 0 to n-1, each once".into(),
            ));
        }
        Some(
            assignment
                .into_iter()
                .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect::<Vec<i32>>())
                .collect::<Vec<_>>(),
        )
    };
    // What the topic gets, for the response (validate_only creates nothing to read it from).
    let (partitions, replication_factor) = match &assignment {
        Some(a) => (a.len() as i32, a.first().map_or(0, |r| r.len() as i16)),
        None => (
            if partitions == -1 {
                ctx.broker.config().num_partitions()
            } else {
                partitions
            },
            if replication_factor == -1 {
                ctx.broker.config().default_replication_factor()
            } else {
                replication_factor
            },
        ),
    };
    let info = ctx
        .broker
        .create_topic_assigned(
            name,
            partitions,
            replication_factor,
            assignment,
            configs,
            validate_only,
        )
        .await?;
    let partitions = if validate_only {
        partitions
    } else {
        info.partitions.len() as i32
    };
    Ok((info, partitions, replication_factor))
}
