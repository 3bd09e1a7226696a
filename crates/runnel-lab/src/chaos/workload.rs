//! The load a chaos run applies and checks: one producer per partition sending uniquely
//! numbered records with acks=all (idempotently unless told otherwise), and reading every
//! partition back afterwards.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_client::{
    acks, Client, Compression, Error, IdempotentProducer, ProducerBatch, ProducerRecord,
    ResponseError,
};
use tokio::sync::watch;

use super::checker::{AckedBatch, PartitionHistory};
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

/// How one produce attempt ended.
enum Attempt {
    Acked,
    /// Failed in a way retrying the same batch may fix.
    Retry(String),
    /// Failed in a way retrying cannot fix; the batch stays unacknowledged.
    GiveUp(String),
}

/// What is sent: plain records, encoded anew by every attempt, or an idempotent batch,
/// encoded once and resent byte for byte so the broker drops the copies it already has.
enum Payload<'a> {
    Plain(&'a [ProducerRecord]),
    Idempotent(&'a ProducerBatch),
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

/// One bounded attempt to produce `payload` with acks=all. After a retriable error the
/// leaders are reloaded; after a timeout the client is dropped, since a cancelled request
/// leaves its connection in an unknown state.
async fn attempt(
    client: &mut Option<Client>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    payload: Payload<'_>,
) -> Attempt {
    let c = match connected(client, bootstrap).await {
        Ok(c) => c,
        Err(e) => return Attempt::Retry(e),
    };
    let result = match payload {
        Payload::Plain(records) => {
            let produce =
                c.produce_attempt(topic, partition, records, acks::ALL, Compression::None);
            tokio::time::timeout(ATTEMPT_TIMEOUT, produce).await
        }
        Payload::Idempotent(batch) => {
            tokio::time::timeout(ATTEMPT_TIMEOUT, c.produce_batch_attempt(batch)).await
        }
    };
    match result {
        Ok(Ok(_)) => Attempt::Acked,
        Ok(Err(e)) if is_retriable(&e) => {
            if tokio::time::timeout(REQUEST_TIMEOUT, c.topic_metadata(topic))
                .await
                .is_err()
            {
                *client = None;
            }
            Attempt::Retry(e.to_string())
        }
        Ok(Err(e)) => Attempt::GiveUp(e.to_string()),
        Err(_) => {
            *client = None;
            Attempt::Retry(format!(
                "no produce response within {} s",
                ATTEMPT_TIMEOUT.as_secs()
            ))
        }
    }
}

/// The idempotent batch of `records`, asking for a producer id first if there is none yet;
/// a failure is worth retrying.
async fn idempotent_batch(
    producer: &mut Option<IdempotentProducer>,
    client: &mut Option<Client>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    records: &[ProducerRecord],
) -> Result<ProducerBatch, String> {
    let p = match producer {
        Some(p) => p,
        None => {
            let c = connected(client, bootstrap).await?;
            match tokio::time::timeout(ATTEMPT_TIMEOUT, c.idempotent_producer()).await {
                Ok(Ok(p)) => producer.insert(p),
                Ok(Err(e)) => return Err(format!("cannot get a producer id: {e}")),
                Err(_) => {
                    *client = None;
                    return Err(format!(
                        "no InitProducerId response within {} s",
                        ATTEMPT_TIMEOUT.as_secs()
                    ));
                }
            }
        }
    };
    p.batch(topic, partition, records, Compression::None)
        .map_err(|e| e.to_string())
}

/// Produces to one partition until `stop` turns true, retrying each batch until it is
/// acknowledged, given up on, or the run ends. With `idempotent`, every retry resends the
/// same batch (same producer id, epoch and sequence numbers); after a batch is given up on,
/// the next one starts a new producer, since its sequence numbers would follow a gap.
pub(crate) async fn produce_partition(
    bootstrap: String,
    topic: String,
    partition: i32,
    idempotent: bool,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> ProducerLog {
    let mut log = ProducerLog {
        idempotent,
        ..ProducerLog::default()
    };
    let mut client: Option<Client> = None;
    let mut producer: Option<IdempotentProducer> = None;
    let mut next_seq = 0;
    'batches: while !*stop.borrow() {
        let seqs: Vec<u64> = (next_seq..next_seq + BATCH).collect();
        next_seq += BATCH;
        let records: Vec<ProducerRecord> = seqs
            .iter()
            .map(|&s| ProducerRecord::value(record_value(partition, s)))
            .collect();
        // Made once per batch (idempotent only), then resent unchanged.
        let mut batch: Option<ProducerBatch> = None;
        while !*stop.borrow() {
            if idempotent && batch.is_none() {
                match idempotent_batch(
                    &mut producer,
                    &mut client,
                    &bootstrap,
                    &topic,
                    partition,
                    &records,
                )
                .await
                {
                    Ok(b) => batch = Some(b),
                    Err(msg) => {
                        log.errors += 1;
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        log.last_error = Some(msg);
                        let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
                        continue;
                    }
                }
            }
            let payload = match &batch {
                Some(b) => Payload::Idempotent(b),
                None => Payload::Plain(&records),
            };
            let (failure, give_up) =
                match attempt(&mut client, &bootstrap, &topic, partition, payload).await {
                    Attempt::Acked => {
                        log.acks.push(AckedBatch {
                            at: started.elapsed().as_secs_f64(),
                            seqs,
                        });
                        counters.acked.fetch_add(BATCH, Ordering::Relaxed);
                        continue 'batches;
                    }
                    Attempt::Retry(msg) => (msg, false),
                    Attempt::GiveUp(msg) => (msg, true),
                };
            log.errors += 1;
            counters.errors.fetch_add(1, Ordering::Relaxed);
            log.last_error = Some(failure);
            // A failed attempt may still have been written.
            log.retried.extend(&seqs);
            let _ = tokio::time::timeout(BACKOFF, stop.changed()).await;
            if give_up {
                log.abandoned += 1;
                producer = None;
                continue 'batches;
            }
        }
    }
    log
}

/// Reads `partition` from its start to its end offset at the time of the call and returns
/// the sequence numbers found, in offset order; values not written by this run are skipped.
pub(crate) async fn read_partition(
    client: &mut Client,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Vec<u64>> {
    bounded_client::read_partition(client, topic, partition, |v| parse_value(partition, v)).await
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
