//! CreatePartitions: grows a topic's partition count.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;
use runnel_broker::is_internal_topic;

use super::{error_parts, str_bytes};
use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

pub(crate) fn handle(ctx: &Context, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let node = ctx.broker.node_id();
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str().to_string();
            let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            // Explicit assignments may only name brokers that exist (just this one, for now).
            let bad_assignment = topic
                .assignments
                .iter()
                .flatten()
                .any(|a| a.broker_ids.len() != 1 || a.broker_ids.iter().any(|b| b.0 != node));
            if is_internal_topic(&name) {
                return result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "'{name}' is an internal topic; its partition count is fixed"
                    ))));
            }
            if bad_assignment {
                return result
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(Some(str_bytes(format!(
                        "assignments may only name broker {node}, one replica per partition"
                    ))));
            }
            match ctx
                .broker
                .create_partitions(&name, topic.count, request.validate_only)
            {
                Ok(_) => result,
                Err(e) => {
                    tracing::info!(topic = %name, error = %e, "create partitions failed");
                    let (code, message) = error_parts(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
