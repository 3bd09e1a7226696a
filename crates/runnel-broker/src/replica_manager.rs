//! The replica manager: owns the partition logs this node hosts and the metadata that says
//! which exist, and serves appends, reads and topic changes to the gateway.
//!
//! Locking: each partition's log sits behind its own `std::sync::Mutex`, held only for the
//! synchronous append or read (a write to the page cache or a positional read), never across an
//! `.await`. Long-polling fetches wait on a `watch` channel per partition that carries the high
//! watermark, so appends wake them without any sleep loop.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runnel_storage::{AppendInfo, PartitionLog, ReadResult};
use tokio::sync::watch;

use crate::config::{validate_topic_configs, BrokerConfig};
use crate::error::BrokerError;
use crate::metadata::{BrokerInfo, MetadataImage, MetadataStore, TopicInfo};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One partition replica hosted on this node.
pub struct Partition {
    topic: String,
    index: i32,
    /// `None` once the topic is deleted: requests still holding this `Arc` get
    /// UNKNOWN_TOPIC_OR_PARTITION instead of writing into a removed directory.
    log: Mutex<Option<PartitionLog>>,
    /// The high watermark: the offset below which records are visible to consumers. With one
    /// replica it is the log end offset; replication will advance it by the ISR instead.
    high_watermark: watch::Sender<i64>,
}

impl Partition {
    fn with_log<T>(
        &self,
        f: impl FnOnce(&mut PartitionLog) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let mut guard = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(log) => f(log),
            None => Err(BrokerError::UnknownPartition {
                topic: self.topic.clone(),
                partition: self.index,
            }),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    /// Validates and appends one or more v2 record batches; offsets are assigned here.
    pub fn append(&self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo, BrokerError> {
        let info = self.with_log(|log| Ok(log.append(batches, leader_epoch, now_ms())?))?;
        self.high_watermark.send_replace(info.last_offset + 1);
        Ok(info)
    }

    /// Reads whole batches from `offset`, at most up to the high watermark.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, BrokerError> {
        let hw = self.high_watermark();
        self.with_log(|log| Ok(log.read(offset, max_bytes, hw, min_one)?))
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// A receiver that changes whenever the high watermark moves (new records are visible).
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn log_start_offset(&self) -> Result<i64, BrokerError> {
        self.with_log(|log| Ok(log.log_start_offset()))
    }

    pub fn log_end_offset(&self) -> Result<i64, BrokerError> {
        self.with_log(|log| Ok(log.log_end_offset()))
    }

    /// The first record with a timestamp at or after `ts`: (offset, timestamp). The log finds
    /// the batch; its records are decoded (decompressing if needed) to find the exact record,
    /// as Kafka does. Only ListOffsets pays this, never the produce/fetch path.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        let hw = self.high_watermark();
        self.with_log(|log| {
            let Some((base, max_ts)) = log.offset_for_timestamp(ts)? else {
                return Ok(None);
            };
            let batch = log.read(base, 1, hw, true)?.records;
            Ok(Some(
                first_record_at_or_after(batch, ts).unwrap_or((base, max_ts)),
            ))
        })
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        self.with_log(|log| Ok(log.max_timestamp_offset()?))
    }

    pub fn size_bytes(&self) -> Result<u64, BrokerError> {
        self.with_log(|log| Ok(log.size_bytes()))
    }
}

/// Scans the first batch in `batch` for the first record with timestamp >= `ts`. `None` if the
/// batch cannot be decoded or (LogAppendTime) carries one timestamp for all its records, in
/// which case the batch's own base offset and max timestamp are the answer.
fn first_record_at_or_after(mut batch: bytes::Bytes, ts: i64) -> Option<(i64, i64)> {
    let header = runnel_storage::batch::validate_batches(&batch)
        .ok()?
        .into_iter()
        .next()?;
    if header.is_log_append_time() {
        return None;
    }
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).ok()?;
    set.records
        .iter()
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp))
}

type TopicPartition = (String, i32);

/// Which partition logs exist on this node, and the metadata they come from.
pub struct ReplicaManager {
    data_dir: PathBuf,
    config: BrokerConfig,
    metadata: Mutex<MetadataStore>,
    /// Published image, swapped whole on every change so readers never wait on a writer.
    image: RwLock<Arc<MetadataImage>>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    node_id: i32,
    /// Held for the node's lifetime so two nodes cannot share one data dir.
    _lock: fs::File,
}

