//! The replica manager: owns the partition logs this node hosts, follows the controller's
//! metadata image (opening and deleting logs as it changes), serves appends and reads to the
//! gateway and sends topic changes to the controller through a [`MetadataWriter`].
//!
//! Locking: each partition's log sits behind its own `std::sync::Mutex`, held only for the
//! synchronous append or read (a write to the page cache or a positional read), never across an
//! `.await`. Long-polling fetches wait on a `watch` channel per partition that carries the high
//! watermark, so appends wake them without any sleep loop.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use runnel_controller::command::{
    CommandResult, ControllerCommand, ElectionResult, ElectionType, PartitionRef,
};
use runnel_controller::error::ControllerError;
use runnel_storage::PartitionLog;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::config::{validate_topic_configs, BrokerConfig};
use crate::error::BrokerError;
use crate::metadata::{validate_topic_name, MetadataImage, MetadataWriter, TopicInfo, NO_LEADER};
use crate::partition::RoleChange;
pub use crate::partition::{now_ms, Partition, ReplicaView};
use crate::replication::{checkpoint, IsrChange};

pub type TopicPartition = (String, i32);

/// A partition this node follows: what its fetcher for `leader` needs.
#[derive(Clone)]
pub struct FollowAssignment {
    pub partition: Arc<Partition>,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// Every partition this node follows, by partition.
pub type FollowAssignments = BTreeMap<TopicPartition, FollowAssignment>;

/// How long an admin operation waits for its committed command to be applied on this node, so
/// the client's next request here sees the change.
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// Which partition logs exist on this node, and the metadata image they follow.
pub struct ReplicaManager {
    data_dir: PathBuf,
    pub(crate) config: BrokerConfig,
    pub(crate) node_id: i32,
    /// Sends admin commands to the active controller.
    pub(crate) writer: Arc<dyn MetadataWriter>,
    /// Published image, swapped whole on every change so readers never wait on a writer.
    image: RwLock<Arc<MetadataImage>>,
    /// Metadata-log offset of the published image; admin operations wait on it.
    applied: watch::Sender<u64>,
    /// Serializes [`ReplicaManager::apply_image`], so logs open and close in log order.
    apply_lock: Mutex<()>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// The same replicas by topic id, for replica fetches (which name topics by id).
    partitions_by_id: RwLock<HashMap<(Uuid, i32), Arc<Partition>>>,
    /// The active controller's id, -1 when unknown; the node keeps it current from Raft.
    active_controller: AtomicI32,
    /// High watermarks from the checkpoint at start, each used when its partition opens.
    checkpointed_hws: Mutex<checkpoint::Checkpoint>,
    /// The checkpoint last written, so an unchanged one is not rewritten.
    written_hws: Mutex<checkpoint::Checkpoint>,
    /// The partitions this node follows; the replica fetchers watch it.
    followed: watch::Sender<Arc<FollowAssignments>>,
    /// ISR changes for the controller, at most one per partition, and the wake-up of the
    /// task that sends them.
    pub(crate) isr_outbox: Mutex<HashMap<TopicPartition, IsrChange>>,
    pub(crate) isr_notify: Notify,
    /// The incarnation this process registers with. Replication roles are taken only from
    /// images that know it: an older image is the metadata log as it was before this
    /// restart, replayed from disk, whose leaderships may long have moved (Kafka's brokers
    /// likewise wait until their metadata has caught up). `None` (unit tests): any image.
    incarnation: Option<Uuid>,
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
        let io = |what: &str, e: std::io::Error| {
            BrokerError::DataDir(format!("{what} {}: {e}", data_dir.display()))
        };
        fs::create_dir_all(data_dir).map_err(|e| io("cannot create data dir", e))?;
        remove_deleted_dirs(data_dir);
        let (applied, _) = watch::channel(offset);
        let (followed, _) = watch::channel(Arc::new(FollowAssignments::new()));
        let manager = Self {
            data_dir: data_dir.to_path_buf(),
            config,
            node_id,
            writer,
            image: RwLock::new(image.clone()),
            applied,
            apply_lock: Mutex::new(()),
            partitions: RwLock::new(HashMap::new()),
            partitions_by_id: RwLock::new(HashMap::new()),
            active_controller: AtomicI32::new(-1),
            checkpointed_hws: Mutex::new(checkpoint::read(data_dir)),
            written_hws: Mutex::new(checkpoint::Checkpoint::new()),
            followed,
            isr_outbox: Mutex::new(HashMap::new()),
            isr_notify: Notify::new(),
            incarnation,
        };
        let mut opened = 0;
        for (topic, p) in image.partitions_replicated_on(node_id) {
            manager.open_partition(topic, p.index)?;
            opened += 1;
        }
        manager.sync_roles(&image);
        tracing::info!(
            topics = image.topics.len(),
            partitions = opened,
            offset,
            "recovered partition logs"
        );
        Ok(manager)
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Metadata-log offset of the image this node serves.
    pub fn applied_offset(&self) -> u64 {
        *self.applied.borrow()
    }

    pub fn set_active_controller(&self, id: Option<i32>) {
        self.active_controller
            .store(id.unwrap_or(-1), Ordering::Relaxed);
    }

    pub fn active_controller(&self) -> Option<i32> {
        Some(self.active_controller.load(Ordering::Relaxed)).filter(|id| *id >= 0)
    }

