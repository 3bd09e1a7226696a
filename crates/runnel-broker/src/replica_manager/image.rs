//! Image application: follows the controller's metadata image in log order. Each new image
//! opens the logs of new local replicas and drops those of deleted topics (through the
//! [`PartitionRegistry`]), applies changed topic configs, gives every replica the role the
//! image names (Kafka's `makeLeaders` / `makeFollowers`) and publishes the image, its offset
//! and the partitions to follow. A role transition that fails (an I/O error writing the
//! leader-epoch checkpoint) is retried with backoff until it succeeds or a newer image
//! decides again: a quiet cluster sends no new image, and the partition would stay without
//! a working leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use runnel_util::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::registry::PartitionRegistry;
use super::TopicPartition;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::{MetadataImage, PartitionInfo, TopicInfo, NO_LEADER};
use crate::partition::{lag_clock_ms, Partition, RoleChange};

/// A partition this node follows: what its fetcher for `leader` needs.
#[derive(Clone)]
pub struct FollowAssignment {
    pub partition: Arc<Partition>,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// Every partition this node follows, by partition.
pub type FollowAssignments = BTreeMap<TopicPartition, FollowAssignment>;

/// Waits between retries of failed role transitions: short at first (a transient error),
/// then at most this long.
const ROLE_RETRY_INITIAL: Duration = Duration::from_millis(100);
const ROLE_RETRY_MAX: Duration = Duration::from_secs(5);
/// A transition that keeps failing is logged at most this often.
const ROLE_RETRY_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The image this node serves and what applying it takes.
pub(crate) struct ImageApplier {
    node_id: i32,
    config: BrokerConfig,
    registry: Arc<PartitionRegistry>,
    /// Published image, swapped whole on every change so readers never wait on a writer.
    image: RwLock<Arc<MetadataImage>>,
    /// Metadata-log offset of the published image; admin operations wait on it.
    applied: watch::Sender<u64>,
    /// Serializes [`ImageApplier::apply`] (and stray removal), so logs open and close in log
    /// order.
    apply_lock: Mutex<()>,
    /// The partitions this node follows; the replica fetchers watch it.
    followed: watch::Sender<Arc<FollowAssignments>>,
    /// Replicas whose role transition failed; [`ImageApplier::run_role_retries`] retries them.
    /// Replaced under the apply lock by every role sync.
    failed_roles: watch::Sender<BTreeSet<TopicPartition>>,
    /// The incarnation this process registers with. Replication roles are taken only from
    /// images that know it: an older image is the metadata log as it was before this
    /// restart, replayed from disk, whose leaderships may long have moved (Kafka's brokers
    /// likewise wait until their metadata has caught up). `None` (unit tests): any image.
    incarnation: Option<Uuid>,
}

impl ImageApplier {
    /// Opens the log of every partition of `image` with a replica on `node_id` and takes
    /// roles from it (once an image knows `incarnation`). Directories of other partitions are
    /// left alone: `image` may be behind the log (see [`ImageApplier::remove_stray_dirs`]).
    pub(crate) fn open(
        node_id: i32,
        config: BrokerConfig,
        registry: Arc<PartitionRegistry>,
        offset: u64,
        image: Arc<MetadataImage>,
        incarnation: Option<Uuid>,
    ) -> Result<Self, BrokerError> {
        let (applied, _) = watch::channel(offset);
        let (followed, _) = watch::channel(Arc::new(FollowAssignments::new()));
        let (failed_roles, _) = watch::channel(BTreeSet::new());
        let applier = Self {
            node_id,
            config,
            registry,
            image: RwLock::new(image.clone()),
            applied,
            apply_lock: Mutex::new(()),
            followed,
            failed_roles,
            incarnation,
        };
        let mut opened = 0;
        for (topic, p) in image.partitions_replicated_on(node_id) {
            applier.registry.open_partition(topic, p.index)?;
            opened += 1;
        }
        applier.sync_roles(&image);
        tracing::info!(
            topics = image.topics.len(),
            partitions = opened,
            offset,
            "recovered partition logs"
        );
        Ok(applier)
    }

    pub(crate) fn image(&self) -> Arc<MetadataImage> {
        self.image.read().clone()
    }

