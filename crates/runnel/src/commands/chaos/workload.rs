//! The load a chaos run applies and checks: one producer per partition sending uniquely
//! numbered records with acks=all, and reading every partition back afterwards.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use runnel_client::{
    acks, offset_spec, Client, ClientConfig, Compression, Error, ProducerRecord, ResponseError,
};
use tokio::sync::watch;

use super::checker::PartitionHistory;

/// Records per produce request.
const BATCH: u64 = 4;
/// Bounds on one attempt: the client's own timeouts, and ours around the whole attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed attempt before the next one.
const BACKOFF: Duration = Duration::from_millis(200);

/// Totals the progress line shows while producers run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) acked: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// What one partition's producer saw.
#[derive(Debug, Default)]
pub(crate) struct ProducerLog {
    pub(crate) acked: Vec<u64>,
    /// When each successful produce response arrived, in seconds since the workload started.
    pub(crate) ack_times: Vec<f64>,
    pub(crate) retried: HashSet<u64>,
    pub(crate) errors: u64,
    /// Batches given up on after an error that retrying cannot fix.
    pub(crate) abandoned: u64,
    pub(crate) last_error: Option<String>,
}

impl ProducerLog {
    pub(crate) fn into_history(self, read: Vec<u64>) -> PartitionHistory {
        PartitionHistory {
            acked: self.acked,
            retried: self.retried,
            read,
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

fn client_config() -> ClientConfig {
    ClientConfig {
        client_id: "runnel-chaos".to_owned(),
        connect_timeout: CONNECT_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::default()
    }
}

pub(crate) async fn connect(bootstrap: &str) -> anyhow::Result<Client> {
    match tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        Client::connect_with_config(bootstrap, client_config()),
    )
    .await
    {
        Ok(r) => r.with_context(|| format!("cannot connect to {bootstrap}")),
        Err(_) => bail!("no broker of {bootstrap} answered within {ATTEMPT_TIMEOUT:?}"),
    }
}

/// How one produce attempt ended.
enum Attempt {
    Acked,
    /// Failed in a way retrying the same batch may fix.
    Retry(String),
    /// Failed in a way retrying cannot fix; the batch stays unacknowledged.
    GiveUp(String),
}

/// One bounded attempt to produce `records`, connecting first if needed. After a retriable
/// error the leaders are reloaded; after a timeout the client is dropped, since a cancelled
/// request leaves its connection in an unknown state.
async fn attempt(
    client: &mut Option<Client>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    records: &[ProducerRecord],
) -> Attempt {
    let c = match client {
        Some(c) => c,
        None => match connect(bootstrap).await {
            Ok(c) => client.insert(c),
            Err(e) => return Attempt::Retry(format!("{e:#}")),
        },
    };
    let produce = c.produce_attempt(topic, partition, records, acks::ALL, Compression::None);
    match tokio::time::timeout(ATTEMPT_TIMEOUT, produce).await {
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

/// Produces to one partition until `stop` turns true, retrying each batch until it is
/// acknowledged, given up on, or the run ends.
pub(crate) async fn produce_partition(
    bootstrap: String,
    topic: String,
    partition: i32,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> ProducerLog {
    let mut log = ProducerLog::default();
    let mut client: Option<Client> = None;
    let mut next_seq = 0;
    'batches: while !*stop.borrow() {
        let seqs: Vec<u64> = (next_seq..next_seq + BATCH).collect();
        next_seq += BATCH;
        let records: Vec<ProducerRecord> = seqs
            .iter()
            .map(|&s| ProducerRecord::value(record_value(partition, s)))
            .collect();
        while !*stop.borrow() {
            let (failure, give_up) =
                match attempt(&mut client, &bootstrap, &topic, partition, &records).await {
                    Attempt::Acked => {
                        log.ack_times.push(started.elapsed().as_secs_f64());
                        log.acked.extend(&seqs);
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
    let bounded = |what: &'static str| {
        move |_| anyhow::anyhow!("{what} of partition {partition} took over {REQUEST_TIMEOUT:?}")
    };
    let end = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.list_offsets(topic, partition, offset_spec::LATEST),
    )
    .await
    .map_err(bounded("finding the end"))??;
    let mut offset = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.list_offsets(topic, partition, offset_spec::EARLIEST),
    )
    .await
    .map_err(bounded("finding the start"))??;
    let mut seqs = Vec::new();
    while offset < end {
        let records = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            client.fetch(topic, partition, offset, 500, 1 << 20),
        )
        .await
        .map_err(bounded("a fetch"))??;
        let Some(last) = records.last() else {
            bail!("partition {partition} returned nothing at offset {offset} before its end {end}");
        };
        offset = last.offset + 1;
        seqs.extend(
            records
                .iter()
                .filter_map(|r| parse_value(partition, r.value.as_deref()?)),
        );
    }
    Ok(seqs)
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