    /// Follows the metadata log: opens logs of new local replicas, closes and deletes those of
    /// topics that disappeared (or were re-created with a new id), applies changed topic
    /// configs, then publishes `image` and `offset`. Offsets at or below the applied one are
    /// ignored. Blocking file I/O: call from a blocking thread, in log order.
    pub fn apply_image(&self, offset: u64, image: Arc<MetadataImage>) -> Result<(), BrokerError> {
        let _order = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        if offset <= self.applied_offset() {
            return Ok(());
        }
        let old = self.image();
        let wanted: HashMap<TopicPartition, &TopicInfo> = image
            .partitions_replicated_on(self.node_id)
            .map(|(t, p)| ((t.name.clone(), p.index), t))
            .collect();
        let doomed: Vec<TopicPartition> = self
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(key, p)| wanted.get(*key).is_none_or(|t| t.id != p.topic_id()))
            .map(|(key, _)| key.clone())
            .collect();
        for (topic, index) in &doomed {
            self.drop_partition(topic, *index);
            tracing::info!(
                topic,
                partition = index,
                "closed and deleted a partition log"
            );
        }
        let missing: Vec<(&TopicInfo, i32)> = {
            let open = self.partitions.read().unwrap_or_else(|p| p.into_inner());
            wanted
                .iter()
                .filter(|(key, _)| !open.contains_key(*key))
                .map(|((_, index), t)| (*t, *index))
                .collect()
        };
        for (topic, index) in missing {
            self.open_partition(topic, index)?;
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
                for p in self.topic_partitions(&topic.name) {
                    let _ = p.with_log(|log| {
                        log.set_config(log_config.clone());
                        Ok(())
                    });
                }
                tracing::info!(topic = topic.name, "applied changed topic configs");
            }
        }
        self.sync_roles(&image);
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
        self.applied.send_replace(offset);
        Ok(())
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
        let now = now_ms();
        let mut followed = FollowAssignments::new();
        for partition in self.all_partitions() {
            let Some(info) = image
                .topic(partition.topic())
                .filter(|t| t.id == partition.topic_id())
                .and_then(|t| t.partition(partition.index()))
            else {
                continue;
            };
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
                Err(e) => tracing::error!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    error = %e,
                    "cannot take the role the metadata gives this replica"
                ),
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
    }

    /// The partitions this node follows, changing with every metadata image.
    pub fn watch_followed(&self) -> watch::Receiver<Arc<FollowAssignments>> {
        self.followed.subscribe()
    }

    /// The local replica of partition `index` of the topic with id `topic_id`.
    pub fn partition_by_id(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.partitions_by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic_id, index))
            .cloned()
    }

    /// Queues an ISR change for the controller (replacing an older one of the partition).
    pub(crate) fn submit_isr_change(&self, partition: &Partition, change: IsrChange) {
        self.isr_outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((partition.topic().to_string(), partition.index()), change);
        self.isr_notify.notify_one();
    }

    /// Writes the high-watermark checkpoint when a high watermark moved since the last one.
    pub fn checkpoint_high_watermarks(&self) {
        // Entries of partitions not opened yet (a stale image at start) are kept.
        let mut current = self
            .checkpointed_hws
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        current.extend(
            self.all_partitions()
                .iter()
                .map(|p| ((p.topic().to_string(), p.index()), p.high_watermark())),
        );
        let mut written = self.written_hws.lock().unwrap_or_else(|p| p.into_inner());
        if *written == current {
            return;
        }
        match checkpoint::write(&self.data_dir, &current) {
            Ok(()) => *written = current,
            Err(e) => {
                tracing::warn!(dir = %self.data_dir.display(), error = %e, "cannot write the high-watermark checkpoint")
            }
        }
    }

    /// Waits until this node has applied the metadata log up to `offset`.
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> Result<(), BrokerError> {
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

    /// This node's log of a partition, whatever its role (leader or follower).
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        partitions
            .get(&(topic.to_string(), index))
            .cloned()
            .ok_or_else(|| {
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
    /// Errors: unknown topic or partition, or NotLeader (another broker leads it, or none).
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

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    /// Beside each partition directory: the id of the topic its log belongs to, so a topic
    /// deleted and re-created while this node was down does not inherit the old records.
    fn topic_id_file(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir
            .join(format!("{topic}-{index}.{TOPIC_ID_SUFFIX}"))
    }

    /// Opens (creating or recovering) one partition log of `topic`.
    fn open_partition(&self, topic: &TopicInfo, index: i32) -> Result<(), BrokerError> {
        let dir = self.partition_dir(&topic.name, index);
        let id_file = self.topic_id_file(&topic.name, index);
        let id = topic.id.to_string();
        if let Ok(stored) = fs::read_to_string(&id_file) {
            if stored.trim() != id && dir.exists() {
                tracing::warn!(
                    dir = %dir.display(),
                    old_id = stored.trim(),
                    new_id = id,
                    "removing the log of an older topic of the same name"
                );
                remove_partition_dir(&dir);
            }
        }
        let log = PartitionLog::open(&dir, self.config.log_config(&topic.configs), now_ms())?;
        if let Err(e) = fs::write(&id_file, &id) {
            tracing::warn!(file = %id_file.display(), error = %e, "cannot record the topic id of a partition log");
        }
        let checkpointed = self
            .checkpointed_hws
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.name.clone(), index));
        let partition = Arc::new(Partition::new(
            topic.name.clone(),
            topic.id,
            index,
            log,
            self.config.producer_id_expiration_ms(),
            checkpointed,
        ));
        self.partitions_by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.id, index), partition.clone());
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.name.clone(), index), partition);
        Ok(())
    }

    fn topic_partitions(&self, name: &str) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((t, _), _)| t == name)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Closes and deletes one partition log. Requests still holding its `Arc` get
    /// UNKNOWN_TOPIC_OR_PARTITION from then on.
    fn drop_partition(&self, topic: &str, index: i32) {
        let removed = self
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), index));
        let Some(partition) = removed else {
            return;
        };
        self.partitions_by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(partition.topic_id(), index));
        if let Some(log) = partition.take_log() {
            let dir = log.dir().to_path_buf();
            drop(log);
            remove_partition_dir(&dir);
        }
        let _ = fs::remove_file(self.topic_id_file(topic, index));
    }

    /// Sends `cmd` to the controller and waits until this node has applied it.
    async fn submit(&self, cmd: ControllerCommand) -> Result<CommandResult, BrokerError> {
        let written = self.writer.write(cmd).await?;
        let result = written.result.map_err(BrokerError::Controller)?;
        self.wait_applied(written.offset, APPLY_WAIT).await?;
        Ok(result)
    }

    fn live_brokers(&self) -> usize {
        self.image().live_brokers().count()
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
        self.create_topic_assigned(
            name,
            partitions,
            replication_factor,
            None,
            configs,
            validate_only,
        )
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
        validate_topic_name(name).map_err(BrokerError::Controller)?;
        validate_topic_configs(&configs)?;
        let (partitions, replication_factor) = match &assignment {
            Some(a) => {
                self.check_assignment(a)?;
                let rf = a.first().map_or(0, Vec::len);
                (a.len() as i32, i16::try_from(rf).unwrap_or(i16::MAX))
            }
            None => (
                if partitions == -1 {
                    self.config.num_partitions()
                } else {
                    partitions
                },
                if replication_factor == -1 {
                    self.config.default_replication_factor()
                } else {
                    replication_factor
                },
            ),
        };
        if partitions < 1 {
            return Err(BrokerError::InvalidPartitions(format!(
                "a topic needs at least 1 partition, got {partitions}"
            )));
        }
        if replication_factor < 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "the replication factor must be at least 1, got {replication_factor}"
            )));
        }
        if validate_only {
            if self.image().topic(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_string()));
            }
            let live = self.live_brokers();
            if replication_factor as usize > live {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {replication_factor} is larger than the {live} available brokers"
                )));
            }
            return Ok(TopicInfo {
                name: name.to_string(),
                id: Uuid::nil(),
                configs,
                partitions: Vec::new(),
            });
        }
        let cmd = ControllerCommand::CreateTopic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            assignment,
            configs,
        };
        match self.submit(cmd).await? {
            CommandResult::TopicCreated(topic) => {
                tracing::info!(
                    topic = name,
                    partitions,
                    replication_factor,
                    "created topic"
                );
                Ok(topic)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Every broker an assignment names must be registered (the controller checks the rest).
    fn check_assignment(&self, assignment: &[Vec<i32>]) -> Result<(), BrokerError> {
        let image = self.image();
        match assignment
            .iter()
            .flatten()
            .find(|b| image.broker(**b).is_none())
        {
            Some(b) => Err(BrokerError::Controller(
                ControllerError::InvalidReplicaAssignment(format!(
                    "the assignment names broker {b}, which is not registered"
                )),
            )),
            None => Ok(()),
        }
    }

    /// Creates a topic with broker defaults if auto-creation is on; `Ok(None)` if it is off.
    pub async fn auto_create_topic(&self, name: &str) -> Result<Option<TopicInfo>, BrokerError> {
        if !self.config.auto_create_topics() {
            return Ok(None);
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(t) => Ok(Some(t)),
            // Lost a race with another creator: the topic exists, which is what was wanted.
            Err(e) if e.is_topic_exists() => Ok(self.image().topic(name).cloned()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic; returns its id. Every replica's logs go when the deletion is applied.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        let cmd = ControllerCommand::DeleteTopic {
            name: name.to_string(),
        };
        match self.submit(cmd).await? {
            CommandResult::TopicDeleted { id, .. } => {
                tracing::info!(topic = name, "deleted topic");
                Ok(id)
            }
            other => Err(unexpected(&other)),
        }
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.create_partitions_assigned(name, total, None, validate_only)
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
        let current = self
            .image()
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?
            .partitions
            .len();
        if let Some(a) = &assignment {
            self.check_assignment(a)?;
        }
        if validate_only {
            if total as i64 <= current as i64 {
                return Err(BrokerError::InvalidPartitions(format!(
                    "topic '{name}' has {current} partitions; the new count must be larger, got {total}"
                )));
            }
            return Ok(());
        }
        let cmd = ControllerCommand::CreatePartitions {
            name: name.to_string(),
            total,
            assignment,
        };
        self.submit(cmd).await?;
        tracing::info!(topic = name, total, "added partitions");
        Ok(())
    }

    /// Elects leaders (Kafka's ElectLeaders): the preferred replica, or for a leaderless
    /// partition any live replica when `election` is unclean. `None` means every partition;
    /// then only partitions that needed an election are in the answer.
    pub async fn elect_leaders(
        &self,
        partitions: Option<Vec<PartitionRef>>,
        election: ElectionType,
    ) -> Result<Vec<ElectionResult>, BrokerError> {
        let cmd = ControllerCommand::ElectLeaders {
            topic_partitions: partitions,
            election,
        };
        match self.submit(cmd).await? {
            CommandResult::LeadersElected(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// Replaces a topic's config overrides; every replica applies them to its open logs.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        validate_topic_configs(&configs)?;
        if self.image().topic(name).is_none() {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        if validate_only {
            return Ok(());
        }
        let cmd = ControllerCommand::AlterConfigs {
            topic: name.to_string(),
            configs,
        };
        self.submit(cmd).await?;
        tracing::info!(topic = name, "altered topic configs");
        Ok(())
    }
    pub(crate) fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Deletes segments past retention; returns how many were deleted.
    pub fn enforce_retention(&self) -> usize {
        let now = now_ms();
        let mut deleted = 0;
        for partition in self.all_partitions() {
            match partition.with_log(|log| Ok(log.enforce_retention(now)?)) {
                Ok(n) => deleted += n,
                Err(e) => tracing::warn!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    error = %e,
                    "retention failed"
                ),
            }
        }
        deleted
    }

    /// fsyncs the logs whose `flush.ms` has passed.
    pub fn flush_due(&self) {
        let now = now_ms();
        for partition in self.all_partitions() {
            if let Err(e) = partition.with_log(|log| Ok(log.flush_if_due(now)?)) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "flush failed");
            }
        }
    }

    /// fsyncs every log and writes recovery points, for a clean shutdown.
    pub fn flush_all(&self) {
        for partition in self.all_partitions() {
            if let Err(e) = partition.with_log(|log| Ok(log.flush()?)) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "flush failed");
            }
            // So the next start does not rescan the log for producer state.
            if let Err(e) = partition.snapshot_producer_state(true) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "producer-state snapshot failed");
            }
        }
        self.checkpoint_high_watermarks();
    }

    /// One log-cleaner sweep: compacts, one partition at a time, every partition whose topic's
    /// cleanup.policy has `compact` and whose dirty ratio (or a tombstone's
    /// delete.retention.ms) says it is due. Returns how many partitions were cleaned.
    pub fn run_compaction(&self) -> usize {
        self.compact_partitions(&|| false)
    }

    /// [`Self::run_compaction`], stopping between partitions once `stop` says so.
    fn compact_partitions(&self, stop: &dyn Fn() -> bool) -> usize {
        let mut cleaned = 0;
        for partition in self.all_partitions() {
            if stop() {
                break;
            }
            let started = std::time::Instant::now();
            match partition.compact() {
                Ok(s) if s.discarded => tracing::info!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    "log cleaner pass discarded: the log changed meanwhile; retrying next time"
                ),
                Ok(s) if s.cleaned => {
                    cleaned += 1;
                    tracing::info!(
                        topic = partition.topic(),
                        partition = partition.index(),
                        bytes_before = s.bytes_before,
                        bytes_after = s.bytes_after,
                        records_removed = s.records_removed,
                        tombstones_removed = s.tombstones_removed,
                        batches_rewritten = s.batches_rewritten,
                        batches_removed = s.batches_removed,
                        batches_emptied = s.batches_emptied,
                        segments_rewritten = s.segments_rewritten,
                        segments_deleted = s.segments_deleted,
                        keys = s.keys,
                        cleaned_to = s.cleaned_to,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "log cleaner compacted partition"
                    );
                }
                Ok(_) => {}
                // Deleted while the pass ran.
                Err(BrokerError::UnknownPartition { .. }) => {}
                Err(e) => tracing::warn!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    error = %e,
                    "log cleaner failed"
                ),
            }
        }
        cleaned
    }

    /// Runs retention and timed flushes until `shutdown` fires. The sweeps do blocking file
    /// work, so they run on the blocking pool. The log cleaner is a task of its own (one
    /// partition at a time, on the blocking pool) so a long pass never delays retention or
    /// flush.ms; it stops at the same signal, after the partition it is cleaning.
    pub async fn run_maintenance(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let cleaner = self.config.log_cleaner_enable().then(|| {
            let every = Duration::from_millis(self.config.log_cleaner_backoff_ms().max(100));
            tokio::spawn(self.clone().run_cleaner(every, shutdown.clone()))
        });
        let retention_every =
            Duration::from_millis(self.config.retention_check_interval_ms().max(100));
        let mut flush_tick = tokio::time::interval(Duration::from_secs(1));
        let mut retention_tick = tokio::time::interval(retention_every);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = flush_tick.tick() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        me.flush_due();
                        me.checkpoint_high_watermarks();
                    })
                    .await;
                }
                _ = retention_tick.tick() => {
                    let me = self.clone();
                    if let Ok(n) = tokio::task::spawn_blocking(move || me.enforce_retention()).await {
                        if n > 0 {
                            tracing::info!(segments = n, "retention deleted old segments");
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Some(cleaner) = cleaner {
            let _ = cleaner.await;
        }
    }

    /// The log cleaner's loop: a sweep every `every` until `shutdown` fires.
    async fn run_cleaner(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let me = self.clone();
                    let stop = shutdown.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        me.compact_partitions(&|| *stop.borrow())
                    })
                    .await;
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Removes directories left by deletes that a crash interrupted.
fn remove_deleted_dirs(data_dir: &Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.to_string_lossy().ends_with("-delete") {
            tracing::info!(dir = %path.display(), "finishing an interrupted topic delete");
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Parses `<topic>-<partition>` directory names.
fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    let index: i32 = index.parse().ok()?;
    (!topic.is_empty() && index >= 0).then_some((topic, index))
}

/// Whether `data_dir` holds partition logs. The node refuses to start on such a dir without
/// controller state: the logs would be deleted as strays once the new cluster's image is
/// applied.
pub fn has_partition_logs(data_dir: &Path) -> bool {
    fs::read_dir(data_dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                e.path().is_dir() && parse_partition_dir(&e.file_name().to_string_lossy()).is_some()
            })
        })
        .unwrap_or(false)
}

