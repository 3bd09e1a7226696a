//! Pipelined producing to one partition: several acks=all Produce requests in flight on one
//! connection of their own, answered in the order they were sent (Kafka's
//! `max.in.flight.requests.per.connection`).

use std::collections::VecDeque;

use bytes::Bytes;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::records::Compression;
use uuid::Uuid;

use super::idempotent::batch_result;
use super::{
    acks, encode_batch_for, produce_answer, produce_request, Client, PRODUCE_MAX,
    PRODUCE_MAX_BY_NAME,
};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::idempotence::ProducerBatch;
use crate::records::ProducerRecord;

/// A request in flight: its correlation id and, for an idempotent batch, the batch (its
/// answer is read as [`Client::produce_batch_attempt`] reads it).
#[derive(Debug)]
struct InFlight {
    correlation_id: i32,
    batch: Option<ProducerBatch>,
}

/// A connection to one partition's leader that carries acks=all Produce requests without
/// waiting for each answer. Answers come back in the order the requests were sent. After any
/// error of the connection itself, every request in flight has an unknown outcome: drop the
/// pipeline and open a new one (the leader may have moved too).
#[derive(Debug)]
pub struct ProducePipeline {
    conn: Connection,
    leader: i32,
    topic: String,
    topic_id: Option<Uuid>,
    partition: i32,
    version: i16,
    timeout_ms: i32,
    in_flight: VecDeque<InFlight>,
}

impl Client {
    /// Opens a connection of its own to the current leader of `topic` / `partition` for
    /// pipelined acks=all produce requests.
    pub async fn produce_pipeline(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<ProducePipeline> {
        let leader = self.leader_for(topic, partition).await?;
        let topic_id = self.topics.get(topic).and_then(|t| t.topic_id);
        let addr = self
            .brokers
            .get(&leader)
            .map(|b| b.addr())
            .ok_or_else(|| Error::protocol("", format!("broker {leader} is unknown")))?;
        let conn = Connection::connect(&addr, &self.config).await?;
        let max = if topic_id.is_some() {
            PRODUCE_MAX
        } else {
            PRODUCE_MAX_BY_NAME
        };
        let version = conn.negotiate::<ProduceRequest>(max)?;
        Ok(ProducePipeline {
            conn,
            leader,
            topic: topic.to_owned(),
            topic_id,
            partition,
            version,
            timeout_ms: self.timeout_ms(),
            in_flight: VecDeque::new(),
        })
    }
}

impl ProducePipeline {
    /// The broker this pipeline sends to.
    pub fn leader(&self) -> i32 {
        self.leader
    }

    /// How many requests await their answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends an idempotent batch (for this pipeline's partition) without waiting for its
    /// answer.
    pub async fn send_batch(&mut self, batch: &ProducerBatch) -> Result<()> {
        if (batch.topic(), batch.partition()) != (self.topic.as_str(), self.partition) {
            return Err(Error::InvalidArgument(format!(
                "a batch for {}-{} sent to the pipeline of {}-{}",
                batch.topic(),
                batch.partition(),
                self.topic,
                self.partition
            )));
        }
        self.send(batch.bytes().clone(), Some(batch.clone())).await
    }

    /// Sends `records` as one batch without idempotence, without waiting for its answer.
    pub async fn send_records(
        &mut self,
        records: &[ProducerRecord],
        compression: Compression,
    ) -> Result<()> {
        let bytes = encode_batch_for(records, acks::ALL, compression)?;
        self.send(bytes, None).await
    }

    async fn send(&mut self, bytes: Bytes, batch: Option<ProducerBatch>) -> Result<()> {
        let request = produce_request(
            &self.topic,
            self.topic_id,
            self.partition,
            bytes,
            acks::ALL,
            self.timeout_ms,
            self.version,
        );
        let correlation_id = self.conn.write_request(&request, self.version).await?;
        self.in_flight.push_back(InFlight {
            correlation_id,
            batch,
        });
        Ok(())
    }

    /// Waits for the answer to the oldest request in flight. The outer error is one of the
    /// connection (every request in flight is then in doubt); the inner result is the
    /// broker's answer to that request: its base offset or its error.
    pub async fn receive(&mut self) -> Result<Result<i64>> {
        let Some(oldest) = self.in_flight.pop_front() else {
            return Err(Error::InvalidArgument(
                "no produce request in flight".into(),
            ));
        };
        let response = self
            .conn
            .read_response::<ProduceRequest>(oldest.correlation_id, self.version)
            .await?;
        let answer = produce_answer(
            &response,
            &self.topic,
            self.topic_id,
            self.partition,
            self.version,
            self.conn.addr(),
        )?;
        Ok(match &oldest.batch {
            Some(batch) => batch_result(batch, answer),
            None => match Error::from_code(
                answer.error_code,
                Some(&self.topic),
                Some(self.partition),
                answer.message.as_deref(),
            ) {
                Some(e) => Err(e),
                None => Ok(answer.base_offset),
            },
        })
    }
}