    pub(crate) fn applied_offset(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Follows the metadata log: opens logs of new local replicas, closes and deletes those of
    /// topics that disappeared (or were re-created with a new id), applies changed topic
    /// configs, then publishes `image` and `offset`. Offsets at or below the applied one are
    /// ignored. Blocking file I/O: call from a blocking thread, in log order.
    pub(crate) fn apply(&self, offset: u64, image: Arc<MetadataImage>) -> Result<(), BrokerError> {
        let _order = self.apply_lock.lock();
        if offset <= self.applied_offset() {
            return Ok(());
        }
        let old = self.image();
        let wanted: HashMap<TopicPartition, &TopicInfo> = image
            .partitions_replicated_on(self.node_id)
            .map(|(t, p)| ((t.name.clone(), p.index), t))
            .collect();
        let doomed = self
            .registry
            .open_except(|key, p| wanted.get(key).is_some_and(|t| t.id == p.topic_id()));
        for (topic, index) in &doomed {
            self.registry.drop_partition(topic, *index);
            tracing::info!(
                topic,
                partition = index,
                "closed and deleted a partition log"
            );
        }
        // No new replica goes into an offline data dir (it opens on the next start).
        let offline = self.registry.log_dir().is_offline();
        let missing: Vec<(&TopicInfo, i32)> = wanted
            .iter()
            .filter(|(key, _)| !offline && !self.registry.contains(key))
            .map(|((_, index), t)| (*t, *index))
            .collect();
        for (topic, index) in missing {
            self.registry.open_partition(topic, index)?;
            tracing::info!(
                topic = topic.name,
                partition = index,
                "opened a partition log"
            );
        }
        for topic in image.topics.values() {
            let changed = old
                .topic(&topic.name)
                .is_some_and(|o| o.id == topic.id && o.configs != topic.configs);
            if changed {
                let log_config = self.config.log_config(&topic.configs);
                for p in self.registry.topic_partitions(&topic.name) {
                    let _ = p.with_log(|log| {
                        log.set_config(log_config.clone());
                        Ok(())
                    });
                }
                tracing::info!(topic = topic.name, "applied changed topic configs");
            }
        }
        self.sync_roles(&image);
        *self.image.write() = image;
        self.applied.send_replace(offset);
        Ok(())
    }

    /// The data dir is offline: no replica leads or follows any more, and the fetchers stop.
    pub(crate) fn stop_serving(&self) {
        let _order = self.apply_lock.lock();
        self.stop_all_roles();
    }

    fn stop_all_roles(&self) {
        for partition in self.registry.all() {
            partition.stop_serving();
        }
        self.followed
            .send_replace(Arc::new(FollowAssignments::new()));
        self.failed_roles.send_replace(BTreeSet::new());
    }

    /// Gives every local replica the role `image` names (leader or follower; Kafka's
    /// `makeLeaders` / `makeFollowers`) and publishes the partitions to follow.
    fn sync_roles(&self, image: &MetadataImage) {
        let caught_up = self.incarnation.is_none_or(|incarnation| {
            image
                .brokers
                .get(&self.node_id)
                .is_some_and(|b| b.incarnation == incarnation)
        });
        if !caught_up {
            return;
        }
        if self.registry.log_dir().is_offline() {
            self.stop_all_roles();
            return;
        }
        let now = lag_clock_ms();
        let mut followed = FollowAssignments::new();
        let mut failed = BTreeSet::new();
        for partition in self.registry.all() {
            let Some(info) = partition_info(image, &partition) else {
                continue;
            };
            if let Some(topic) = image.topic(partition.topic()) {
                partition.set_min_insync_replicas(self.config.min_insync_replicas(&topic.configs));
            }
            if let Err(e) = self.take_role(&partition, info, now) {
                tracing::error!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    error = %e,
                    "cannot take the role the metadata gives this replica; retrying"
                );
                failed.insert((partition.topic().to_string(), partition.index()));
            }
            if info.leader != self.node_id && info.leader != NO_LEADER {
                followed.insert(
                    (partition.topic().to_string(), partition.index()),
                    FollowAssignment {
                        partition: partition.clone(),
                        leader: info.leader,
                        leader_epoch: info.leader_epoch,
                    },
                );
            }
        }
        self.followed.send_replace(Arc::new(followed));
        self.failed_roles.send_replace(failed);
    }

