//! InitProducerId: producer ids and epochs for idempotent producers.
//!
//! Without a transactional id, a new producer gets a fresh id (epoch 0); a producer that
//! sends its current id and epoch (KIP-360) gets the same id with the next epoch. Transactions
//! are not implemented yet: a request with a transactional id is answered with
//! UNSUPPORTED_VERSION, which every client treats as fatal ("the broker does not support
//! this") rather than retrying, and the node logs why.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::Context;

fn error(code: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code.code())
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub(crate) async fn handle(
    ctx: &Context,
    request: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    if let Some(txn) = request
        .transactional_id
        .as_ref()
        .filter(|t| !t.0.is_empty())
    {
        tracing::warn!(
            transactional_id = %txn.0.as_str(),
            "InitProducerId with a transactional.id: transactions are not supported yet; \
             answering UNSUPPORTED_VERSION (use enable.idempotence without transactional.id)"
        );
        return error(ResponseError::UnsupportedVersion);
    }
    let (pid, epoch) = (request.producer_id.0, request.producer_epoch);
    match ctx.producer_ids.init_producer(pid, epoch).await {
        Ok((producer_id, producer_epoch)) => {
            tracing::debug!(producer_id, producer_epoch, "InitProducerId");
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
        }
        Err(e) => {
            tracing::error!(error = %e, "InitProducerId: cannot allocate a producer id");
            error(e.code())
        }
    }
}
