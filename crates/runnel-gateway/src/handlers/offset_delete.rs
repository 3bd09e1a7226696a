//! OffsetDelete: removes committed offsets of partitions the group does not consume.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let image = ctx.broker.image();
    let exists = |topic: &str, p: i32| {
        image
            .topic(topic)
            .is_some_and(|t| p >= 0 && (p as usize) < t.partitions.len())
    };
    // Partitions that do not exist are answered here; the rest go to the coordinator.
    let mut known = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            if exists(t.name.as_str(), p.partition_index) {
                known.push((t.name.as_str().to_string(), p.partition_index));
            }
        }
    }
    let results = match ctx.groups.delete_offsets(request.group_id.as_str(), &known) {
        Ok(results) => results,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let mut results = known.into_iter().zip(results);
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if exists(t.name.as_str(), p.partition_index) {
                        results
                            .next()
                            .and_then(|(_, r)| r.err())
                            .map_or(0, |e| e.code())
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
