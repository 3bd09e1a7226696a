//! The partition registry: which local replicas exist, their directories in the data dir, and
//! opening (creating or recovering) and deleting their logs. It follows no metadata itself:
//! the image applier tells it what to open and drop.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use runnel_storage::PartitionLog;
use uuid::Uuid;

use super::TopicPartition;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::log_dir::LogDir;
use crate::metadata::{MetadataImage, TopicInfo};
use crate::partition::{now_ms, Partition};
use crate::replication::checkpoint;

/// Extension of the topic-id file beside each partition directory.
const TOPIC_ID_SUFFIX: &str = "topic-id";

/// The partition logs open on this node, by name and by topic id.
pub(crate) struct PartitionRegistry {
    data_dir: PathBuf,
    config: BrokerConfig,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// The same replicas by topic id, for replica fetches (which name topics by id).
    partitions_by_id: RwLock<HashMap<(Uuid, i32), Arc<Partition>>>,
    /// High watermarks from the checkpoint at start, each used when its partition opens.
    checkpointed_hws: Mutex<checkpoint::Checkpoint>,
    /// The data dir's health, shared by every partition in it.
    log_dir: Arc<LogDir>,
}

impl PartitionRegistry {
    /// Opens the data dir with no partition open yet: finishes deletes a crash interrupted and
    /// reads the high-watermark checkpoint the logs will start from.
    pub(crate) fn open(data_dir: &Path, config: BrokerConfig) -> Result<Self, BrokerError> {
        fs::create_dir_all(data_dir).map_err(|e| {
            BrokerError::DataDir(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        remove_deleted_dirs(data_dir);
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            config,
            partitions: RwLock::new(HashMap::new()),
            partitions_by_id: RwLock::new(HashMap::new()),
            checkpointed_hws: Mutex::new(checkpoint::read(data_dir)),
            log_dir: Arc::new(LogDir::new(data_dir)),
        })
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn log_dir(&self) -> &Arc<LogDir> {
        &self.log_dir
    }

    pub(crate) fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// The local replica of partition `index` of the topic with id `topic_id`.
    pub(crate) fn by_id(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.partitions_by_id
            .read()
            .get(&(topic_id, index))
            .cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    pub(crate) fn topic_partitions(&self, name: &str) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .iter()
            .filter(|((t, _), _)| t == name)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The open partitions `keep` refuses, by name.
    pub(crate) fn open_except(
        &self,
        keep: impl Fn(&TopicPartition, &Partition) -> bool,
    ) -> Vec<TopicPartition> {
        self.partitions
            .read()
            .iter()
            .filter(|(key, p)| !keep(key, p))
            .map(|(key, _)| key.clone())
            .collect()
    }

    pub(crate) fn contains(&self, key: &TopicPartition) -> bool {
        self.partitions.read().contains_key(key)
    }

    /// The checkpointed high watermarks of partitions not opened yet (a stale image at start):
    /// a rewritten checkpoint keeps them.
    pub(crate) fn unopened_checkpointed_hws(&self) -> checkpoint::Checkpoint {
        self.checkpointed_hws.lock().clone()
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
    pub(crate) fn open_partition(&self, topic: &TopicInfo, index: i32) -> Result<(), BrokerError> {
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
            .remove(&(topic.name.clone(), index));
        let partition = Arc::new(Partition::new(
            topic.name.clone(),
            topic.id,
            index,
            log,
            self.config.producer_id_expiration_ms(),
            checkpointed,
            self.log_dir.clone(),
        ));
        self.partitions_by_id
            .write()
            .insert((topic.id, index), partition.clone());
        self.partitions
            .write()
            .insert((topic.name.clone(), index), partition);
        Ok(())
    }

    /// Closes and deletes one partition log. Requests still holding its `Arc` get
    /// UNKNOWN_TOPIC_OR_PARTITION from then on.
    pub(crate) fn drop_partition(&self, topic: &str, index: i32) {
        let removed = self.partitions.write().remove(&(topic.to_string(), index));
        let Some(partition) = removed else {
            return;
        };
        self.partitions_by_id
            .write()
            .remove(&(partition.topic_id(), index));
        if let Some(log) = partition.take_log() {
            let dir = log.dir().to_path_buf();
            drop(log);
            remove_partition_dir(&dir);
        }
        let _ = fs::remove_file(self.topic_id_file(topic, index));
    }

    /// Removes partition directories (and topic-id files) that no replica of `image` on
    /// `node_id` needs. The caller makes sure `image` is current (an old one would delete
    /// live logs).
    pub(crate) fn remove_stray_dirs(&self, image: &MetadataImage, node_id: i32) {
        let Ok(entries) = fs::read_dir(&self.data_dir) else {
            return;
        };
        let local = |topic: &str, index: i32| {
            image
                .partition(topic, index)
                .is_some_and(|p| p.replicas.contains(&node_id))
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

/// Renames the directory out of the way first, so a crash midway leaves a `-delete`
/// directory that the next start removes rather than a half-deleted log.
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
#[path = "registry_tests.rs"]
mod tests;
