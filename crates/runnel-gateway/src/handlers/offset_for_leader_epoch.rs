//! OffsetForLeaderEpoch: where a leader epoch ends in this leader's log. Consumers use it to
//! detect a log truncated under them after a leader change (KIP-320); followers ask the same
//! question over gRPC before they fetch from a new leader (KIP-101/279).

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;
use runnel_broker::BrokerError;

use crate::Context;

pub(crate) fn handle(
    ctx: &Context,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.as_str().to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    match lookup(
                        ctx,
                        &name,
                        p.partition,
                        p.current_leader_epoch,
                        p.leader_epoch,
                    ) {
                        Ok((epoch, end)) => answer.with_leader_epoch(epoch).with_end_offset(end),
                        Err(code) => answer.with_error_code(code.code()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// The leader's answer, after Kafka's fencing: a caller that names an older current leader
/// epoch is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH (-1 skips the check).
fn lookup(
    ctx: &Context,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
    epoch: i32,
) -> Result<(i32, i64), ResponseError> {
    let (partition, leader_epoch) = ctx
        .broker
        .leader_partition(topic, index)
        .map_err(|e| e.code())?;
    if current_leader_epoch >= 0 {
        if current_leader_epoch < leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if current_leader_epoch > leader_epoch {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
    }
    partition
        .end_offset_for_epoch(epoch)
        .map_err(|e: BrokerError| e.code())
}