impl ReplicaManager {
    /// Opens the data dir: takes its lock, loads the metadata and recovers every partition log.
    pub fn open(
        data_dir: &Path,
        this_broker: BrokerInfo,
        config: BrokerConfig,
    ) -> Result<Self, BrokerError> {
        let io = |what: &str, e: std::io::Error| {
            BrokerError::DataDir(format!("{what} {}: {e}", data_dir.display()))
        };
        fs::create_dir_all(data_dir).map_err(|e| io("cannot create data dir", e))?;
        let lock = fs::File::create(data_dir.join(".lock")).map_err(|e| io("cannot lock", e))?;
        lock.try_lock().map_err(|_| {
            BrokerError::DataDir(format!(
                "data dir {} is in use by another runnel node; stop it or choose another --data-dir",
                data_dir.display()
            ))
        })?;
        remove_deleted_dirs(data_dir);
        if !data_dir.join("meta/cluster.json").exists() && has_partition_dirs(data_dir) {
            return Err(BrokerError::DataDir(format!(
                "data dir {} holds partition logs but no meta/cluster.json; refusing to start so \
                 no data is lost. Restore the file or move the data dir away",
                data_dir.display()
            )));
        }
        let node_id = this_broker.id;
        let store = MetadataStore::open(data_dir, this_broker)?;
        let image = store.image();
        let manager = Self {
            data_dir: data_dir.to_path_buf(),
            config,
            metadata: Mutex::new(store),
            image: RwLock::new(image.clone()),
            partitions: RwLock::new(HashMap::new()),
            node_id,
            _lock: lock,
        };
        let mut opened = 0;
        for topic in image.topics.values() {
            manager.open_partitions(topic, 0)?;
            opened += topic.partitions.len();
        }
        manager.remove_stray_dirs(&image);
        tracing::info!(
            topics = image.topics.len(),
            partitions = opened,
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

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    /// Opens (creating or recovering) partition logs `from..` of `topic`.
    fn open_partitions(&self, topic: &TopicInfo, from: usize) -> Result<(), BrokerError> {
        let log_config = self.config.log_config(&topic.configs);
        for p in &topic.partitions[from..] {
            let log = PartitionLog::open(
                &self.partition_dir(&topic.name, p.index),
                log_config.clone(),
                now_ms(),
            )?;
            let (hw, _) = watch::channel(log.log_end_offset());
            let partition = Arc::new(Partition {
                topic: topic.name.clone(),
                index: p.index,
                log: Mutex::new(Some(log)),
                high_watermark: hw,
            });
            self.partitions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert((topic.name.clone(), p.index), partition);
        }
        Ok(())
    }

    fn publish(&self, image: Arc<MetadataImage>) {
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
    }

    fn with_store<T>(
        &self,
        f: impl FnOnce(&mut MetadataStore) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let mut store = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        let result = f(&mut store)?;
        self.publish(store.image());
        Ok(result)
    }

    /// Creates a topic; `partitions`/`replication_factor` of -1 take the broker defaults.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, BrokerError> {
        let partitions = if partitions == -1 {
            self.config.num_partitions()
        } else {
            partitions
        };
        let replication_factor = if replication_factor == -1 {
            self.config.default_replication_factor()
        } else {
            replication_factor
        };
        validate_topic_configs(&configs)?;
        if validate_only {
            crate::metadata::validate_topic_name(name)?;
            if self.image().topic(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_string()));
            }
            return Ok(TopicInfo {
                name: name.to_string(),
                id: uuid::Uuid::nil(),
                partitions: Vec::new(),
                configs,
            });
        }
        // The store lock is held while the logs are created so a concurrent create of the same
        // name cannot interleave.
        let mut store = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        let topic = store.create_topic(name, partitions, replication_factor, configs)?;
        if let Err(e) = self.open_partitions(&topic, 0) {
            tracing::error!(topic = name, error = %e, "cannot create partition logs; rolling back");
            let _ = store.delete_topic(name);
            self.drop_partitions(name);
            return Err(e);
        }
        self.publish(store.image());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Creates a topic with broker defaults if auto-creation is on; `Ok(None)` if it is off.
    pub fn auto_create_topic(&self, name: &str) -> Result<Option<TopicInfo>, BrokerError> {
        if !self.config.auto_create_topics() {
            return Ok(None);
        }
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Ok(t) => Ok(Some(t)),
            // Lost a race with another creator: the topic exists, which is what was wanted.
            Err(BrokerError::TopicExists(_)) => Ok(self.image().topic(name).cloned()),
            Err(e) => Err(e),
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        let topic = self.with_store(|store| store.delete_topic(name))?;
        self.drop_partitions(name);
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Closes and deletes the logs of a topic. The directory is first renamed to
    /// `*.<id>-delete` so a crash halfway leaves nothing that looks like a live partition.
    fn drop_partitions(&self, name: &str) {
        let removed: Vec<Arc<Partition>> = {
            let mut partitions = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<TopicPartition> = partitions
                .keys()
                .filter(|(t, _)| t == name)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| partitions.remove(k)).collect()
        };
        for partition in removed {
            let log = partition
                .log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(log) = log {
                let dir = log.dir().to_path_buf();
                drop(log);
                remove_partition_dir(&dir);
            }
        }
    }

    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<TopicInfo, BrokerError> {
        let mut store = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        let current = store
            .image()
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?
            .partitions
            .len();
        if validate_only {
            if total as usize <= current {
                return Err(BrokerError::InvalidPartitions(format!(
                    "topic '{name}' has {current} partitions; the new count must be larger, got {total}"
                )));
            }
            return Ok(store.image().topics[name].clone());
        }
        let topic = store.create_partitions(name, total)?;
        self.open_partitions(&topic, current)?;
        self.publish(store.image());
        tracing::info!(topic = name, total, "added partitions");
        Ok(topic)
    }

