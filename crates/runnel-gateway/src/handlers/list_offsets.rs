//! ListOffsets: earliest, latest, max-timestamp and by-timestamp offset lookups.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use runnel_broker::BrokerError;

use crate::Context;

/// Special timestamps of the ListOffsets API.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-405 tiered storage: earliest offset held locally (all of it, here).
const EARLIEST_LOCAL: i64 = -4;
/// KIP-1005: the highest offset tiered storage has uploaded; nothing is uploaded here.
const LATEST_TIERED: i64 = -5;

pub(crate) fn handle(
    ctx: &Context,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str().to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let mut response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    // KIP-320: a client that knows a newer or older leader epoch refreshes.
                    if let Some(code) =
                        fenced(ctx, &name, p.partition_index, p.current_leader_epoch)
                    {
                        response.error_code = code.code();
                        return response;
                    }
                    match lookup(ctx, &name, p.partition_index, p.timestamp) {
                        Ok((offset, timestamp, epoch)) => {
                            response.offset = offset;
                            response.timestamp = timestamp;
                            // The field exists from v4; the encoder rejects it set earlier.
                            if version >= 4 {
                                response.leader_epoch = epoch;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(topic = %name, partition = p.partition_index, error = %e, "list offsets failed");
                            // As Kafka: clients before v5 do not know OFFSET_NOT_AVAILABLE,
                            // and retry LEADER_NOT_AVAILABLE the same way.
                            response.error_code = match e {
                                BrokerError::OffsetNotAvailable(_) if version < 5 => {
                                    ResponseError::LeaderNotAvailable.code()
                                }
                                e => e.code().code(),
                            };
                        }
                    }
                    response
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when the request names another epoch than the
/// one this leader holds (-1 skips the check; other errors are left to the lookup).
fn fenced(ctx: &Context, topic: &str, index: i32, current: i32) -> Option<ResponseError> {
    let epoch = ctx.broker.leader_epoch(topic, index).ok()?;
    match current {
        c if c < 0 || c == epoch => None,
        c if c < epoch => Some(ResponseError::FencedLeaderEpoch),
        _ => Some(ResponseError::UnknownLeaderEpoch),
    }
}

/// (offset, timestamp, leader epoch); offset -1 when no record matches a timestamp.
fn lookup(
    ctx: &Context,
    topic: &str,
    index: i32,
    timestamp: i64,
) -> Result<(i64, i64, i32), BrokerError> {
    let (partition, epoch) = ctx.broker.leader_partition(topic, index)?;
    partition.check_offsets_available()?;
    let found = match timestamp {
        LATEST => Some((partition.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL => Some((partition.log_start_offset()?, -1)),
        LATEST_TIERED => Some((-1, -1)),
        MAX_TIMESTAMP => partition.max_timestamp_offset()?,
        ts if ts >= 0 => partition.offset_for_timestamp(ts)?,
        other => {
            return Err(BrokerError::InvalidRequest(format!(
                "unknown ListOffsets timestamp {other}"
            )))
        }
    };
    Ok(match found {
        Some((offset, ts)) => (offset, ts, epoch),
        None => (-1, -1, -1),
    })
}
