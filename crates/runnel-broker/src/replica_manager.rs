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
use crate::producer_state::{CheckOutcome, ProducerBatch, ProducerStateManager};

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
    /// Idempotent-producer state. Lock order: only ever locked while `log` is held, so the
    /// checks and the state update are atomic with the append.
    producers: Mutex<ProducerStateManager>,
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
    ///
    /// Batches with a producer id are first checked against the producer state (inside the
    /// log mutex): a retry of one of the producer's last five batches appends nothing and
    /// returns the original offsets with `record_count == 0`; an old epoch or a sequence gap
    /// is an error. Batches without a producer id only pay a header read.
    pub fn append(&self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo, BrokerError> {
        // Compacted topics need a key on every record. The records are decoded here, before
        // the log is locked for the append (only the config flag is read under the lock);
        // the CRC is left to the log's own validation.
        if self.with_log(|log| Ok(log.config().cleanup_compact))? {
            crate::compaction::reject_null_keys(batches)?;
        }
        let info = self.with_log(|log| {
            let now = now_ms();
            let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
            let headers = producer_batches(batches);
            if let Some(headers) = &headers {
                match producers.check(headers)? {
                    CheckOutcome::Append => {}
                    CheckOutcome::Duplicate { producer_id, batch } => {
                        // A corrupt retry is still corrupt.
                        runnel_storage::batch::validate_batches(batches)?;
                        tracing::info!(
                            topic = self.topic,
                            partition = self.index,
                            producer_id,
                            first_seq = batch.first_seq,
                            last_seq = batch.last_seq,
                            base_offset = batch.first_offset,
                            "dropped a duplicate batch from an idempotent producer; answering with its original offset"
                        );
                        return Ok(AppendInfo {
                            base_offset: batch.first_offset,
                            last_offset: batch.last_offset,
                            log_append_time: batch.log_append_time,
                            record_count: 0,
                        });
                    }
                }
            }
            let info = log.append(batches, leader_epoch, now)?;
            if let Some(headers) = &headers {
                let mut offset = info.base_offset;
                for b in headers {
                    producers.update(b, offset, info.log_append_time);
                    offset += i64::from(b.last_offset_delta) + 1;
                }
            }
            if producers.note_appended(batches.len()) {
                if let Err(e) = producers.write_snapshot(info.last_offset + 1, now, false) {
                    tracing::warn!(topic = self.topic, partition = self.index, error = %e, "cannot write a producer-state snapshot");
                }
            }
            Ok(info)
        })?;
        if info.record_count > 0 {
            self.high_watermark.send_replace(info.last_offset + 1);
        }
        Ok(info)
    }

    /// Writes a producer-state snapshot at the log end offset (fsynced when `sync`).
    pub fn snapshot_producer_state(&self, sync: bool) -> Result<(), BrokerError> {
        self.with_log(|log| {
            let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
            producers
                .write_snapshot(log.log_end_offset(), now_ms(), sync)
                .map_err(|e| {
                    BrokerError::DataDir(format!(
                        "cannot write a producer-state snapshot in {}: {e}",
                        log.dir().display()
                    ))
                })
        })
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

    /// Runs one log-cleaner pass if the topic is compacted and one is due. The log is locked
    /// only to plan the pass and to swap its result in; the reading, decoding and writing of
    /// cleaned segments happens without it, so appends and fetches of this partition go on
    /// meanwhile (see `runnel_storage::compaction`). Records at or above the high watermark
    /// are neither cleaned nor used to supersede older ones. Call on a blocking thread.
    pub fn compact(&self) -> Result<runnel_storage::CompactionStats, BrokerError> {
        let hw = self.high_watermark();
        let plan = self.with_log(|log| {
            Ok(log.compaction_plan(now_ms(), hw, runnel_storage::DEFAULT_MAX_MAP_KEYS)?)
        })?;
        let Some(plan) = plan else {
            return Ok(runnel_storage::CompactionStats::default());
        };
        let cleaned = plan.execute(&crate::compaction::KafkaCodec)?;
        self.with_log(|log| Ok(log.install(cleaned)?))
    }
}

/// The producer fields of every batch in `buf` when at least one has a producer id; `None`
/// when none has (or the headers are malformed, which the log's validation then rejects).
/// Costs one 8-byte read per batch for non-idempotent producers.
fn producer_batches(buf: &[u8]) -> Option<Vec<ProducerBatch>> {
    use runnel_storage::batch::BatchHeader;
    let mut pos = 0;
    let mut any = false;
    while let Some(h) = buf.get(pos..).and_then(BatchHeader::new) {
        any |= h.producer_id() >= 0;
        pos += h.total_size()?;
    }
    if !any || pos != buf.len() {
        return None;
    }
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    while let Some(h) = buf.get(pos..).and_then(BatchHeader::new) {
        out.push(ProducerBatch::from_header(&h));
        pos += h.total_size()?;
    }
    Some(out)
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
            let producers =
                ProducerStateManager::load(&log, self.config.producer_id_expiration_ms());
            let partition = Arc::new(Partition {
                topic: topic.name.clone(),
                index: p.index,
                log: Mutex::new(Some(log)),
                producers: Mutex::new(producers),
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
            // So the next start does not rescan the log for producer state.
            if let Err(e) = partition.snapshot_producer_state(true) {
                tracing::warn!(topic = partition.topic, partition = partition.index, error = %e, "producer-state snapshot failed");
            }
        }
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
                    topic = partition.topic,
                    partition = partition.index,
                    "log cleaner pass discarded: the log changed meanwhile; retrying next time"
                ),
                Ok(s) if s.cleaned => {
                    cleaned += 1;
                    tracing::info!(
                        topic = partition.topic,
                        partition = partition.index,
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
                    topic = partition.topic,
                    partition = partition.index,
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

    mod idempotence {
        use super::*;
        use crate::producer_state::ProducerEntry;
        use kafka_protocol::ResponseError;
        use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};

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
            rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
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
            rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
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
            {
                let rm = manager(dir.path());
                rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
                let p = rm.partition("t", 0).unwrap();
                produce_some(&p, 4, 8);
                live = state(&p);
            } // no flush_all: a crash, no snapshot
            assert!(snapshots(&dir.path().join("t-0")).is_empty());
            let rm = manager(dir.path());
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
            {
                let rm = manager(dir.path());
                rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
                let p = rm.partition("t", 0).unwrap();
                produce_some(&p, 3, 4);
                rm.flush_all();
                assert_eq!(snapshots(&pdir), vec![format!("{:020}.snapshot", 28)]);
                // More after the snapshot, then a crash.
                p.append(&mut idem(0, 0, 8, 1), 0).unwrap();
                p.append(&mut idem(9, 0, 0, 1), 0).unwrap();
                live = state(&p);
            }
            let rm = manager(dir.path());
            let p = rm.partition("t", 0).unwrap();
            assert_eq!(state(&p), live);
            rm.flush_all();
            assert_eq!(snapshots(&pdir).len(), 2);
            rm.flush_all(); // nothing new: no third file
            drop(rm);
            // A torn newest snapshot and one past the log end are deleted; the older is used.
            let newest = pdir.join(format!("{:020}.snapshot", 30));
            let bytes = fs::read(&newest).unwrap();
            fs::write(&newest, &bytes[..bytes.len() - 3]).unwrap();
            fs::write(pdir.join(format!("{:020}.snapshot", 999)), &bytes).unwrap();
            let rm = manager(dir.path());
            let p = rm.partition("t", 0).unwrap();
            assert_eq!(state(&p), live);
            assert_eq!(snapshots(&pdir), vec![format!("{:020}.snapshot", 28)]);
        }

        #[test]
        fn periodic_snapshot_after_enough_bytes() {
            let dir = tempfile::tempdir().unwrap();
            let rm = manager(dir.path());
            rm.create_topic("t", 1, 1, BTreeMap::new(), false).unwrap();
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
