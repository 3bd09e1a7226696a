//! The load a chaos run applies and checks: one producer per partition sending uniquely
//! numbered records with acks=all (idempotently unless told otherwise), and reading every
//! partition back afterwards.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_client::{
    Client, Compression, Error, IdempotentProducer, ProducePipeline, ProducerBatch, ProducerRecord,
    ResponseError,
};
use tokio::sync::watch;

use super::checker::{AckedBatch, PartitionHistory};
use super::pipeline::{Answer, Finished, Window, MAX_IN_FLIGHT};
use crate::bounded_client::{self, ATTEMPT_TIMEOUT, REQUEST_TIMEOUT};

/// Records per produce request.
const BATCH: u64 = 4;
/// Bounds on one attempt: the client's own timeouts, and ours around the whole attempt.
/// Pause after a failed attempt before the next one.
const BACKOFF: Duration = Duration::from_millis(200);

/// Totals the progress line shows while producers run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) acked: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    /// Waits until a produce is acknowledged after this call, at most `patience`; true if one
    /// was.
    pub(crate) async fn wait_for_an_ack(&self, patience: Duration) -> bool {
        let before = self.acked.load(Ordering::Relaxed);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if self.acked.load(Ordering::Relaxed) > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// What one partition's producer saw.
#[derive(Debug, Default)]
pub(crate) struct ProducerLog {
    pub(crate) idempotent: bool,
    /// The successful produces in the order their responses arrived, with their arrival in
    /// seconds since the workload started.
    pub(crate) acks: Vec<AckedBatch>,
    pub(crate) retried: HashSet<u64>,
    pub(crate) errors: u64,
    /// Batches given up on after an error that retrying cannot fix.
    pub(crate) abandoned: u64,
    pub(crate) last_error: Option<String>,
}

impl ProducerLog {
    /// When each successful produce response arrived.
    pub(crate) fn ack_times(&self) -> Vec<f64> {
        self.acks.iter().map(|a| a.at).collect()
    }

    pub(crate) fn into_history(self, read: Vec<u64>) -> PartitionHistory {
        PartitionHistory {
            acked: self.acks.into_iter().flat_map(|a| a.seqs).collect(),
            retried: self.retried,
            read,
            idempotent: self.idempotent,
        }
    }
}

/// The value of record `seq` of `partition`.
pub(crate) fn record_value(partition: i32, seq: u64) -> String {
    format!("chaos:{partition}:{seq}")
}

/// The sequence number in a value written by [`record_value`] for `partition`.
pub(crate) fn parse_value(partition: i32, value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix("chaos:")?;
    let (p, seq) = rest.split_once(':')?;
    (p.parse::<i32>().ok()? == partition).then_some(())?;
    seq.parse().ok()
}

/// Whether retrying the same batch may succeed: leadership moves, too few replicas,
/// timeouts and broken or refused connections.
fn is_retriable(e: &Error) -> bool {
    e.is_retriable()
        || matches!(e, Error::Connect { .. } | Error::Protocol { .. })
        || matches!(
            e.kafka_error(),
            Some(
                ResponseError::NotLeaderOrFollower
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::NotEnoughReplicas
                    | ResponseError::NotEnoughReplicasAfterAppend
                    | ResponseError::RequestTimedOut
            )
        )
}

/// Connects with the bounded timeouts of runs under faults.
pub(crate) async fn connect(bootstrap: &str) -> anyhow::Result<Client> {
    bounded_client::connect(bootstrap, "runnel-chaos").await
}

/// The client, connecting first if needed; a failure is worth retrying.
async fn connected<'c>(
    client: &'c mut Option<Client>,
    bootstrap: &str,
) -> Result<&'c mut Client, String> {
    match client {
        Some(c) => Ok(c),
        None => match connect(bootstrap).await {
            Ok(c) => Ok(client.insert(c)),
            Err(e) => Err(format!("{e:#}")),
        },
    }
}

