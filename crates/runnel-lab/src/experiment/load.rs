//! The producer load of an experiment and the read-back that follows it.
//!
//! Several workers, each with its own client and so its own connection to the leader, send
//! batches of uniquely numbered records: that keeps several produce requests in flight, as a
//! real producer's pipelining does. A failed request is not retried (its records stay
//! unacknowledged), so every acknowledgement counted is one the broker really gave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_client::{Client, Compression, ProducerRecord};
use tokio::task::JoinSet;

use crate::bounded_client::{self, ATTEMPT_TIMEOUT, REQUEST_TIMEOUT};
pub(crate) use crate::cli::Acks;

/// The client's own bounds, and ours around a whole attempt (connecting included).
/// Pause after a failed request, so a dead leader is not hammered.
const BACKOFF: Duration = Duration::from_millis(100);
/// Every value starts with this and the record's sequence number.
const VALUE_PREFIX: &str = "exp:";
const SEQ_DIGITS: usize = 16;
/// The smallest record that holds the prefix and the sequence number.
pub(crate) const MIN_RECORD_SIZE: usize = VALUE_PREFIX.len() + SEQ_DIGITS;

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub(crate) bootstrap: String,
    pub(crate) topic: String,
    pub(crate) acks: Acks,
    pub(crate) record_size: usize,
    pub(crate) batch: u64,
    pub(crate) in_flight: usize,
    pub(crate) max_records: u64,
    pub(crate) run_for: Duration,
}

/// What the workers saw, merged.
#[derive(Debug, Default)]
pub(crate) struct LoadLog {
    /// Records whose request was written (acks=0) or answered without error.
    pub(crate) sent: u64,
    /// Sequence numbers the broker acknowledged (none with acks=0).
    pub(crate) acked: Vec<u64>,
    /// Send-to-answer time of each successful request, in microseconds (none with acks=0).
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) errors: u64,
    pub(crate) last_error: Option<String>,
    /// From the first send to the last answer.
    pub(crate) seconds: f64,
}

impl LoadLog {
    fn absorb(&mut self, other: LoadLog) {
        self.sent += other.sent;
        self.acked.extend(other.acked);
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }
}

/// The value of record `seq`: the prefix, the zero-padded number, then filler up to `size`.
pub(crate) fn record_value(seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{VALUE_PREFIX}{seq:0SEQ_DIGITS$}").into_bytes();
    v.resize(size.max(MIN_RECORD_SIZE), b'.');
    v
}

/// The sequence number of a value written by [`record_value`]; `None` for any other value.
pub(crate) fn parse_value(value: &[u8]) -> Option<u64> {
    let digits = value
        .strip_prefix(VALUE_PREFIX.as_bytes())?
        .get(..SEQ_DIGITS)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Connects with the bounded timeouts of runs under faults.
pub(crate) async fn connect(bootstrap: &str) -> anyhow::Result<Client> {
    bounded_client::connect(bootstrap, "runnel-experiment").await
}

/// Runs the load until `spec.run_for` has passed or `spec.max_records` were handed out.
pub(crate) async fn run(spec: LoadSpec) -> LoadLog {
    let spec = Arc::new(spec);
    let next_seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + spec.run_for;
    let mut workers = JoinSet::new();
    for _ in 0..spec.in_flight {
        workers.spawn(worker(Arc::clone(&spec), Arc::clone(&next_seq), deadline));
    }
    let mut log = LoadLog::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(w) => log.absorb(w),
            Err(e) => {
                log.errors += 1;
                log.last_error = Some(format!("a producer task failed: {e}"));
            }
        }
    }
    log.seconds = started.elapsed().as_secs_f64();
    log.latencies_us.sort_unstable();
    log.acked.sort_unstable();
    log
}

async fn worker(spec: Arc<LoadSpec>, next_seq: Arc<AtomicU64>, deadline: Instant) -> LoadLog {
    let mut log = LoadLog::default();
    let mut client: Option<Client> = None;
    while Instant::now() < deadline {
        let first = next_seq.fetch_add(spec.batch, Ordering::Relaxed);
        if first >= spec.max_records {
            break;
        }
        let seqs = first..(first + spec.batch).min(spec.max_records);
        let records: Vec<ProducerRecord> = seqs
            .clone()
            .map(|s| ProducerRecord::value(record_value(s, spec.record_size)))
            .collect();
        let sent_at = Instant::now();
        match attempt(&mut client, &spec, &records).await {
            Ok(()) => {
                log.sent += records.len() as u64;
                if spec.acks != Acks::None {
                    log.latencies_us.push(sent_at.elapsed().as_micros() as u64);
                    log.acked.extend(seqs);
                }
            }
            Err(e) => {
                log.errors += 1;
                log.last_error = Some(e);
                tokio::time::sleep_until(deadline.min(Instant::now() + BACKOFF).into()).await;
            }
        }
    }
    log
}

/// One bounded produce request, connecting first if needed. After a failure the leaders
/// are reloaded (the partition may have moved); a client that cannot even do that, or whose
/// request timed out (leaving its connection in an unknown state), is dropped.
async fn attempt(
    client: &mut Option<Client>,
    spec: &LoadSpec,
    records: &[ProducerRecord],
) -> Result<(), String> {
    let c = match client {
        Some(c) => c,
        None => client.insert(
            connect(&spec.bootstrap)
                .await
                .map_err(|e| format!("{e:#}"))?,
        ),
    };
    let produce = c.produce_attempt(&spec.topic, 0, records, spec.acks.code(), Compression::None);
    let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, produce).await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => {
            *client = None;
            return Err(format!(
                "no produce answer within {} s",
                ATTEMPT_TIMEOUT.as_secs()
            ));
        }
    };
    if !matches!(
        tokio::time::timeout(REQUEST_TIMEOUT, c.topic_metadata(&spec.topic)).await,
        Ok(Ok(_))
    ) {
        *client = None;
    }
    Err(error)
}

/// Reads partition 0 of `topic` from its start to its end offset at the time of the call and
/// returns the sequence numbers found; values not written by [`record_value`] are skipped.
pub(crate) async fn read_back(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<u64>> {
    let mut client = connect(bootstrap).await?;
    bounded_client::read_partition(&mut client, topic, 0, parse_value).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_sequence_number_and_have_the_asked_size() {
        let v = record_value(42, 1024);
        assert_eq!(v.len(), 1024);
        assert_eq!(parse_value(&v), Some(42));
        assert_eq!(record_value(7, 1).len(), MIN_RECORD_SIZE);
        assert_eq!(
            parse_value(&record_value(9_999_999_999_999_999, 64)),
            Some(9_999_999_999_999_999)
        );
        assert_eq!(parse_value(b"exp:12"), None);
        assert_eq!(parse_value(b"hello, world, not ours"), None);
    }
}
