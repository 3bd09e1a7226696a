//! The cluster metadata image (brokers, topics, partitions with leaders and epochs) and the
//! single-node store that persists it.
//!
//! The image has the shape the Raft controller will replicate (replicas, ISR, leader epochs),
//! so the gateway already answers Metadata from it; on a single node every partition is led by
//! this node. [`MetadataStore`] persists topics to `<data-dir>/meta/cluster.json`, rewriting it
//! atomically (temp file, fsync, rename) on every change.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::BrokerError;

/// A broker as clients see it in Metadata and DescribeCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionInfo>,
    /// Topic-level config overrides, Kafka names.
    pub configs: BTreeMap<String, String>,
}

/// An immutable snapshot of the cluster metadata; readers hold an `Arc` of it, so a request
/// sees one consistent view and never holds a lock.
#[derive(Clone, Debug)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicInfo> {
        self.topics.values().find(|t| t.id == id)
    }
}

/// What `cluster.json` holds.
#[derive(Serialize, Deserialize)]
struct StoredMetadata {
    /// Format version of this file, for future migrations.
    version: u32,
    cluster_id: String,
    node_id: i32,
    topics: Vec<TopicInfo>,
}

const STORE_VERSION: u32 = 1;

/// Topics the broker writes itself; clients may read them but not produce to, delete or
/// repartition them (a group's partition is `hash % count`, so a new count would orphan
/// committed offsets).
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// Kafka's rules for topic names (`org.apache.kafka.common.internals.Topic.validate`).
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let invalid = |reason: &str| BrokerError::InvalidTopic {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > 249 {
        return Err(invalid("longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// Persistent topic metadata of a single node.
pub struct MetadataStore {
    path: PathBuf,
    node_id: i32,
    cluster_id: String,
    /// This node as clients reach it (advertised address).
    this_broker: BrokerInfo,
    image: Arc<MetadataImage>,
}

impl MetadataStore {
    /// Opens the store under `data_dir/meta`, creating it on first start. Refuses to start on
    /// a data dir written by another node id, or one whose metadata file is unreadable, with a
    /// sentence that says what to do.
    pub fn open(data_dir: &Path, this_broker: BrokerInfo) -> Result<Self, BrokerError> {
        let dir = data_dir.join("meta");
        fs::create_dir_all(&dir)
            .map_err(|e| BrokerError::Metadata(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("cluster.json");
        let node_id = this_broker.id;
        let stored = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<StoredMetadata>(&bytes).map_err(|e| {
                BrokerError::Metadata(format!(
                    "{} is corrupt ({e}); restore it from a backup or move the data dir away",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredMetadata {
                version: STORE_VERSION,
                cluster_id: new_cluster_id(),
                node_id,
                topics: Vec::new(),
            },
            Err(e) => {
                return Err(BrokerError::Metadata(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        if stored.version != STORE_VERSION {
            return Err(BrokerError::Metadata(format!(
                "{} has format version {}, this build reads version {STORE_VERSION}",
                path.display(),
                stored.version
            )));
        }
        if stored.node_id != node_id {
            return Err(BrokerError::Metadata(format!(
                "data dir {} belongs to node {}, not node {node_id}; pass --node-id {} or use another --data-dir",
                data_dir.display(),
                stored.node_id,
                stored.node_id
            )));
        }
        let mut store = Self {
            path,
            node_id,
            cluster_id: stored.cluster_id.clone(),
            this_broker,
            image: Arc::new(MetadataImage {
                cluster_id: String::new(),
                controller_id: node_id,
                brokers: BTreeMap::new(),
                topics: BTreeMap::new(),
            }),
        };
        let topics = stored
            .topics
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        store.publish(topics);
        store.persist()?;
        Ok(store)
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.clone()
    }

    fn publish(&mut self, topics: BTreeMap<String, TopicInfo>) {
        let mut brokers = BTreeMap::new();
        brokers.insert(self.node_id, self.this_broker.clone());
        self.image = Arc::new(MetadataImage {
            cluster_id: self.cluster_id.clone(),
            controller_id: self.node_id,
            brokers,
            topics,
        });
    }

    /// Writes the current image to disk atomically: a crash leaves the old or the new file.
    fn persist(&self) -> Result<(), BrokerError> {
        let stored = StoredMetadata {
            version: STORE_VERSION,
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
            topics: self.image.topics.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&stored)
            .map_err(|e| BrokerError::Metadata(format!("cannot encode metadata: {e}")))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            BrokerError::Metadata(format!("cannot write {}: {e}", self.path.display()))
        })
    }

    /// Applies a change to the topic map, persists it, then publishes the new image. Nothing
    /// is published unless it is on disk.
    fn update(
        &mut self,
        change: impl FnOnce(&mut BTreeMap<String, TopicInfo>) -> Result<(), BrokerError>,
    ) -> Result<Arc<MetadataImage>, BrokerError> {
        let previous = self.image.clone();
        let mut topics = previous.topics.clone();
        change(&mut topics)?;
        self.publish(topics);
        if let Err(e) = self.persist() {
            self.image = previous;
            return Err(e);
        }
        Ok(self.image.clone())
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo, BrokerError> {
        validate_topic_name(name)?;
        if partitions < 1 {
            return Err(BrokerError::InvalidPartitions(format!(
                "a topic needs at least 1 partition, got {partitions}"
            )));
        }
        if replication_factor != 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is larger than the 1 available broker"
            )));
        }
        let node = self.node_id;
        let topic = TopicInfo {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: (0..partitions).map(|i| single_replica(i, node)).collect(),
            configs,
        };
        let created = topic.clone();
        self.update(|topics| {
            if topics.contains_key(name) {
                return Err(BrokerError::TopicExists(name.to_string()));
            }
            // Kafka forbids names that differ only by '.' vs '_' (they collide in metric names).
            let normalized = name.replace('.', "_");
            if let Some(other) = topics.keys().find(|t| t.replace('.', "_") == normalized) {
                return Err(BrokerError::InvalidTopic {
                    name: name.to_string(),
                    reason: format!(
                        "it collides with existing topic '{other}' ('.' and '_' are treated alike)"
                    ),
                });
            }
            topics.insert(name.to_string(), topic);
            Ok(())
        })?;
        Ok(created)
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<TopicInfo, BrokerError> {
        let mut removed = None;
        self.update(|topics| {
            removed = topics.remove(name);
            removed
                .is_some()
                .then_some(())
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
        })?;
        Ok(removed.expect("checked above"))
    }

    pub fn create_partitions(&mut self, name: &str, total: i32) -> Result<TopicInfo, BrokerError> {
        let node = self.node_id;
        let image = self.update(|topics| {
            let topic = topics
                .get_mut(name)
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
            let current = topic.partitions.len() as i32;
            if total <= current {
                return Err(BrokerError::InvalidPartitions(format!(
                    "topic '{name}' has {current} partitions; the new count must be larger, got {total}"
                )));
            }
            topic
                .partitions
                .extend((current..total).map(|i| single_replica(i, node)));
            Ok(())
        })?;
        Ok(image.topics[name].clone())
    }

    pub fn set_topic_configs(
        &mut self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo, BrokerError> {
        let image = self.update(|topics| {
            let topic = topics
                .get_mut(name)
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
            topic.configs = configs;
            Ok(())
        })?;
        Ok(image.topics[name].clone())
    }
}

fn single_replica(index: i32, node: i32) -> PartitionInfo {
    PartitionInfo {
        index,
        leader: node,
        leader_epoch: 0,
        replicas: vec![node],
        isr: vec![node],
    }
}

/// A cluster id in Kafka's format: a random UUID, URL-safe base64 without padding (22 chars).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = Uuid::new_v4().as_u128();
    (0..22u32)
        .map(|i| ALPHABET[((bits >> (6 * i)) & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
        }
    }

    #[test]
    fn topics_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path(), broker(1)).unwrap();
        let created = store.create_topic("orders", 3, 1, BTreeMap::new()).unwrap();
        store.create_partitions("orders", 5).unwrap();
        let cluster_id = store.image().cluster_id.clone();
        drop(store);
        let store = MetadataStore::open(dir.path(), broker(1)).unwrap();
        let image = store.image();
        assert_eq!(image.cluster_id, cluster_id);
        let topic = image.topic("orders").unwrap();
        assert_eq!(topic.id, created.id);
        assert_eq!(topic.partitions.len(), 5);
    }

    #[test]
    fn refuses_other_node_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        MetadataStore::open(dir.path(), broker(1)).unwrap();
        let err = MetadataStore::open(dir.path(), broker(2)).err().unwrap();
        assert!(err.to_string().contains("belongs to node 1"), "{err}");
        fs::write(dir.path().join("meta/cluster.json"), b"{not json").unwrap();
        let err = MetadataStore::open(dir.path(), broker(1)).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn validates_names_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path(), broker(1)).unwrap();
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(matches!(
                store.create_topic(bad, 1, 1, BTreeMap::new()),
                Err(BrokerError::InvalidTopic { .. })
            ));
        }
        store.create_topic("a.b", 1, 1, BTreeMap::new()).unwrap();
        assert!(matches!(
            store.create_topic("a_b", 1, 1, BTreeMap::new()),
            Err(BrokerError::InvalidTopic { .. })
        ));
        assert!(matches!(
            store.create_topic("a.b", 1, 1, BTreeMap::new()),
            Err(BrokerError::TopicExists(_))
        ));
        assert!(store.create_topic("z", 0, 1, BTreeMap::new()).is_err());
        assert!(store.create_topic("z", 1, 3, BTreeMap::new()).is_err());
        assert!(store.create_partitions("a.b", 1).is_err());
        assert!(store.delete_topic("missing").is_err());
    }

    #[test]
    fn cluster_id_is_22_url_safe_chars() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
