//! The replica manager: the partition logs this node hosts, kept in step with the
//! controller's metadata image, served to the gateway and the replication service. It is a
//! facade over one part per responsibility:
//!
//! - [`registry`]: which local replicas exist, their directories, opening and deleting logs;
//! - [`image`]: applying metadata images in log order, replication roles (role sync);
//! - [`admin`]: topic administration sent to the controller through a [`MetadataWriter`];
//! - [`maintenance`]: retention, timed flushes, the log cleaner and the high-watermark
//!   checkpoint;
//! - [`IsrSender`](crate::replication::isr::IsrSender): the queue of ISR changes for the
//!   controller and the task that sends it.
//!
//! Locking: each partition's log sits behind its own `parking_lot::Mutex`, held only for the
//! synchronous append or read (a write to the page cache or a positional read), never across an
//! `.await`. Long-polling fetches wait on a `watch` channel per partition that carries the high
//! watermark, so appends wake them without any sleep loop.
//!
//! [`MetadataWriter`]: crate::metadata::MetadataWriter

mod admin;
pub(crate) mod image;
mod maintenance;
pub(crate) mod registry;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runnel_controller::command::{ElectionResult, ElectionType, PartitionRef};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::{MetadataImage, MetadataWriter, TopicInfo};
pub use crate::partition::{now_ms, Partition, ReplicaView};
use crate::replication::isr::IsrSender;
use crate::replication::IsrChange;
use admin::TopicAdmin;
pub(crate) use image::ImageApplier;
pub use image::{FollowAssignment, FollowAssignments};
use maintenance::LogMaintenance;
pub use registry::has_partition_logs;
use registry::PartitionRegistry;

pub type TopicPartition = (String, i32);

/// Which partition logs exist on this node, and the metadata image they follow.
pub struct ReplicaManager {
    node_id: i32,
    config: BrokerConfig,
    registry: Arc<PartitionRegistry>,
    images: Arc<ImageApplier>,
    admin: TopicAdmin,
    maintenance: Arc<LogMaintenance>,
    isr: Arc<IsrSender>,
    /// The active controller's id, -1 when unknown; the node keeps it current from Raft.
    active_controller: AtomicI32,
}

impl ReplicaManager {
    /// Opens the data dir (the node holds its lock) and recovers the log of every partition of `image`
    /// with a replica on `node_id` (roles follow once an image knows `incarnation`). Directories of other partitions are left alone: `image`
    /// may be behind the log (see [`ReplicaManager::remove_stray_dirs`]).
    pub fn open(
        data_dir: &Path,
        node_id: i32,
        config: BrokerConfig,
        writer: Arc<dyn MetadataWriter>,
        offset: u64,
        image: Arc<MetadataImage>,
        incarnation: Option<Uuid>,
    ) -> Result<Self, BrokerError> {
        let registry = Arc::new(PartitionRegistry::open(data_dir, config.clone())?);
        let images = Arc::new(ImageApplier::open(
            node_id,
            config.clone(),
            registry.clone(),
            offset,
            image,
            incarnation,
        )?);
        Ok(Self {
            node_id,
            admin: TopicAdmin::new(config.clone(), writer.clone(), images.clone()),
            maintenance: Arc::new(LogMaintenance::new(config.clone(), registry.clone())),
            isr: Arc::new(IsrSender::new(
                node_id,
                config.replica_lag_time_max_ms(),
                writer,
                registry.clone(),
            )),
            config,
            registry,
            images,
            active_controller: AtomicI32::new(-1),
        })
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.images.image()
    }

    /// The published images, for tasks that read the newest one as they go.
    pub(crate) fn images(&self) -> Arc<ImageApplier> {
        self.images.clone()
    }

    /// Metadata-log offset of the image this node serves.
    pub fn applied_offset(&self) -> u64 {
        self.images.applied_offset()
    }

    pub fn set_active_controller(&self, id: Option<i32>) {
        self.active_controller
            .store(id.unwrap_or(-1), Ordering::Relaxed);
    }

    pub fn active_controller(&self) -> Option<i32> {
        Some(self.active_controller.load(Ordering::Relaxed)).filter(|id| *id >= 0)
    }

    /// Follows the metadata log: see [`ImageApplier::apply`]. Blocking file I/O: call from a
    /// blocking thread, in log order.
    pub fn apply_image(&self, offset: u64, image: Arc<MetadataImage>) -> Result<(), BrokerError> {
        self.images.apply(offset, image)
    }

    /// The partitions this node follows, changing with every metadata image.
    pub fn watch_followed(&self) -> watch::Receiver<Arc<FollowAssignments>> {
        self.images.watch_followed()
    }

    /// Waits until this node has applied the metadata log up to `offset`.
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> Result<(), BrokerError> {
        self.images.wait_applied(offset, timeout).await
    }

    /// Removes partition directories (and topic-id files) that no replica of the current image
    /// needs: left over from deletes or reassignments applied while this node was down, or
    /// from a crash between the metadata change and the removal. Call once this node has
    /// caught up with the metadata log, never before (an old image would delete live logs).
    pub fn remove_stray_dirs(&self) {
        self.images.remove_stray_dirs();
    }

    /// The local replica of partition `index` of the topic with id `topic_id`.
    pub fn partition_by_id(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.registry.by_id(topic_id, index)
    }