impl ReplicaManager {
    /// Removes partition directories (and topic-id files) that no replica of the current image
    /// needs: left over from deletes or reassignments applied while this node was down, or
    /// from a crash between the metadata change and the removal. Call once this node has
    /// caught up with the metadata log, never before (an old image would delete live logs).
    pub fn remove_stray_dirs(&self) {
        let _order = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let image = self.image();
        let Ok(entries) = fs::read_dir(&self.data_dir) else {
            return;
        };
        let local = |topic: &str, index: i32| {
            image
                .partition(topic, index)
                .is_some_and(|p| p.replicas.contains(&self.node_id))
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if path.is_dir() {
                if let Some((topic, index)) = parse_partition_dir(&name) {
                    if !local(topic, index) {
                        tracing::warn!(
                            dir = name,
                            "removing the log of a partition this node no longer hosts"
                        );
                        remove_partition_dir(&path);
                    }
                }
            } else if let Some(stem) = name.strip_suffix(&format!(".{TOPIC_ID_SUFFIX}")) {
                if parse_partition_dir(stem).is_none_or(|(t, i)| !local(t, i)) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

/// Extension of the topic-id file beside each partition directory.
const TOPIC_ID_SUFFIX: &str = "topic-id";

/// A command result of another kind than the command asked for: a controller bug.
fn unexpected(result: &CommandResult) -> BrokerError {
    BrokerError::Controller(ControllerError::UnknownServerError(format!(
        "the controller answered with an unexpected result: {result:?}"
    )))
}
fn remove_partition_dir(dir: &Path) {
    let doomed = dir.with_file_name(format!(
        "{}.{}-delete",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let target = match fs::rename(dir, &doomed) {
        Ok(()) => doomed,
        Err(_) => dir.to_path_buf(),
    };
    if let Err(e) = fs::remove_dir_all(&target) {
        tracing::warn!(dir = %target.display(), error = %e, "cannot remove a deleted partition's directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::LocalController;
    use futures::executor::block_on;
    use kafka_protocol::ResponseError;
    use runnel_storage::batch::testing::build_batch;

    fn manager(dir: &Path) -> Arc<ReplicaManager> {
        LocalController::start(dir, 1, BrokerConfig::default()).1
    }

    /// Drops `rm` and opens the data dir again on the same (in-memory) controller.
    fn reopen(rm: Arc<ReplicaManager>, controller: &Arc<LocalController>) -> Arc<ReplicaManager> {
        let dir = rm.data_dir.clone();
        drop(rm);
        controller.start_broker(&dir, 1, BrokerConfig::default())
    }

    fn create(rm: &ReplicaManager, name: &str, partitions: i32) -> TopicInfo {
        block_on(rm.create_topic(name, partitions, -1, BTreeMap::new(), false)).unwrap()
    }

    #[test]
    fn roles_wait_for_an_image_that_knows_this_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
        create(&rm, "t", 1);
        let offset = rm.applied_offset();
        drop(rm);
        // A restart: the replayed image still has the previous incarnation of broker 1.
        let incarnation = Uuid::new_v4();
        let rm = ReplicaManager::open(
            dir.path(),
            1,
            BrokerConfig::default(),
            controller.clone(),
            offset,
            Arc::new(controller.image()),
            Some(incarnation),
        )
        .unwrap();
        let (p, epoch) = rm.leader_partition("t", 0).unwrap();
        assert!(
            p.append(&mut build_batch(1, 10), epoch).is_err(),
            "no role from an old image"
        );
        controller
            .apply(ControllerCommand::RegisterBroker {
                id: 1,
                incarnation,
                host: "localhost".into(),
                port: 9092,
                listeners: Vec::new(),
                rpc_address: "localhost:9093".into(),
                rack: None,
            })
            .unwrap();
        controller
            .apply(ControllerCommand::UnfenceBroker { id: 1 })
            .unwrap();
        rm.apply_image(offset + 2, Arc::new(controller.image()))
            .unwrap();
        let (p, epoch) = rm.leader_partition("t", 0).unwrap();
        p.append(&mut build_batch(1, 10), epoch).unwrap();
    }

    #[test]
    fn append_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
        create(&rm, "t", 2);
        let p = rm.partition("t", 1).unwrap();
        let mut batch = build_batch(3, 10);
        let info = p.append(&mut batch, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 2));
        assert_eq!(p.high_watermark(), 3);
        assert!(!p.read(0, 1 << 20, true).unwrap().records.is_empty());
        drop(p);
        let rm = reopen(rm, &controller);
        assert_eq!(rm.partition("t", 1).unwrap().log_end_offset().unwrap(), 3);
        assert!(matches!(
            rm.partition("t", 2),
            Err(BrokerError::UnknownPartition { .. })
        ));
        assert!(matches!(
            rm.partition("u", 0),
            Err(BrokerError::UnknownTopic(_))
        ));
    }

    #[test]
    fn delete_removes_logs_and_recreate_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let rm = manager(dir.path());
        let old = create(&rm, "t", 1);
        let p = rm.partition("t", 0).unwrap();
        p.append(&mut build_batch(2, 10), 0).unwrap();
        assert_eq!(block_on(rm.delete_topic("t")).unwrap(), old.id);
        assert!(!dir.path().join("t-0").exists());
        assert!(p.append(&mut build_batch(1, 10), 0).is_err());
        create(&rm, "t", 1);
        assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 0);
        assert!(block_on(rm.delete_topic("missing")).is_err());
    }

    #[test]
    fn admin_errors_come_from_local_checks_or_the_controller() {
        let dir = tempfile::tempdir().unwrap();
        let rm = manager(dir.path());
        create(&rm, "a.b", 1);
        let code = |r: Result<TopicInfo, BrokerError>| r.unwrap_err().code();
        let topic = |name: &str, p: i32, rf: i16, validate: bool| {
            block_on(rm.create_topic(name, p, rf, BTreeMap::new(), validate))
        };
        assert_eq!(
            code(topic("a b", 1, 1, false)),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            code(topic("a_b", 1, 1, false)),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            code(topic("a.b", 1, 1, false)),
            ResponseError::TopicAlreadyExists
        );
        assert_eq!(
            code(topic("a.b", 1, 1, true)),
            ResponseError::TopicAlreadyExists
        );
        assert_eq!(
            code(topic("z", 0, 1, false)),
            ResponseError::InvalidPartitions
        );
        // One broker: RF 2 is refused by validate_only here and by the controller otherwise.
        assert_eq!(
            code(topic("z", 1, 2, true)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            code(topic("z", 1, 2, false)),
            ResponseError::InvalidReplicationFactor
        );
        assert!(topic("z", 1, 1, true).is_ok());
        assert!(rm.image().topic("z").is_none());
        assert!(block_on(rm.create_partitions("a.b", 1, false)).is_err());
        assert!(block_on(rm.create_partitions("a.b", 3, true)).is_ok());
        assert_eq!(rm.image().topic("a.b").unwrap().partitions.len(), 1);
        // A lost auto-create race is success.
        assert!(block_on(rm.auto_create_topic("a.b")).unwrap().is_some());
    }

    #[test]
    fn apply_image_follows_creates_deletes_and_configs() {
        let dir = tempfile::tempdir().unwrap();
        let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
        create(&rm, "t", 1);
        block_on(rm.create_partitions("t", 3, false)).unwrap();
        for i in 0..3 {
            assert!(rm.partition("t", i).is_ok());
            assert!(dir.path().join(format!("t-{i}")).is_dir());
        }
        let configs = BTreeMap::from([("retention.ms".to_string(), "1234".to_string())]);
        block_on(rm.set_topic_configs("t", configs, false)).unwrap();
        let p = rm.partition("t", 2).unwrap();
        assert_eq!(p.with_log(|l| Ok(l.config().retention_ms)).unwrap(), 1234);
        // Deleted and re-created in one step, as a broker that missed the log between sees it.
        let offset = rm.applied_offset();
        let mut image = controller.image();
        let mut topic = image.topics["t"].clone();
        topic.id = Uuid::new_v4();
        topic.partitions.truncate(1);
        image.topics.insert("t".into(), topic);
        p.append(&mut build_batch(2, 10), 0).unwrap();
        rm.partition("t", 0)
            .unwrap()
            .append(&mut build_batch(2, 10), 0)
            .unwrap();
        rm.apply_image(offset + 1, Arc::new(image.clone())).unwrap();
        assert!(!dir.path().join("t-1").exists() && !dir.path().join("t-2").exists());
        assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 0);
        assert!(p.append(&mut build_batch(1, 10), 0).is_err());
        // An offset already applied changes nothing.
        image.topics.clear();
        rm.apply_image(offset + 1, Arc::new(image)).unwrap();
        assert!(rm.partition("t", 0).is_ok());
        assert_eq!(rm.applied_offset(), offset + 1);
    }

    #[test]
    fn recreated_while_down_starts_empty_and_strays_wait_for_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
        create(&rm, "t", 1);
        create(&rm, "gone", 1);
        rm.partition("t", 0)
            .unwrap()
            .append(&mut build_batch(2, 10), 0)
            .unwrap();
        let stale = Arc::new(controller.image());
        drop(rm);
        // While the node is down: "t" is deleted and re-created, "gone" is deleted.
        let up = |c: ControllerCommand| controller.apply(c).unwrap();
        up(ControllerCommand::DeleteTopic { name: "t".into() });
        up(ControllerCommand::DeleteTopic {
            name: "gone".into(),
        });
        up(ControllerCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 1,
            replication_factor: 1,
            assignment: None,
            configs: BTreeMap::new(),
        });
        // Opening at an old image keeps every directory.
        let rm = ReplicaManager::open(
            dir.path(),
            1,
            BrokerConfig::default(),
            controller.clone(),
            1,
            stale,
            None,
        )
        .unwrap();
        assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 2);
        rm.remove_stray_dirs();
        assert!(dir.path().join("gone-0").exists());
        // Caught up: the new "t" starts empty and the strays go.
        rm.apply_image(99, Arc::new(controller.image())).unwrap();
        assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 0);
        assert!(!dir.path().join("gone-0").exists());
        std::fs::create_dir(dir.path().join("old-7")).unwrap();
        assert!(has_partition_logs(dir.path()));
        rm.remove_stray_dirs();
        assert!(!dir.path().join("old-7").exists());
        assert!(dir.path().join("t-0").exists());
        let empty = tempfile::tempdir().unwrap();
        assert!(!has_partition_logs(empty.path()));
    }

    #[test]
    fn leadership_follows_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let controller = LocalController::new(&[1, 2]);
        let rm = controller.start_broker(dir.path(), 1, BrokerConfig::default());
        controller
            .apply(ControllerCommand::CreateTopic {
                name: "t".into(),
                id: Uuid::new_v4(),
                partitions: -1,
                replication_factor: -1,
                assignment: Some(vec![vec![2, 1], vec![1, 2]]),
                configs: BTreeMap::new(),
            })
            .unwrap();
        // A follower keeps a (for now empty) log but serves nothing.
        assert!(rm.partition("t", 0).is_ok());
        assert!(matches!(
            rm.leader_partition("t", 0),
            Err(BrokerError::NotLeader { .. })
        ));
        assert_eq!(rm.leader_partition("t", 1).unwrap().1, 0);
        assert!(matches!(
            rm.leader_epoch("t", 5),
            Err(BrokerError::UnknownPartition { .. })
        ));
        assert!(matches!(
            rm.leader_epoch("x", 0),
            Err(BrokerError::UnknownTopic(_))
        ));
        controller
            .apply(ControllerCommand::FenceBroker { id: 2 })
            .unwrap();
        let (_, epoch) = rm.leader_partition("t", 0).unwrap();
        assert!(epoch > 0);
        assert_eq!(rm.active_controller(), None);
        rm.set_active_controller(Some(3));
        assert_eq!(rm.active_controller(), Some(3));
    }

    #[test]
    fn partition_dir_names_parse() {
        assert_eq!(parse_partition_dir("a-b-3"), Some(("a-b", 3)));
        assert_eq!(parse_partition_dir("meta"), None);
        assert_eq!(parse_partition_dir("-3"), None);
    }

    mod idempotence {
        use super::*;
        use crate::partition::producer_batches;
        use crate::producer_state::ProducerEntry;
        use kafka_protocol::ResponseError;
        use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};
        use runnel_storage::AppendInfo;

        fn idem(pid: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
            build_batch_with(&BatchSpec {
                base_timestamp: now_ms(),
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
                records: vec![
                    TestRecord {
                        value: Some(b"v".to_vec()),
                        ..TestRecord::default()
                    };
                    records
                ],
                ..BatchSpec::default()
            })
        }

        fn code(r: Result<AppendInfo, BrokerError>) -> ResponseError {
            r.expect_err("an error").code()
        }

        fn state(p: &Partition) -> HashMap<i64, ProducerEntry> {
            p.producers.lock().unwrap().producers().clone()
        }

        fn snapshots(dir: &Path) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".snapshot"))
                .collect();
            v.sort();
            v
        }

        #[test]
        fn duplicates_gaps_and_epochs() {
            let dir = tempfile::tempdir().unwrap();
            let rm = manager(dir.path());
            create(&rm, "t", 1);
            let p = rm.partition("t", 0).unwrap();
            p.append(&mut build_batch(2, 10), 0).unwrap(); // offsets 0-1, no producer
            let first = p.append(&mut idem(5, 0, 0, 3), 0).unwrap();
            assert_eq!((first.base_offset, first.last_offset), (2, 4));
            p.append(&mut idem(5, 0, 3, 2), 0).unwrap(); // 5-6
                                                         // The retry of the first batch: success, original offsets, nothing appended.
            let dup = p.append(&mut idem(5, 0, 0, 3), 0).unwrap();
            assert_eq!(
                (dup.base_offset, dup.last_offset, dup.record_count),
                (2, 4, 0)
            );
            assert_eq!(p.log_end_offset().unwrap(), 7);
            assert_eq!(p.high_watermark(), 7);
            // A gap, an old epoch, a new epoch not starting at 0.
            assert_eq!(
                code(p.append(&mut idem(5, 0, 9, 1), 0)),
                ResponseError::OutOfOrderSequenceNumber
            );
            p.append(&mut idem(5, 1, 0, 1), 0).unwrap(); // bump: 7
            assert_eq!(
                code(p.append(&mut idem(5, 0, 5, 1), 0)),
                ResponseError::InvalidProducerEpoch
            );
            assert_eq!(
                code(p.append(&mut idem(5, 2, 4, 1), 0)),
                ResponseError::OutOfOrderSequenceNumber
            );
            assert_eq!(p.log_end_offset().unwrap(), 8);
            // A corrupt retry is rejected as corrupt, not answered as a duplicate.
            let mut bad = idem(5, 1, 0, 1);
            let last = bad.len() - 1;
            bad[last] ^= 0xff;
            assert_eq!(code(p.append(&mut bad, 0)), ResponseError::CorruptMessage);
            // Non-idempotent batches leave no state.
            assert_eq!(state(&p).len(), 1);
        }

        #[test]
        fn several_batches_in_one_request() {
            let dir = tempfile::tempdir().unwrap();
            let rm = manager(dir.path());
            create(&rm, "t", 1);
            let p = rm.partition("t", 0).unwrap();
            let mut two = idem(1, 0, 0, 2);
            two.extend(idem(1, 0, 2, 3));
            let info = p.append(&mut two, 0).unwrap();
            assert_eq!((info.base_offset, info.last_offset), (0, 4));
            let e = &state(&p)[&1];
            assert_eq!(e.batches.len(), 2);
            assert_eq!(
                (e.batches[1].first_offset, e.batches[1].last_offset),
                (2, 4)
            );
            // A request with a gap between its batches appends nothing.
            let mut gap = idem(1, 0, 5, 1);
            gap.extend(idem(1, 0, 7, 1));
            assert!(p.append(&mut gap, 0).is_err());
            assert_eq!(p.log_end_offset().unwrap(), 5);
            // The retry of the whole first request is a duplicate.
            let mut again = idem(1, 0, 0, 2);
            again.extend(idem(1, 0, 2, 3));
            assert_eq!(p.append(&mut again, 0).unwrap().base_offset, 0);
            assert_eq!(p.log_end_offset().unwrap(), 5);
        }

        fn produce_some(p: &Partition, producers: i64, batches: i32) {
            for i in 0..batches {
                for pid in 0..producers {
                    p.append(&mut idem(pid, 0, i * 2, 2), 0).unwrap();
                }
                p.append(&mut build_batch(1, 10), 0).unwrap();
            }
        }

        #[test]
        fn rebuilt_from_the_log_after_a_crash() {
            let dir = tempfile::tempdir().unwrap();
            let live;
            let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
            create(&rm, "t", 1);
            {
                let p = rm.partition("t", 0).unwrap();
                produce_some(&p, 4, 8);
                live = state(&p);
            } // no flush_all: a crash, no snapshot
            assert!(snapshots(&dir.path().join("t-0")).is_empty());
            let rm = reopen(rm, &controller);
            let p = rm.partition("t", 0).unwrap();
            assert_eq!(state(&p), live);
            let end = p.log_end_offset().unwrap();
            let dup = p.append(&mut idem(3, 0, 14, 2), 0).unwrap();
            assert_eq!(dup.record_count, 0);
            assert_eq!(p.log_end_offset().unwrap(), end);
        }

        #[test]
        fn snapshot_at_shutdown_then_headers_after_it() {
            let dir = tempfile::tempdir().unwrap();
            let pdir = dir.path().join("t-0");
            let live;
            let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
            create(&rm, "t", 1);
            {
                let p = rm.partition("t", 0).unwrap();
                produce_some(&p, 3, 4);
                rm.flush_all();
                assert_eq!(snapshots(&pdir), vec![format!("{:020}.snapshot", 28)]);
                // More after the snapshot, then a crash.
                p.append(&mut idem(0, 0, 8, 1), 0).unwrap();
                p.append(&mut idem(9, 0, 0, 1), 0).unwrap();
                live = state(&p);
            }
            let rm = reopen(rm, &controller);
            let p = rm.partition("t", 0).unwrap();
            assert_eq!(state(&p), live);
            rm.flush_all();
            assert_eq!(snapshots(&pdir).len(), 2);
            rm.flush_all(); // nothing new: no third file
            drop(p);
            let dir_path = rm.data_dir.clone();
            drop(rm);
            // A torn newest snapshot and one past the log end are deleted; the older is used.
            let newest = pdir.join(format!("{:020}.snapshot", 30));
            let bytes = fs::read(&newest).unwrap();
            fs::write(&newest, &bytes[..bytes.len() - 3]).unwrap();
            fs::write(pdir.join(format!("{:020}.snapshot", 999)), &bytes).unwrap();
            let rm = controller.start_broker(&dir_path, 1, BrokerConfig::default());
            let p = rm.partition("t", 0).unwrap();
            assert_eq!(state(&p), live);
            assert_eq!(snapshots(&pdir), vec![format!("{:020}.snapshot", 28)]);
        }

        #[test]
        fn periodic_snapshot_after_enough_bytes() {
            let dir = tempfile::tempdir().unwrap();
            let rm = manager(dir.path());
            create(&rm, "t", 1);
            let p = rm.partition("t", 0).unwrap();
            p.append(&mut idem(1, 0, 0, 1), 0).unwrap();
            let chunk = 512 << 10;
            let mut n = 1;
            while snapshots(&dir.path().join("t-0")).is_empty() {
                assert!(n < 40, "no snapshot after {n} appends of {chunk} bytes");
                p.append(&mut build_batch(1, chunk), 0).unwrap();
                n += 1;
            }
            assert!(n as u64 * chunk as u64 >= crate::producer_state::SNAPSHOT_INTERVAL_BYTES);
            let snaps = snapshots(&dir.path().join("t-0"));
            assert_eq!(snaps, vec![format!("{n:020}.snapshot")]);
        }

        #[test]
        fn non_idempotent_batches_skip_the_state() {
            assert!(producer_batches(&build_batch(3, 10)).is_none());
            let mut two = build_batch(1, 10);
            two.extend(idem(4, 0, 0, 1));
            let got = producer_batches(&two).unwrap();
            assert_eq!(got.len(), 2);
            assert!(!got[0].is_idempotent() && got[1].is_idempotent());
            assert!(producer_batches(&two[..two.len() - 1]).is_none());
        }
    }
}
