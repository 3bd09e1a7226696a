//! Producer ids for idempotent producers.
//!
//! Ids are handed out from blocks, like Kafka's AllocateProducerIds: the node takes a block of
//! [`BLOCK_SIZE`] ids from a [`ProducerIdBlockSource`] and serves InitProducerId from it
//! without any round trip. [`ControllerBlockSource`] takes blocks from the controller, whose
//! replicated image records the start of the next block, so no id is handed out twice by any
//! node, even after a crash in the middle of a block (the rest of that block is skipped).

use std::sync::Arc;

use futures::future::BoxFuture;
use runnel_controller::command::{CommandResult, ControllerCommand};

use crate::error::BrokerError;
use crate::metadata::MetadataWriter;
use crate::replica_manager::ReplicaManager;

/// Ids per block, as in Kafka.
pub const BLOCK_SIZE: u32 = 1000;

/// A range of producer ids `[first, first + size)` owned by this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: u32,
}

impl ProducerIdBlock {
    /// One past the last id of the block.
    pub fn end(&self) -> i64 {
        self.first + i64::from(self.size)
    }
}

/// Where blocks of producer ids come from. A block returned must never be returned again, by
/// this or any other node, even across crashes.
pub trait ProducerIdBlockSource: Send + Sync {
    fn next_block(&self) -> BoxFuture<'_, Result<ProducerIdBlock, BrokerError>>;
}

/// Blocks allocated by the active controller (`AllocateProducerIds`).
pub struct ControllerBlockSource {
    pub writer: Arc<dyn MetadataWriter>,
    pub broker_id: i32,
}

impl ProducerIdBlockSource for ControllerBlockSource {
    fn next_block(&self) -> BoxFuture<'_, Result<ProducerIdBlock, BrokerError>> {
        Box::pin(async move {
            let cmd = ControllerCommand::AllocateProducerIds {
                broker_id: self.broker_id,
                count: BLOCK_SIZE as i32,
            };
            let written = self.writer.write(cmd).await?;
            match written.result.map_err(BrokerError::Controller)? {
                CommandResult::ProducerIdsAllocated(b) => {
                    let block = ProducerIdBlock {
                        first: b.first,
                        size: u32::try_from(b.size).unwrap_or(0),
                    };
                    tracing::info!(
                        first = block.first,
                        end = block.end(),
                        "allocated a block of producer ids"
                    );
                    Ok(block)
                }
                other => Err(BrokerError::InvalidRequest(format!(
                    "AllocateProducerIds answered with {other:?}"
                ))),
            }
        })
    }
}

/// Hands out producer ids and epochs (InitProducerId).
pub struct ProducerIdManager {
    source: Box<dyn ProducerIdBlockSource>,
    /// Its image says which ids the cluster has handed out.
    broker: Arc<ReplicaManager>,
    /// Ids `[next, end)` of the current block are still free. A tokio mutex: refilling awaits
    /// the controller, and concurrent callers must wait for that one refill.
    current: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// Takes blocks from the controller through `writer`, for this broker. No block is taken
    /// until the first id is needed.
    pub fn from_controller(writer: Arc<dyn MetadataWriter>, broker: Arc<ReplicaManager>) -> Self {
        let source = ControllerBlockSource {
            writer,
            broker_id: broker.node_id(),
        };
        Self::with_source(Box::new(source), broker)
    }

    pub fn with_source(
        source: Box<dyn ProducerIdBlockSource>,
        broker: Arc<ReplicaManager>,
    ) -> Self {
        Self {
            source,
            broker,
            current: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// A producer id never handed out before. Asks the controller for a block once per
    /// [`BLOCK_SIZE`] ids.
    pub async fn generate(&self) -> Result<i64, BrokerError> {
        let mut current = self.current.lock().await;
        if current.0 >= current.1 {
            let block = self.source.next_block().await?;
            *current = (block.first, block.end());
        }
        let id = current.0;
        current.0 += 1;
        Ok(id)
    }

    /// Every id below this may have been handed out. This node's own block counts even
    /// before its allocation reaches the local image.
    async fn allocated_below(&self) -> i64 {
        let own = self.current.lock().await.1;
        self.broker.image().next_producer_id.max(own)
    }

    /// InitProducerId for an idempotent producer: `(producer_id, epoch)`. With an existing id
    /// and epoch (KIP-360, the client asks to bump its epoch after a fatal sequence error),
    /// the same id comes back with the next epoch; a fresh id with epoch 0 when the epoch
    /// would exhaust, or when the id was never handed out by this cluster.
    pub async fn init_producer(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        if producer_id >= 0 && producer_epoch >= 0 {
            if producer_id >= self.allocated_below().await {
                tracing::warn!(
                    producer_id,
                    producer_epoch,
                    "InitProducerId: epoch bump for a producer id never handed out; assigning a new id"
                );
            } else if producer_epoch < i16::MAX - 1 {
                return Ok((producer_id, producer_epoch + 1));
            }
        }
        Ok((self.generate().await?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::testing::LocalController;
    use std::collections::HashSet;

    #[tokio::test]
    async fn ids_come_from_controller_blocks_and_never_repeat() {
        let dir1 = tempfile::tempdir().unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let controller = LocalController::new(&[1, 2]);
        let b1 = controller.start_broker(dir1.path(), 1, BrokerConfig::default());
        let b2 = controller.start_broker(dir2.path(), 2, BrokerConfig::default());
        let m1 = ProducerIdManager::from_controller(controller.clone(), b1);
        let m2 = ProducerIdManager::from_controller(controller.clone(), b2.clone());
        let mut seen = HashSet::new();
        for _ in 0..1500 {
            assert!(seen.insert(m1.generate().await.unwrap()));
            assert!(seen.insert(m2.generate().await.unwrap()));
        }
        // Four blocks of 1000 taken, in turn, from the replicated image.
        assert_eq!(controller.image().next_producer_id, 4000);
        // A restarted node (a new manager) gets a fresh block: the rest of the old is skipped.
        let m2 = ProducerIdManager::from_controller(controller.clone(), b2);
        let next = m2.generate().await.unwrap();
        assert_eq!(next, 4000);
        assert!(seen.insert(next));
    }

    #[tokio::test]
    async fn epoch_bump_and_exhaustion() {
        let dir = tempfile::tempdir().unwrap();
        let (controller, broker) = LocalController::start(dir.path(), 1, BrokerConfig::default());
        let m = ProducerIdManager::from_controller(controller, broker);
        let (id, epoch) = m.init_producer(-1, -1).await.unwrap();
        assert_eq!((id, epoch), (0, 0));
        assert_eq!(m.init_producer(id, 0).await.unwrap(), (id, 1));
        assert_eq!(m.init_producer(id, 41).await.unwrap(), (id, 42));
        let (new_id, e) = m.init_producer(id, i16::MAX - 1).await.unwrap();
        assert_eq!(e, 0);
        assert_ne!(new_id, id);
        // An id this cluster never issued gets a fresh one.
        let (other, e) = m.init_producer(1_000_000, 3).await.unwrap();
        assert_eq!(e, 0);
        assert!(other < 1000);
    }
}
