//! The leader's ISR updates: Kafka's ISR expiration (shrinking the ISR of partitions whose
//! followers stopped catching up) and the AlterPartition requests that carry every ISR change
//! to the controller. Nothing changes the ISR locally before the controller accepts: the
//! leader's [`LeaderState`](super::LeaderState) keeps the change pending (and counts the
//! maximal ISR for the high watermark) until the answer or a newer metadata image arrives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_controller::command::{CommandResult, ControllerCommand};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::metadata::MetadataWriter;
use crate::partition::{lag_clock_ms, Partition};
use crate::replica_manager::registry::PartitionRegistry;
use crate::replica_manager::TopicPartition;
use crate::replication::IsrChange;

/// Pause before re-sending a change whose request got no answer from any controller.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// Carries the leader's ISR changes to the controller: a queue with at most one change per
/// partition, and the task that sends it.
pub(crate) struct IsrSender {
    node_id: i32,
    /// `replica.lag.time.max.ms`.
    max_lag_ms: u64,
    writer: Arc<dyn MetadataWriter>,
    registry: Arc<PartitionRegistry>,
    /// Changes not sent yet, at most one per partition, and the wake-up of the sending task.
    outbox: Mutex<HashMap<TopicPartition, IsrChange>>,
    notify: Notify,
}

impl IsrSender {
    pub(crate) fn new(
        node_id: i32,
        max_lag_ms: u64,
        writer: Arc<dyn MetadataWriter>,
        registry: Arc<PartitionRegistry>,
    ) -> Self {
        Self {
            node_id,
            max_lag_ms,
            writer,
            registry,
            outbox: Mutex::new(HashMap::new()),
            notify: Notify::new(),
        }
    }

    /// Queues an ISR change for the controller (replacing an older one of the partition).
    pub(crate) fn submit(&self, partition: &Partition, change: IsrChange) {
        self.outbox
            .lock()
            .insert((partition.topic().to_string(), partition.index()), change);
        self.notify.notify_one();
    }

    /// Sends queued ISR changes to the controller and checks for lagging followers every
    /// half `replica.lag.time.max.ms`, until `shutdown` fires. Each partition has at most one
    /// AlterPartition in flight; partitions do not wait for each other.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let max_lag_ms = self.max_lag_ms;
        let every = Duration::from_millis((max_lag_ms / 2).clamp(100, 5_000));
        let mut expiry = tokio::time::interval(every);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight: JoinSet<TopicPartition> = JoinSet::new();
        let mut busy: HashSet<TopicPartition> = HashSet::new();
        loop {
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = expiry.tick() => self.expire_lagging_followers(max_lag_ms as i64),
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(tp) = done {
                        busy.remove(&tp);
                    }
                }
                _ = shutdown.changed() => break,
            }
            let ready: Vec<(TopicPartition, IsrChange)> = {
                let mut outbox = self.outbox.lock();
                let keys: Vec<TopicPartition> = outbox
                    .keys()
                    .filter(|tp| !busy.contains(*tp))
                    .cloned()
                    .collect();
                keys.into_iter()
                    .filter_map(|tp| outbox.remove_entry(&tp))
                    .collect()
            };
            for (tp, change) in ready {
                busy.insert(tp.clone());
                let me = self.clone();
                in_flight.spawn(async move {
                    me.alter_partition(tp.clone(), change).await;
                    tp
                });
            }
        }
        in_flight.abort_all();
    }

    /// Kafka's `maybeShrinkIsr` over every partition this node leads.
    fn expire_lagging_followers(&self, max_lag_ms: i64) {
        let now = lag_clock_ms();
        for partition in self.registry.all() {
            if let Some(change) = partition.maybe_shrink_isr(now, max_lag_ms) {
                self.submit(&partition, change);
            }
        }
    }

    /// One AlterPartition round trip; the answer goes to the partition's leader state. A
    /// request no controller answered is queued again while the change is still pending.
    async fn alter_partition(&self, (topic, index): TopicPartition, change: IsrChange) {
        let Some(partition) = self.registry.get(&topic, index) else {
            return;
        };
        tracing::info!(
            topic,
            partition = index,
            new_isr = ?change.new_isr,
            leader_epoch = change.leader_epoch,
            partition_epoch = change.partition_epoch,
            "asking the controller to change the ISR"
        );
        let cmd = ControllerCommand::AlterPartition {
            topic: topic.clone(),
            topic_id: Some(partition.topic_id()),
            partition: index,
            leader_id: self.node_id,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.new_isr.clone(),
            joining_broker_epochs: change.joining.into_iter().collect(),
        };
        match self.writer.write(cmd).await {
            Ok(written) => match written.result {
                Ok(CommandResult::PartitionAltered(info)) => {
                    tracing::info!(topic, partition = index, isr = ?info.isr, partition_epoch = info.partition_epoch, "the controller changed the ISR");
                    partition.on_alter_result(&change, Ok(info));
                }
                Ok(other) => {
                    tracing::error!(topic, partition = index, result = ?other, "unexpected answer to AlterPartition; taking it as not applied");
                    partition.on_alter_result(
                        &change,
                        Err(kafka_protocol::ResponseError::OperationNotAttempted),
                    );
                }
                Err(e) => {
                    tracing::info!(topic, partition = index, error = %e, "the controller refused the ISR change");
                    partition.on_alter_result(&change, Err(e.code()));
                }
            },
            Err(e) => {
                tracing::warn!(topic, partition = index, error = %e, "no controller answered an ISR change; retrying");
                tokio::time::sleep(RETRY_BACKOFF).await;
                if partition.is_pending(&change) {
                    self.submit(&partition, change);
                }
            }
        }
    }
}
