//! Produce: hands each partition's record batches, as bytes, to the partition log. Batches are
//! never decoded record by record: the storage layer checks the v2 header and CRC and writes
//! the offsets into the header.
//!
//! Batches of idempotent producers are checked by the partition against its producer state:
//! a retried batch is answered with success and its original base offset (nothing is
//! appended), a sequence gap with OUT_OF_ORDER_SEQUENCE_NUMBER and a fenced epoch with
//! INVALID_PRODUCER_EPOCH; the "produce rejected" warning below names the producer id, epoch
//! and expected vs received sequence.

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;
use runnel_broker::{is_internal_topic, BrokerError};
use uuid::Uuid;

use super::{str_bytes, CloseConnection};
use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 3, max: 13 };

fn partition_error(
    index: i32,
    code: ResponseError,
    message: Option<String>,
) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(str_bytes))
}

/// Returns `Ok(None)` for acks=0, which Kafka never answers, and `Err` when an acks=0 produce
/// failed: like Kafka, the node then closes the connection, the only way such a client learns
/// that it must refresh its metadata and reconnect.
pub(crate) async fn handle(
    ctx: &Context,
    request: ProduceRequest,
    version: i16,
    client: &str,
) -> Result<Option<ProduceResponse>, CloseConnection> {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = if version >= 13 {
            ctx.broker
                .image()
                .topic_by_id(topic.topic_id)
                .map(|t| t.name.clone())
        } else {
            Some(topic.name.0.as_str().to_string())
        };
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        match &name {
            None => {
                for p in &topic.partition_data {
                    partitions.push(partition_error(
                        p.index,
                        ResponseError::UnknownTopicId,
                        None,
                    ));
                }
            }
            Some(_) if !valid_acks => {
                for p in &topic.partition_data {
                    let msg = format!("acks must be -1 (all), 0 or 1, got {acks}");
                    partitions.push(partition_error(
                        p.index,
                        ResponseError::InvalidRequiredAcks,
                        Some(msg),
                    ));
                }
            }
            Some(name) if is_internal_topic(name) => {
                tracing::warn!(topic = %name, client, "produce to an internal topic refused");
                for p in &topic.partition_data {
                    let msg =
                        format!("'{name}' is an internal topic; only the broker writes to it");
                    partitions.push(partition_error(
                        p.index,
                        ResponseError::InvalidTopicException,
                        Some(msg),
                    ));
                }
            }
            Some(name) => {
                if ctx.broker.image().topic(name).is_none() {
                    if let Err(e) = ctx.broker.auto_create_topic(name).await {
                        tracing::warn!(topic = %name, client, error = %e, "produce: cannot auto-create topic");
                    }
                }
                for p in topic.partition_data {
                    partitions.push(append(ctx, name, p.index, p.records, acks, client));
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(TopicName(str_bytes(name.unwrap_or_default())))
                .with_topic_id(if version >= 13 {
                    topic.topic_id
                } else {
                    Uuid::nil()
                })
                .with_partition_responses(partitions),
        );
    }
    if acks != 0 {
        return Ok(Some(ProduceResponse::default().with_responses(responses)));
    }
    let failed = responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .any(|p| p.error_code != 0);
    if failed {
        tracing::info!(
            client,
            "an acks=0 produce failed; closing the connection so the client notices"
        );
        return Err(CloseConnection);
    }
    Ok(None)
}

fn append(
    ctx: &Context,
    topic: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
    client: &str,
) -> PartitionProduceResponse {
    let result = (|| {
        let (partition, leader_epoch) = ctx.broker.leader_partition(topic, index)?;
        let records = records.filter(|r| !r.is_empty()).ok_or_else(|| {
            BrokerError::InvalidRequest("the produce request carries no record batch".into())
        })?;
        let image = ctx.broker.image();
        let info = image.topic(topic);
        let state = info.and_then(|t| t.partition(index));
        // acks=all promises min.insync.replicas copies; refuse before appending if the ISR
        // cannot give them, as Kafka does.
        if acks == -1 {
            let needed = info.map_or(1, |t| ctx.broker.config().min_insync_replicas(&t.configs));
            let in_sync = state.map_or(0, |p| p.isr.len());
            if in_sync < needed {
                return Err(BrokerError::NotEnoughReplicas { in_sync, needed });
            }
        }
        // The records are a slice of the request frame; patching offsets needs our own copy.
        let mut batches = BytesMut::from(&records[..]);
        let info = partition.append(&mut batches, leader_epoch)?;
        Ok::<_, BrokerError>((info, partition.log_start_offset()?))
    })();
    match result {
        Ok((info, log_start)) => PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(info.base_offset)
            .with_log_append_time_ms(info.log_append_time)
            .with_log_start_offset(log_start),
        Err(e) => {
            tracing::warn!(topic, partition = index, client, error = %e, "produce rejected");
            partition_error(index, e.code(), Some(e.to_string()))
        }
    }
}