/// What one batch is sent as: an idempotent batch, encoded once and resent byte for byte so
/// the broker drops the copies it already has, or plain records.
enum Payload {
    Plain(Vec<ProducerRecord>),
    Idempotent(ProducerBatch),
}

/// What an error answer to one batch means to the pipeline.
fn classify(e: &Error) -> Answer {
    match e.kafka_error() {
        Some(ResponseError::OutOfOrderSequenceNumber) => Answer::OutOfOrder,
        _ if is_retriable(e) => Answer::Retriable,
        _ => Answer::Fatal,
    }
}

/// A new producer id, bounded; a failure is worth retrying.
async fn new_producer(
    client: &mut Option<Client>,
    bootstrap: &str,
) -> Result<IdempotentProducer, String> {
    let c = connected(client, bootstrap).await?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, c.idempotent_producer()).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(format!("cannot get a producer id: {e}")),
        Err(_) => {
            *client = None;
            Err(format!(
                "no InitProducerId response within {} s",
                ATTEMPT_TIMEOUT.as_secs()
            ))
        }
    }
}

/// A pipeline to the partition's current leader, reloading the leaders first; a failure is
/// worth retrying.
async fn open_pipeline(
    client: &mut Option<Client>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<ProducePipeline, String> {
    let c = connected(client, bootstrap).await?;
    let opened = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
        // The leader may have moved since the last pipeline.
        let _ = c.topic_metadata(topic).await;
        c.produce_pipeline(topic, partition).await
    })
    .await;
    match opened {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            *client = None;
            Err(format!(
                "no pipeline to the leader within {} s",
                ATTEMPT_TIMEOUT.as_secs()
            ))
        }
    }
}

/// What one partition producer writes: its topic, partition, and the record of each
/// sequence number.
pub(crate) struct Stream {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) record: fn(i32, u64) -> ProducerRecord,
}

