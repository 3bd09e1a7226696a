//! DeleteTopics: by name (v1-5) or by name or id (v6).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError;
use runnel_broker::is_internal_topic;
use uuid::Uuid;

use super::{error_parts, str_bytes};
use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.as_str().to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| ctx.broker.image().topic_by_id(id).map(|t| t.name.clone()));
        let result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
            .with_topic_id(id);
        let Some(name) = name else {
            responses.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        if is_internal_topic(&name) {
            ctx.limits.warnings.warn(|suppressed| {
                tracing::warn!(topic = %name, suppressed, "refused to delete an internal topic");
            });
            responses.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!(
                        "'{name}' is an internal topic and cannot be deleted"
                    )))),
            );
            continue;
        }
        responses.push(match ctx.broker.delete_topic(&name).await {
            Ok(id) => result.with_topic_id(id),
            Err(e) => {
                tracing::info!(topic = %name, error = %e, "delete topic failed");
                let (code, message) = error_parts(&e);
                result.with_error_code(code).with_error_message(message)
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
