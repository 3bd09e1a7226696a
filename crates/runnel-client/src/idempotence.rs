//! Idempotent producing: a producer id and epoch from InitProducerId, and a sequence number
//! per partition, so that a broker can recognise a retried batch it already wrote and drop it.
//!
//! A [`ProducerBatch`] is encoded once and keeps its bytes: every retry sends exactly the same
//! batch (same producer id, epoch and base sequence), which is what lets the broker deduplicate.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::error::{Error, Result};
use crate::records::{encode_idempotent_record_batch, ProducerRecord};

/// The identity InitProducerId hands out to an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
}

/// Kafka's sequence arithmetic: sequence numbers wrap from `i32::MAX` to 0, not to a
/// negative number.
pub fn increment_sequence(sequence: i32, by: i32) -> i32 {
    if sequence > i32::MAX - by {
        by - (i32::MAX - sequence) - 1
    } else {
        sequence + by
    }
}

/// Hands out sequence numbers for one producer identity, per (topic, partition).
///
/// Sequence numbers are taken when a batch is made, not when it is acknowledged: a batch must
/// be retried until it succeeds (or the producer is abandoned), because the next batch of the
/// partition expects the broker to have it. After an error that retrying cannot fix (e.g.
/// OUT_OF_ORDER_SEQUENCE_NUMBER), start over with a new producer from InitProducerId.
#[derive(Debug, Clone)]
pub struct IdempotentProducer {
    identity: ProducerIdentity,
    next: HashMap<(String, i32), i32>,
}

impl IdempotentProducer {
    /// A producer with `identity` that has sent nothing yet.
    pub fn new(identity: ProducerIdentity) -> Self {
        Self {
            identity,
            next: HashMap::new(),
        }
    }

    /// The producer id and epoch.
    pub fn identity(&self) -> ProducerIdentity {
        self.identity
    }

    /// The base sequence the next batch of `topic` / `partition` gets.
    pub fn next_sequence(&self, topic: &str, partition: i32) -> i32 {
        self.next
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Encodes `records` as the next batch of `topic` / `partition` and takes its sequence
    /// numbers.
    pub fn batch(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[ProducerRecord],
        compression: Compression,
    ) -> Result<ProducerBatch> {
        let count = i32::try_from(records.len())
            .map_err(|_| Error::InvalidArgument("too many records for one batch".into()))?;
        let base_sequence = self.next_sequence(topic, partition);
        let bytes =
            encode_idempotent_record_batch(records, compression, self.identity, base_sequence)?;
        self.next.insert(
            (topic.to_owned(), partition),
            increment_sequence(base_sequence, count),
        );
        Ok(ProducerBatch {
            topic: topic.to_owned(),
            partition,
            producer: self.identity,
            base_sequence,
            record_count: count,
            bytes,
        })
    }
}

/// One encoded idempotent batch for one partition. Send it with
/// [`Client::produce_batch`](crate::Client::produce_batch) or
/// [`Client::produce_batch_attempt`](crate::Client::produce_batch_attempt); resend the same
/// value after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerBatch {
    topic: String,
    partition: i32,
    producer: ProducerIdentity,
    base_sequence: i32,
    record_count: i32,
    bytes: Bytes,
}

impl ProducerBatch {
    /// The topic it is for.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition it is for.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The producer id and epoch it carries.
    pub fn producer(&self) -> ProducerIdentity {
        self.producer
    }

    /// The sequence number of its first record.
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence
    }

    /// How many records it holds.
    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// The encoded record batch, as a Produce request carries it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::RecordBatchDecoder;

    use super::*;

    const ID: ProducerIdentity = ProducerIdentity {
        producer_id: 42,
        producer_epoch: 3,
    };

    fn records(n: usize) -> Vec<ProducerRecord> {
        (0..n)
            .map(|i| ProducerRecord::value(format!("v{i}")))
            .collect()
    }

    fn base_sequence_of(batch: &ProducerBatch) -> i32 {
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.bytes().clone()).unwrap();
        assert_eq!(info.len(), 1);
        info[0].base_sequence
    }

    #[test]
    fn sequences_advance_per_partition() {
        let mut p = IdempotentProducer::new(ID);
        let a0 = p.batch("a", 0, &records(3), Compression::None).unwrap();
        let a1 = p.batch("a", 1, &records(2), Compression::None).unwrap();
        let a0b = p.batch("a", 0, &records(5), Compression::None).unwrap();
        let b0 = p.batch("b", 0, &records(1), Compression::None).unwrap();
        assert_eq!(
            [&a0, &a1, &a0b, &b0].map(ProducerBatch::base_sequence),
            [0, 0, 3, 0]
        );
        assert_eq!(
            [&a0, &a1, &a0b, &b0].map(base_sequence_of),
            [0, 0, 3, 0],
            "the encoded batches carry the same base sequences"
        );
        assert_eq!(p.next_sequence("a", 0), 8);
        assert_eq!(p.next_sequence("a", 1), 2);
        assert_eq!(p.next_sequence("c", 0), 0);
        assert_eq!(a0b.record_count(), 5);
        assert_eq!((a0b.topic(), a0b.partition(), a0b.producer()), ("a", 0, ID));
    }

    #[test]
    fn a_failed_encoding_takes_no_sequence_numbers() {
        let mut p = IdempotentProducer::new(ID);
        assert!(p.batch("a", 0, &[], Compression::None).is_err());
        assert_eq!(p.next_sequence("a", 0), 0);
    }

    #[test]
    fn sequences_wrap_to_zero_like_kafka() {
        assert_eq!(increment_sequence(0, 4), 4);
        assert_eq!(increment_sequence(i32::MAX - 4, 4), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX - 3, 4), 0);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX, 5), 4);
    }
}
