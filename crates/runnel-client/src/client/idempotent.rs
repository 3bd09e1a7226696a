//! Idempotent producing: InitProducerId, and sending [`ProducerBatch`]es with acks=all.

use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use kafka_protocol::ResponseError;

use super::{acks, Client, ProduceAnswer, MAX_RETRIES};
use crate::error::{Error, Result};
use crate::idempotence::{IdempotentProducer, ProducerBatch, ProducerIdentity};

/// Highest InitProducerId version this client speaks.
pub(super) const INIT_PRODUCER_ID_MAX: i16 = 5;

impl Client {
    /// Asks any broker for a new producer id and epoch (InitProducerId without a
    /// transactional id), retrying retriable errors a few times.
    pub async fn init_producer_id(&mut self) -> Result<ProducerIdentity> {
        let mut retries = Self::retries(MAX_RETRIES);
        loop {
            match self.init_producer_id_once().await {
                Err(e) if Self::should_retry(&e) && Self::backoff(&mut retries, &e).await => {}
                other => return other,
            }
        }
    }

    async fn init_producer_id_once(&mut self) -> Result<ProducerIdentity> {
        let timeout_ms = self.timeout_ms();
        let conn = self.any_conn().await?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response = conn.send(request, INIT_PRODUCER_ID_MAX).await?;
        if let Some(e) = Error::from_code(response.error_code, None, None, None) {
            return Err(e);
        }
        if response.producer_id.0 < 0 || response.producer_epoch < 0 {
            return Err(Error::protocol(
                conn.addr(),
                format!(
                    "InitProducerId answered producer id {} epoch {} without an error",
                    response.producer_id.0, response.producer_epoch
                ),
            ));
        }
        Ok(ProducerIdentity {
            producer_id: response.producer_id.0,
            producer_epoch: response.producer_epoch,
        })
    }

    /// A new idempotent producer: [`Client::init_producer_id`], sequence numbers from 0.
    pub async fn idempotent_producer(&mut self) -> Result<IdempotentProducer> {
        Ok(IdempotentProducer::new(self.init_producer_id().await?))
    }

    /// Produces an idempotent batch with acks=all, retrying retriable errors (after reloading
    /// the leaders) with the very same batch, so the broker drops any copy it already wrote.
    /// Returns the base offset (see [`Client::produce_batch_attempt`]).
    pub async fn produce_batch(&mut self, batch: &ProducerBatch) -> Result<i64> {
        self.with_partition_retries(batch.topic(), async |client| {
            client.produce_batch_attempt(batch).await
        })
        .await
    }

    /// Sends an idempotent batch once, with acks=all. Returns the base offset the broker
    /// assigned. A broker that recognises the batch as one it already wrote answers with the
    /// original offsets, or with DUPLICATE_SEQUENCE_NUMBER, which counts as success here and
    /// gives -1 when the broker sent no offset. OUT_OF_ORDER_SEQUENCE_NUMBER,
    /// UNKNOWN_PRODUCER_ID and INVALID_PRODUCER_EPOCH give [`Error::Sequence`].
    pub async fn produce_batch_attempt(&mut self, batch: &ProducerBatch) -> Result<i64> {
        let (topic, partition) = (batch.topic(), batch.partition());
        let answer = self
            .send_produce(topic, partition, batch.bytes().clone(), acks::ALL)
            .await?
            .ok_or_else(|| Error::protocol("", "no Produce response with acks=all"))?;
        batch_result(batch, answer)
    }
}

/// What the answer to an idempotent batch means: its base offset, or the error.
/// DUPLICATE_SEQUENCE_NUMBER counts as success (the broker has the batch already), as in
/// Kafka's Java producer.
pub(super) fn batch_result(batch: &ProducerBatch, answer: ProduceAnswer) -> Result<i64> {
    let (topic, partition) = (batch.topic(), batch.partition());
    let Some(error) = ResponseError::try_from_code(answer.error_code) else {
        return Ok(answer.base_offset);
    };
    let producer = batch.producer();
    match error {
        ResponseError::DuplicateSequenceNumber => Ok(answer.base_offset),
        ResponseError::OutOfOrderSequenceNumber
        | ResponseError::UnknownProducerId
        | ResponseError::InvalidProducerEpoch => Err(Error::Sequence {
            error,
            topic: topic.to_owned(),
            partition,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            base_sequence: batch.base_sequence(),
            message: answer.message.filter(|m| !m.is_empty()),
        }),
        _ => Err(Error::Kafka {
            error,
            topic: Some(topic.to_owned()),
            partition: Some(partition),
            message: answer.message.filter(|m| !m.is_empty()),
        }),
    }
}