    /// Gives `partition` the role `info` names. Errors are failed transitions worth a retry;
    /// stale metadata is not one (it waits for a newer image).
    fn take_role(
        &self,
        partition: &Partition,
        info: &PartitionInfo,
        now: i64,
    ) -> Result<(), BrokerError> {
        match partition.sync_role(info, self.node_id, now) {
            Ok(RoleChange::BecameLeader) => tracing::info!(
                topic = partition.topic(),
                partition = partition.index(),
                leader_epoch = info.leader_epoch,
                isr = ?info.isr,
                "became the leader"
            ),
            Ok(RoleChange::BecameFollower) => tracing::info!(
                topic = partition.topic(),
                partition = partition.index(),
                leader = info.leader,
                leader_epoch = info.leader_epoch,
                "became a follower"
            ),
            Ok(RoleChange::Unchanged) => {}
            Err(e @ BrokerError::StaleMetadata(_)) => tracing::info!(
                error = %e,
                "not taking leadership from metadata older than the log; waiting for newer metadata"
            ),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Takes again the roles whose transition failed, as the published image names them
    /// (under the apply lock, so never against an image being applied). Replicas gone from
    /// the image are dropped. Returns how many still fail. Blocking file I/O.
    fn retry_failed_roles(&self, log_failures: bool) -> usize {
        let _order = self.apply_lock.lock();
        let image = self.image();
        let now = lag_clock_ms();
        let mut failed = BTreeSet::new();
        for key in self.failed_roles.borrow().clone() {
            let Some(partition) = self.registry.get(&key.0, key.1) else {
                continue;
            };
            let Some(info) = partition_info(&image, &partition) else {
                continue;
            };
            if let Err(e) = self.take_role(&partition, info, now) {
                if log_failures {
                    tracing::warn!(
                        topic = partition.topic(),
                        partition = partition.index(),
                        error = %e,
                        "still cannot take the role the metadata gives this replica; retrying"
                    );
                }
                failed.insert(key);
            }
        }
        let remaining = failed.len();
        self.failed_roles.send_replace(failed);
        remaining
    }

    /// Retries failed role transitions with backoff until none is left, then waits for the
    /// next failure, until `shutdown` fires. A failure keeps being logged, at most every
    /// [`ROLE_RETRY_LOG_INTERVAL`].
    pub(crate) async fn run_role_retries(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failures = self.failed_roles.subscribe();
        loop {
            tokio::select! {
                r = failures.wait_for(|f| !f.is_empty()) => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            let mut backoff = Backoff::new(ROLE_RETRY_INITIAL, ROLE_RETRY_MAX);
            // The first failure was logged when it happened.
            let mut last_logged = Instant::now();
            loop {
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = shutdown.changed() => return,
                }
                let log_failures = last_logged.elapsed() >= ROLE_RETRY_LOG_INTERVAL;
                if log_failures {
                    last_logged = Instant::now();
                }
                let me = self.clone();
                let remaining =
                    tokio::task::spawn_blocking(move || me.retry_failed_roles(log_failures)).await;
                if matches!(remaining, Ok(0)) {
                    break;
                }
            }
        }
    }

    /// The partitions this node follows, changing with every metadata image.
    pub(crate) fn watch_followed(&self) -> watch::Receiver<Arc<FollowAssignments>> {
        self.followed.subscribe()
    }

    /// Waits until this node has applied the metadata log up to `offset`.
    pub(crate) async fn wait_applied(
        &self,
        offset: u64,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let mut rx = self.applied.subscribe();
        if *rx.borrow_and_update() >= offset {
            return Ok(());
        }
        let reached = tokio::time::timeout(timeout, rx.wait_for(|a| *a >= offset))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached {
            return Ok(());
        }
        Err(BrokerError::ControllerUnavailable(format!(
            "metadata offset {offset} was committed but this node has not applied it within {timeout:?}"
        )))
    }

    /// Removes partition directories that no replica of the current image needs, in step
    /// with image application. Call once this node has caught up with the metadata log.
    pub(crate) fn remove_stray_dirs(&self) {
        let _order = self.apply_lock.lock();
        self.registry.remove_stray_dirs(&self.image(), self.node_id);
    }
}

/// What `image` says of `partition`, unless its topic is gone or was re-created.
fn partition_info<'a>(
    image: &'a MetadataImage,
    partition: &Partition,
) -> Option<&'a PartitionInfo> {
    image
        .topic(partition.topic())
        .filter(|t| t.id == partition.topic_id())
        .and_then(|t| t.partition(partition.index()))
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
