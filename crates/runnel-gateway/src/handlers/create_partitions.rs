//! CreatePartitions: grows a topic's partition count through the controller.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;
use runnel_broker::is_internal_topic;

use super::{error_parts, str_bytes};
use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if is_internal_topic(&name) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "'{name}' is an internal topic; its partition count is fixed"
                    )))),
            );
            continue;
        }
        // The replicas of each new partition, if the client chose them.
        let assignment = topic.assignments.map(|a| {
            a.into_iter()
                .map(|p| p.broker_ids.into_iter().map(|b| b.0).collect())
                .collect()
        });
        let outcome = ctx
            .broker
            .create_partitions_assigned(&name, topic.count, assignment, request.validate_only)
            .await;
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => {
                tracing::info!(topic = %name, error = %e, "create partitions failed");
                let (code, message) = error_parts(&e);
                result.with_error_code(code).with_error_message(message)
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
