//! Produce: hands each partition's record batches, as bytes, to the partition log. Batches are
//! never decoded into records: each record is walked once on the bytes, as Kafka's
//! LogValidator does (`runnel_broker::records::validate`), before the partition is locked;
//! compressed batches are decompressed for that on a blocking thread, at most
//! [`MAX_CONCURRENT_DECOMPRESSIONS`] at a time node-wide, each bounded by the topic's
//! `max.message.bytes`. A refused batch fails the partition with INVALID_RECORD,
//! INVALID_TIMESTAMP, CORRUPT_MESSAGE or MESSAGE_TOO_LARGE and, from v8, an `error_message` and
//! the offending records' indexes (`record_errors`, KIP-467). The storage layer then checks
//! the v2 header and CRC and writes the offsets into the header.
//!
//! Batches of idempotent producers are checked by the partition against its producer state:
//! a retried batch is answered with success and its original base offset (nothing is
//! appended), a sequence gap with OUT_OF_ORDER_SEQUENCE_NUMBER and a fenced epoch with
//! INVALID_PRODUCER_EPOCH; the "produce rejected" warning below names the producer id, epoch
//! and expected vs received sequence.
//!
//! acks=all: every partition is appended first, then the request waits for all of them
//! together until the high watermark passes each batch (the ISR has it), at most the
//! request's `timeout_ms` (REQUEST_TIMED_OUT then). A leader demoted meanwhile answers
//! NOT_LEADER_OR_FOLLOWER. No lock is held while waiting.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::ResponseError;
use runnel_broker::records::{any_compressed, validate_client_batches};
use runnel_broker::{is_internal_topic, now_ms, BrokerError, Partition};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{str_bytes, CloseConnection};
use crate::connection::Turn;
use crate::Context;

/// Compressed batches validated at once, node-wide. Each may hold up to `max.message.bytes`
/// of decompressed records (twice that while its buffer grows), so this bounds the memory
/// decompression can take however many clients produce compressed batches.
pub(crate) const MAX_CONCURRENT_DECOMPRESSIONS: usize = 4;

static DECOMPRESSIONS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_DECOMPRESSIONS);

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
    turn: &mut Turn,
) -> Result<Option<ProduceResponse>, CloseConnection> {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let mut responses = Vec::with_capacity(request.topic_data.len());
    // acks=all: (topic index in `responses`, partition index in it, what to wait for).
    let mut pending: Vec<(usize, usize, Commit)> = Vec::new();
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
                ctx.limits.warnings.warn(|suppressed| {
                    tracing::warn!(topic = %name, client, suppressed, "produce to an internal topic refused");
                });
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
                    let (response, commit) =
                        append(ctx, name, p.index, p.records, acks, client).await;
                    if let Some(commit) = commit {
                        pending.push((responses.len(), partitions.len(), commit));
                    }
                    partitions.push(response);
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
    // Everything this request changes is in the logs now: the connection's next request may
    // start while this one waits for replication.
    turn.release();
    let waits = pending.iter().map(|(_, _, c)| {
        c.partition.wait_committed(
            c.required_offset,
            c.leader_epoch,
            c.min_insync_replicas,
            timeout,
        )
    });
    let outcomes = futures::future::join_all(waits).await;
    for ((t, p, commit), outcome) in pending.iter().zip(outcomes) {
        if let Err(e) = outcome {
            tracing::info!(
                topic = commit.partition.topic(),
                partition = commit.partition.index(),
                client,
                error = %e,
                "acks=all produce not acknowledged"
            );
            let index = responses[*t].partition_responses[*p].index;
            responses[*t].partition_responses[*p] =
                partition_error(index, e.code(), Some(e.to_string()));
        }
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

/// An appended acks=all batch: committed once the high watermark reaches `required_offset`.
struct Commit {
    partition: Arc<Partition>,
    required_offset: i64,
    leader_epoch: i32,
    min_insync_replicas: usize,
}

async fn append(
    ctx: &Context,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
    client: &str,
) -> (PartitionProduceResponse, Option<Commit>) {
    let result = async {
        let (partition, leader_epoch) = ctx.broker.leader_partition(topic, index)?;
        let records = records.filter(|r| !r.is_empty()).ok_or_else(|| {
            BrokerError::InvalidRequest("the produce request carries no record batch".into())
        })?;
        // acks=all promises min.insync.replicas copies; refuse before appending if the ISR
        // cannot give them, as Kafka does.
        let needed = ctx
            .broker
            .image()
            .topic(topic)
            .map_or(1, |t| ctx.broker.config().min_insync_replicas(&t.configs));
        if acks == -1 {
            let in_sync = partition.in_sync_replicas(leader_epoch)?;
            if in_sync < needed {
                return Err(BrokerError::NotEnoughReplicas { in_sync, needed });
            }
        }
        validate(&partition, &records).await?;
        // The records are a slice of the request frame; patching offsets needs our own copy.
        let mut batches = BytesMut::from(&records[..]);
        let info = partition.append(&mut batches, leader_epoch)?;
        let log_start = partition.log_start_offset()?;
        Ok::<_, BrokerError>((info, log_start, partition, leader_epoch, needed))
    }
    .await;
    match result {
        Ok((info, log_start, partition, leader_epoch, min_insync_replicas)) => {
            let response = PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(info.base_offset)
                .with_log_append_time_ms(info.log_append_time)
                .with_log_start_offset(log_start);
            // A retried duplicate waits too: its first attempt may not be committed yet.
            let commit = (acks == -1).then(|| Commit {
                partition,
                required_offset: info.last_offset + 1,
                leader_epoch,
                min_insync_replicas,
            });
            (response, commit)
        }
        Err(e) => {
            // A client may send bad batches on purpose: rate-limited.
            ctx.limits.warnings.warn(|suppressed| {
                tracing::warn!(topic, partition = index, client, error = %e, suppressed, "produce rejected");
            });
            let mut response = partition_error(index, e.code(), Some(e.to_string()));
            if let BrokerError::Validation(v) = &e {
                response.record_errors = v
                    .record_errors
                    .iter()
                    .map(|(i, why)| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(*i)
                            .with_batch_index_error_message(Some(str_bytes(why.as_str())))
                    })
                    .collect();
            }
            (response, None)
        }
    }
}

/// Kafka's record validation of a client's batches for one partition: inline when nothing is
/// compressed (a walk over the bytes), else on a blocking thread with a decompression permit.
async fn validate(partition: &Partition, records: &Bytes) -> Result<(), BrokerError> {
    let rules = partition.validation_rules()?;
    let now = now_ms();
    if !any_compressed(records) {
        return Ok(validate_client_batches(records, &rules, now)?);
    }
    let _permit = DECOMPRESSIONS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let records = records.clone();
    tokio::task::spawn_blocking(move || validate_client_batches(&records, &rules, now))
        .await
        .map_err(|e| BrokerError::InvalidRequest(format!("record validation failed: {e}")))??;
    Ok(())
}