    /// This node's log of a partition, whatever its role (leader or follower).
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        self.registry.get(topic, index).ok_or_else(|| {
            if self.image().topic(topic).is_some() {
                BrokerError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: index,
                }
            } else {
                BrokerError::UnknownTopic(topic.to_string())
            }
        })
    }

    /// The leader epoch of a partition when this node leads it in the current image.
    /// Errors: unknown topic or partition, LogDirOffline (this node's replica is in an
    /// offline data dir), or NotLeader (another broker leads it, or none).
    pub fn leader_epoch(&self, topic: &str, index: i32) -> Result<i32, BrokerError> {
        let image = self.image();
        let info = image
            .topic(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
        let p = info
            .partition(index)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition: index,
            })?;
        // A replica in an offline data dir answers KAFKA_STORAGE_ERROR, as Kafka's do,
        // whoever leads it now.
        if p.replicas.contains(&self.node_id) {
            self.registry.log_dir().check()?;
        }
        if p.leader != self.node_id {
            return Err(BrokerError::NotLeader {
                topic: topic.to_string(),
                partition: index,
            });
        }
        Ok(p.leader_epoch)
    }

    /// The log of a partition this node leads, with the leader epoch appends carry.
    pub fn leader_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<(Arc<Partition>, i32), BrokerError> {
        let epoch = self.leader_epoch(topic, index)?;
        // The image is published after its logs are opened, so a miss is a race with a change.
        let partition = self
            .partition(topic, index)
            .map_err(|_| BrokerError::NotLeader {
                topic: topic.to_string(),
                partition: index,
            })?;
        Ok((partition, epoch))
    }

    /// The data dir's health; the node reports it offline to the controller.
    pub fn log_dir(&self) -> Arc<crate::log_dir::LogDir> {
        self.registry.log_dir().clone()
    }

    /// The data dir went offline: stop leading and following every replica in it (the
    /// controller moves the leaderships once the node's heartbeat reports the dir offline).
    pub fn stop_serving_offline_dir(&self) {
        self.images.stop_serving();
    }

    /// Retries failed role transitions with backoff until `shutdown` fires (see
    /// [`ImageApplier::run_role_retries`]).
    pub async fn run_role_retries(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        self.images.clone().run_role_retries(shutdown).await;
    }

    /// Queues an ISR change for the controller (replacing an older one of the partition).
    pub(crate) fn submit_isr_change(&self, partition: &Partition, change: IsrChange) {
        self.isr.submit(partition, change);
    }

    /// Sends queued ISR changes to the controller and expires lagging followers until
    /// `shutdown` fires (see [`IsrSender::run`]).
    pub async fn run_isr_updates(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        self.isr.clone().run(shutdown).await;
    }

    /// Creates a topic; `partitions`/`replication_factor` of -1 take the broker defaults.
    /// With `validate_only`, checks what this node can check and creates nothing (the
    /// returned topic then has a nil id and no partitions).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, BrokerError> {
        self.admin
            .create_topic(name, partitions, replication_factor, configs, validate_only)
            .await
    }

    /// [`ReplicaManager::create_topic`] with an explicit replica assignment (one broker list
    /// per partition; the counts must then be -1).
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, BrokerError> {
        self.admin
            .create_topic_assigned(
                name,
                partitions,
                replication_factor,
                assignment,
                configs,
                validate_only,
            )
            .await
    }

    /// Creates a topic with broker defaults if auto-creation is on; `Ok(None)` if it is off.
    pub async fn auto_create_topic(&self, name: &str) -> Result<Option<TopicInfo>, BrokerError> {
        self.admin.auto_create_topic(name).await
    }

    /// Deletes a topic; returns its id. Every replica's logs go when the deletion is applied.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        self.admin.delete_topic(name).await
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.admin
            .create_partitions(name, total, validate_only)
            .await
    }

    /// [`ReplicaManager::create_partitions`] with the replicas of the new partitions.
    pub async fn create_partitions_assigned(
        &self,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.admin
            .create_partitions_assigned(name, total, assignment, validate_only)
            .await
    }

    /// Elects leaders (Kafka's ElectLeaders): the preferred replica, or for a leaderless
    /// partition any live replica when `election` is unclean. `None` means every partition;
    /// then only partitions that needed an election are in the answer.
    pub async fn elect_leaders(
        &self,
        partitions: Option<Vec<PartitionRef>>,
        election: ElectionType,
    ) -> Result<Vec<ElectionResult>, BrokerError> {
        self.admin.elect_leaders(partitions, election).await
    }

    /// Replaces a topic's config overrides; every replica applies them to its open logs.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.admin
            .set_topic_configs(name, configs, validate_only)
            .await
    }

    /// Writes the high-watermark checkpoint when a high watermark moved since the last one.
    pub fn checkpoint_high_watermarks(&self) {
        self.maintenance.checkpoint_high_watermarks();
    }

    /// Deletes segments past retention; returns how many were deleted.
    pub fn enforce_retention(&self) -> usize {
        self.maintenance.enforce_retention()
    }

    /// fsyncs the logs whose `flush.ms` has passed.
    pub fn flush_due(&self) {
        self.maintenance.flush_due();
    }

    /// fsyncs every log and writes recovery points, for a clean shutdown.
    /// Returns whether every log was flushed (a clean shutdown needs that).
    pub fn flush_all(&self) -> bool {
        self.maintenance.flush_all()
    }

    /// One log-cleaner sweep (see [`LogMaintenance::run_compaction`]); returns how many
    /// partitions were cleaned.
    pub fn run_compaction(&self) -> usize {
        self.maintenance.run_compaction()
    }

    /// Runs retention, timed flushes, high-watermark checkpoints and the log cleaner until
    /// `shutdown` fires (see [`LogMaintenance::run`]).
    pub async fn run_maintenance(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        self.maintenance.clone().run(shutdown).await;
    }
}

#[cfg(test)]
mod tests;
