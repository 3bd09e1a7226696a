//! The group coordinator (stub until implemented).

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::BrokerError;
use crate::replica_manager::ReplicaManager;

/// Serves consumer groups whose `__consumer_offsets` partitions this node leads.
pub struct GroupCoordinator {
    _broker: Arc<ReplicaManager>,
}

impl GroupCoordinator {
    /// Creates the coordinator, loading group state from `__consumer_offsets`.
    pub fn open(broker: Arc<ReplicaManager>) -> Result<Self, BrokerError> {
        Ok(Self { _broker: broker })
    }

    /// Runs the coordinator's timers (session and rebalance timeouts, offset expiry) until
    /// `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let _ = shutdown.changed().await;
    }
}