/// Produces to one partition until `stop` turns true, with up to [`MAX_IN_FLIGHT`] acks=all
/// requests in flight on one connection to the leader (one without idempotence, where more
/// could reorder records on retries), as Kafka's Java producer does (see [`pipeline`]). With
/// `idempotent`, every retry resends the same batch (same producer id, epoch and sequence
/// numbers); when the sequence cannot go on, the unacknowledged batches are given up on and
/// a new producer starts. Acknowledgements are logged in sequence order.
///
/// [`pipeline`]: super::pipeline
pub(crate) async fn produce_partition(
    bootstrap: String,
    stream: Stream,
    idempotent: bool,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> ProducerLog {
    let Stream {
        topic,
        partition,
        record,
    } = stream;
    let mut log = ProducerLog {
        idempotent,
        ..ProducerLog::default()
    };
    let mut client: Option<Client> = None;
    let mut producer: Option<IdempotentProducer> = None;
    let mut pipe: Option<ProducePipeline> = None;
    let mut window: Window<Payload> = Window::new(if idempotent { MAX_IN_FLIGHT } else { 1 });
    let mut next_seq = 0;
    let fail = |log: &mut ProducerLog, msg: String| {
        log.errors += 1;
        counters.errors.fetch_add(1, Ordering::Relaxed);
        log.last_error = Some(msg);
    };
    while !*stop.borrow() {
        if idempotent && producer.is_none() {
            match new_producer(&mut client, &bootstrap).await {
                Ok(p) => producer = Some(p),
                Err(msg) => {
                    fail(&mut log, msg);
                    let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
                    continue;
                }
            }
        }
        while window.has_room() {
            let seqs: Vec<u64> = (next_seq..next_seq + BATCH).collect();
            next_seq += BATCH;
            let records: Vec<ProducerRecord> = seqs.iter().map(|&s| record(partition, s)).collect();
            let payload = match producer.as_mut() {
                Some(p) => match p.batch(&topic, partition, &records, Compression::None) {
                    Ok(b) => Payload::Idempotent(b),
                    Err(e) => {
                        fail(&mut log, format!("cannot encode a batch: {e}"));
                        break;
                    }
                },
                None => Payload::Plain(records),
            };
            window.push(seqs, payload);
        }
        if window.next_to_send().is_none() && window.in_flight() == 0 {
            // Nothing could be made: wait before trying again.
            let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
            continue;
        }
        let p = match pipe.as_mut() {
            Some(p) => p,
            None => match open_pipeline(&mut client, &bootstrap, &topic, partition).await {
                Ok(p) => pipe.insert(p),
                Err(msg) => {
                    fail(&mut log, msg);
                    let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
                    continue;
                }
            },
        };
        let mut broken = None;
        while let Some((index, payload)) = window.next_to_send() {
            let send = async {
                match payload {
                    Payload::Idempotent(b) => p.send_batch(b).await,
                    Payload::Plain(r) => p.send_records(r, Compression::None).await,
                }
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
                Ok(Ok(())) => window.sent(index),
                Ok(Err(e)) => {
                    broken = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    broken = Some("sending a produce request timed out".to_owned());
                    break;
                }
            }
        }
        if broken.is_none() && window.in_flight() > 0 {
            let at = || started.elapsed().as_secs_f64();
            match tokio::time::timeout(ATTEMPT_TIMEOUT, p.receive()).await {
                Ok(Ok(Ok(_))) => {
                    window.answered(Answer::Acked, at());
                }
                Ok(Ok(Err(e))) => {
                    if let Some(seqs) = window.answered(classify(&e), at()) {
                        // A failed attempt may still have been written.
                        log.retried.extend(seqs);
                    }
                    fail(&mut log, e.to_string());
                }
                Ok(Err(e)) => broken = Some(e.to_string()),
                Err(_) => {
                    broken = Some(format!(
                        "no produce response within {} s",
                        ATTEMPT_TIMEOUT.as_secs()
                    ))
                }
            }
        }
        if let Some(msg) = broken {
            log.retried.extend(window.broken());
            pipe = None;
            fail(&mut log, msg);
        }
        for finished in window.pop_finished() {
            match finished {
                Finished::Acked { seqs, at } => {
                    counters
                        .acked
                        .fetch_add(seqs.len() as u64, Ordering::Relaxed);
                    log.acks.push(AckedBatch { at, seqs });
                }
                Finished::Abandoned { .. } => log.abandoned += 1,
            }
        }
        let end = window.end_round();
        if end.new_producer {
            producer = None;
        }
        if end.failed {
            pipe = None;
            let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
        }
    }
    // Requests still in flight at the end may or may not be written.
    log.retried.extend(window.broken());
    log
}

/// Reads `partition` from its start to its end offset at the time of the call and returns
/// the offsets and sequence numbers found, in offset order; values not written by this run
/// are skipped.
pub(crate) async fn read_partition(
    client: &mut Client,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Vec<(i64, u64)>> {
    bounded_client::read_with_offsets(client, topic, partition, |v| parse_value(partition, v)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_values_are_skipped() {
        assert_eq!(parse_value(2, record_value(2, 41).as_bytes()), Some(41));
        assert_eq!(parse_value(1, record_value(2, 41).as_bytes()), None);
        assert_eq!(parse_value(2, b"chaos:2:"), None);
        assert_eq!(parse_value(2, b"hello"), None);
        assert_eq!(parse_value(2, &[0xff, 0xfe]), None);
    }

    #[test]
    fn leadership_and_replica_errors_are_retried() {
        let kafka = |code: i16| Error::from_code(code, Some("t"), Some(0), None).unwrap();
        // NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT
        for code in [6, 5, 19, 7] {
            assert!(is_retriable(&kafka(code)), "code {code}");
        }
        let refused = Error::Connect {
            addr: "x:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(is_retriable(&refused));
        // INVALID_TOPIC_EXCEPTION
        assert!(!is_retriable(&kafka(17)));
    }
}
