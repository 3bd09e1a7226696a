//! Fetch: whole record batches read from the partition logs by byte range, with Kafka's long
//! poll: when fewer than `min_bytes` are available the request waits, woken by appends through
//! each partition's high-watermark channel, until enough arrive or `max_wait_ms` passes.

use std::time::Duration;

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use runnel_broker::{Partition, ReplicaView};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::str_bytes;
use crate::Context;

/// One requested topic, resolved once per request.
struct TopicFetch {
    name: String,
    id: Uuid,
    /// `Err` when the topic (name or id) is unknown.
    partitions: Vec<(
        FetchPartition,
        Result<std::sync::Arc<Partition>, ResponseError>,
    )>,
}

pub(crate) async fn handle(ctx: &Context, request: FetchRequest, version: i16) -> FetchResponse {
    // Runnel creates no fetch sessions (KIP-227): every response carries session id 0, which
    // tells clients to send full fetch requests. A non-zero id cannot be one of ours.
    if request.session_id != 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let image = ctx.broker.image();
    let topics: Vec<TopicFetch> = request
        .topics
        .into_iter()
        .map(|t| {
            let known = if version >= 13 {
                image.topic_by_id(t.topic_id)
            } else {
                image.topic(t.topic.0.as_str())
            };
            let (name, id, missing) = match known {
                Some(info) => (info.name.clone(), info.id, None),
                None if version >= 13 => (
                    String::new(),
                    t.topic_id,
                    Some(ResponseError::UnknownTopicId),
                ),
                None => (
                    t.topic.0.as_str().to_string(),
                    Uuid::nil(),
                    Some(ResponseError::UnknownTopicOrPartition),
                ),
            };
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resolved = match missing {
                        Some(code) => Err(code),
                        // Only the leader serves fetches (followers' logs are not
                        // replicated yet, and consumers must fetch from the leader).
                        None => ctx
                            .broker
                            .leader_partition(&name, p.partition)
                            .map(|(partition, _)| partition)
                            .map_err(|e| e.code()),
                    };
                    (p, resolved)
                })
                .collect();
            TopicFetch {
                name,
                id,
                partitions,
            }
        })
        .collect();

    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    // The broker's fetch.max.bytes caps what the client asks for; 0 or less still returns
    // the first batch (Kafka's minOneMessage), never an unbounded response.
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(ctx.limits.fetch_max_bytes);

    let mut watchers: Vec<watch::Receiver<ReplicaView>> = topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|(_, p)| p.as_ref().ok().map(|p| p.watch_high_watermark()))
        .collect();
    loop {
        for w in &mut watchers {
            w.borrow_and_update();
        }
        let (responses, bytes, any_error) = read_all(ctx, &topics, max_bytes, version);
        if bytes >= min_bytes || any_error || watchers.is_empty() || Instant::now() >= deadline {
            return FetchResponse::default().with_responses(responses);
        }
        let closed = {
            let changed =
                futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                (result, index, _) = changed => result.is_err().then_some(index),
                _ = tokio::time::sleep_until(deadline) => None,
            }
        };
        // A closed channel means the partition went away (topic deleted); stop watching it so
        // the loop does not spin.
        if let Some(index) = closed {
            watchers.swap_remove(index);
        }
    }
}

/// Reads every requested partition once. Returns the responses, the record bytes gathered and
/// whether any partition has an error (Kafka answers at once then).
fn read_all(
    ctx: &Context,
    topics: &[TopicFetch],
    max_bytes: usize,
    version: i16,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut budget = max_bytes;
    let mut total = 0;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (request, partition) in &topic.partitions {
            let data = match partition {
                Ok(partition) => read_partition(
                    ctx,
                    &topic.name,
                    request,
                    partition,
                    &mut budget,
                    total == 0,
                ),
                Err(code) => error_data(request.partition, *code),
            };
            any_error |= data.error_code != 0;
            total += data.records.as_ref().map_or(0, |r| r.len());
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(TopicName(str_bytes(if version >= 13 {
                    String::new()
                } else {
                    topic.name.clone()
                })))
                .with_topic_id(topic.id)
                .with_partitions(partitions),
        );
    }
    (responses, total, any_error)
}

fn error_data(index: i32, code: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(bytes::Bytes::new()))
}

fn read_partition(
    ctx: &Context,
    topic: &str,
    request: &FetchPartition,
    partition: &Partition,
    budget: &mut usize,
    first: bool,
) -> PartitionData {
    // KIP-320: a client that knows a newer or older leader epoch than ours must refresh.
    let leader_epoch = ctx
        .broker
        .image()
        .topic(topic)
        .and_then(|t| t.partitions.get(request.partition as usize))
        .map_or(0, |p| p.leader_epoch);
    if request.current_leader_epoch >= 0 && request.current_leader_epoch != leader_epoch {
        let code = if request.current_leader_epoch < leader_epoch {
            ResponseError::FencedLeaderEpoch
        } else {
            ResponseError::UnknownLeaderEpoch
        };
        return error_data(request.partition, code);
    }
    let partition_max = request.partition_max_bytes.max(0) as usize;
    let limit = partition_max.min(*budget);
    let high_watermark = partition.high_watermark();
    let log_start = partition.log_start_offset().unwrap_or(-1);
    match partition.read(request.fetch_offset, limit, first) {
        Ok(read) => {
            *budget = budget.saturating_sub(read.records.len());
            PartitionData::default()
                .with_partition_index(request.partition)
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(read.log_start_offset)
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                .with_records(Some(read.records))
        }
        Err(e) => {
            if !e.is_offset_out_of_range() {
                tracing::warn!(topic, partition = request.partition, error = %e, "fetch failed");
            }
            error_data(request.partition, e.code())
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(log_start)
        }
    }
}