    /// Replaces a topic's config overrides and applies them to its open logs.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        validate_topic_configs(&configs)?;
        if validate_only {
            return self
                .image()
                .topic(name)
                .map(|_| ())
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()));
        }
        let topic = self.with_store(|store| store.set_topic_configs(name, configs))?;
        let log_config = self.config.log_config(&topic.configs);
        for p in &topic.partitions {
            if let Ok(partition) = self.partition(name, p.index) {
                let _ = partition.with_log(|log| {
                    log.set_config(log_config.clone());
                    Ok(())
                });
            }
        }
        tracing::info!(topic = name, "altered topic configs");
        Ok(())
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
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
                    topic = partition.topic,
                    partition = partition.index,
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
                tracing::warn!(topic = partition.topic, partition = partition.index, error = %e, "flush failed");
            }
        }
    }

    /// fsyncs every log and writes recovery points, for a clean shutdown.
    pub fn flush_all(&self) {
        for partition in self.all_partitions() {
            if let Err(e) = partition.with_log(|log| Ok(log.flush()?)) {
                tracing::warn!(topic = partition.topic, partition = partition.index, error = %e, "flush failed");
            }
        }
    }

    /// Runs retention and timed flushes until `shutdown` fires. The sweeps do blocking file
    /// work, so they run on the blocking pool.
    pub async fn run_maintenance(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
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
                    let _ = tokio::task::spawn_blocking(move || me.flush_due()).await;
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

fn has_partition_dirs(data_dir: &Path) -> bool {
    fs::read_dir(data_dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                e.path().is_dir() && parse_partition_dir(&e.file_name().to_string_lossy()).is_some()
            })
        })
        .unwrap_or(false)
}

impl ReplicaManager {
    /// A partition directory whose topic is not in the metadata is left over from a delete that
    /// crashed between updating the metadata and removing the directory.
    fn remove_stray_dirs(&self, image: &MetadataImage) {
        let Ok(entries) = fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !entry.path().is_dir() {
                continue;
            }
            if let Some((topic, index)) = parse_partition_dir(&name) {
                let known = image
                    .topic(topic)
                    .is_some_and(|t| (index as usize) < t.partitions.len());
                if !known {
                    tracing::warn!(dir = name, "removing the log of a deleted topic");
                    remove_partition_dir(&entry.path());
                }
            }
        }
    }
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
    use runnel_storage::batch::testing::build_batch;

    fn this_broker() -> BrokerInfo {
        BrokerInfo {
            id: 1,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
        }
    }

    fn manager(dir: &Path) -> ReplicaManager {
        ReplicaManager::open(dir, this_broker(), BrokerConfig::default()).unwrap()
    }

    #[test]
    fn append_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let rm = manager(dir.path());
            rm.create_topic("t", 2, 1, BTreeMap::new(), false).unwrap();
            let p = rm.partition("t", 1).unwrap();
            let mut batch = build_batch(3, 10);
            let info = p.append(&mut batch, 0).unwrap();
            assert_eq!((info.base_offset, info.last_offset), (0, 2));
            assert_eq!(p.high_watermark(), 3);
            assert!(!p.read(0, 1 << 20, true).unwrap().records.is_empty());
        }
        let rm = manager(dir.path());
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
    fn second_node_on_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _rm = manager(dir.path());
        let err = ReplicaManager::open(dir.path(), this_broker(), BrokerConfig::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn delete_removes_logs_and_recreate_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let rm = manager(dir.path());
        rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
        let p = rm.partition("t", 0).unwrap();
        p.append(&mut build_batch(2, 10), 0).unwrap();
        rm.delete_topic("t").unwrap();
        assert!(!dir.path().join("t-0").exists());
        assert!(p.append(&mut build_batch(1, 10), 0).is_err());
        rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
        assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 0);
    }

    #[test]
    fn missing_metadata_with_logs_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let rm = manager(dir.path());
            rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
        }
        fs::remove_file(dir.path().join("meta/cluster.json")).unwrap();
        let err = ReplicaManager::open(dir.path(), this_broker(), BrokerConfig::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("refusing to start"), "{err}");
        assert!(dir.path().join("t-0").exists());
    }

    #[test]
    fn partition_dir_names_parse() {
        assert_eq!(parse_partition_dir("a-b-3"), Some(("a-b", 3)));
        assert_eq!(parse_partition_dir("meta"), None);
        assert_eq!(parse_partition_dir("-3"), None);
    }
}
