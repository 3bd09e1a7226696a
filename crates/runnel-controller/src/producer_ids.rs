//! Producer-id blocks (Kafka's `ProducerIdControlManager`): each AllocateProducerIds hands a
//! broker the next `count` ids, so no id is ever given to two producers.

use crate::command::{CommandResult, ProducerIdBlock, MAX_PRODUCER_ID_BLOCK};
use crate::error::ControllerError;
use crate::image::MetadataImage;

pub(crate) fn allocate(
    image: &mut MetadataImage,
    broker_id: i32,
    count: i32,
) -> Result<CommandResult, ControllerError> {
    if image.broker(broker_id).is_none() {
        return Err(ControllerError::BrokerNotAvailable(format!(
            "broker {broker_id} is not registered"
        )));
    }
    if !(1..=MAX_PRODUCER_ID_BLOCK).contains(&count) {
        return Err(ControllerError::InvalidRequest(format!(
            "a producer-id block holds 1 to {MAX_PRODUCER_ID_BLOCK} ids, not {count}"
        )));
    }
    let first = image.next_producer_id;
    let next = first.checked_add(i64::from(count)).ok_or_else(|| {
        ControllerError::UnknownServerError(format!(
            "producer ids are exhausted: the next block would start at {first}"
        ))
    })?;
    image.next_producer_id = next;
    Ok(CommandResult::ProducerIdsAllocated(ProducerIdBlock {
        broker_id,
        first,
        size: count,
    }))
}
