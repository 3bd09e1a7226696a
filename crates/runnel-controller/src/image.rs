//! The cluster metadata image: what the Raft state machine holds and every node reads.
//!
//! The image changes only through [`crate::command::apply`] (replaying a command of the metadata log),
//! so every controller and every broker-only learner computes the same image from the same
//! log. Maps are `BTreeMap`s so iteration and serialization order never depend on a hash seed.
//!
//! Invariants that [`crate::command::apply`] keeps (and the property tests check):
//! - `replicas` has no duplicates, every id is a registered broker, and all partitions of a
//!   topic have the same number of replicas (the replication factor);
//! - `isr` is a subset of `replicas` without duplicates, non-empty unless eligible leader
//!   replicas are enabled ([`MetadataImage::min_insync_replicas`]) and the partition has no
//!   leader;
//! - `elr` is a subset of `replicas` disjoint from `isr`, empty while the ISR has at least
//!   min.insync.replicas members;
//! - `leader` is -1 ([`NO_LEADER`]) or an unfenced broker in `isr`;
//! - a partition without a leader has no unfenced broker in its ISR (it would have been
//!   elected), nor in its ELR when its ISR is empty;
//! - leader epochs and partition epochs never decrease.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ControllerError;

/// The `leader` of a partition that has none.
pub const NO_LEADER: i32 = -1;

/// The topic config that allows an out-of-sync replica to become leader.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// The topic config below which the ISR keeps eligible leader replicas (KIP-966).
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// One named Kafka listener as clients reach it (Kafka's `advertised.listeners`, KIP-103):
/// a client is told the addresses of the listener it connected through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: i32,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    /// Kafka listener as clients reach it (advertised host and port): the first of
    /// `listeners`.
    pub host: String,
    pub port: i32,
    /// Every advertised listener. Empty for a broker registered before named listeners
    /// existed: `host` and `port` then answer for any listener name.
    #[serde(default)]
    pub listeners: Vec<Endpoint>,
    /// `host:port` of the node's gRPC listener (replication fetches, forwarded requests).
    pub rpc_address: String,
    /// `broker.rack`; rack-aware replica placement needs it on every broker.
    pub rack: Option<String>,
    /// Chosen by the broker process at start. A registration with another incarnation is a
    /// restart: the old incarnation's ISR memberships and leaderships are dropped.
    pub incarnation: Uuid,
    /// A fenced broker leads nothing and joins no ISR. Registered brokers start fenced and are
    /// unfenced once caught up with the metadata log; the active controller fences a broker
    /// whose heartbeats stop.
    pub fenced: bool,
    /// Kafka's broker epoch: a number that grows with every (re-)registration, so requests
    /// from an older incarnation can be told apart. Assigned from
    /// [`MetadataImage::next_broker_epoch`].
    pub epoch: i64,
    /// The id of the broker's data dir (KIP-858's directory id), created when the dir was
    /// first initialised. A restart with another one is a replaced (empty) disk. `None` for a
    /// broker registered before directory ids existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_id: Option<Uuid>,
}

impl BrokerInfo {
    /// Where a client connected through `listener` reaches this broker, or `None` when the
    /// broker has no listener of that name (Kafka then leaves it out of Metadata).
    pub fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub index: i32,
    /// Broker ids holding a replica; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas, a non-empty subset of `replicas`.
    pub isr: Vec<i32>,
    /// The leading broker, or [`NO_LEADER`].
    pub leader: i32,
    /// Grows whenever the leader changes (including to and from no leader); fences requests
    /// of deposed leaders and followers.
    pub leader_epoch: i32,
    /// Grows on every change of this partition (leader, ISR); AlterPartition must name the
    /// current value, so a leader never overwrites a change it has not seen.
    pub partition_epoch: i32,
    /// Eligible leader replicas (KIP-966): replicas that left the ISR while it was smaller
    /// than min.insync.replicas. The high watermark cannot move then, so they hold every
    /// committed record and may lead when the ISR is empty. Replica order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<i32>,
    /// The leader when the ISR last became empty (Kafka's LastKnownElr with one member):
    /// elected when it returns while ISR and ELR are both empty, as Kafka's balanced recovery
    /// does, since nothing better is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_leader: Option<i32>,
}

impl PartitionInfo {
    pub fn has_leader(&self) -> bool {
        self.leader != NO_LEADER
    }

    /// The preferred leader: the first replica.
    pub fn preferred_leader(&self) -> i32 {
        self.replicas.first().copied().unwrap_or(NO_LEADER)
    }

    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    /// Topic-level config overrides under Kafka's names.
    pub configs: BTreeMap<String, String>,
    /// Indexed by partition number: `partitions[i].index == i`.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Replicas per partition (all partitions of a topic have the same count).
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }

    pub fn partition(&self, index: i32) -> Option<&PartitionInfo> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// The topic's min.insync.replicas (its override, else the cluster's), or `None` while the
    /// cluster has not enabled eligible leader replicas.
    pub fn min_insync_replicas(&self, cluster_default: Option<i32>) -> Option<usize> {
        let cluster = cluster_default?;
        let value = self
            .configs
            .get(MIN_INSYNC_REPLICAS)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(cluster);
        Some(usize::try_from(value.max(1)).unwrap_or(1))
    }

    /// Whether `unclean.leader.election.enable` is set to true for this topic.
    pub fn unclean_leader_election(&self) -> bool {
        self.configs
            .get(UNCLEAN_LEADER_ELECTION_ENABLE)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// The replicated cluster metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Kafka's cluster id (22 URL-safe base64 characters), set once by `InitCluster`. Empty
    /// until then.
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
    /// Start of the next producer-id block; every id below it has been handed out.
    pub next_producer_id: i64,
    /// Epoch the next broker registration gets.
    pub next_broker_epoch: i64,
    /// The cluster's min.insync.replicas default, as the active controller's config has it.
    /// Setting it enables eligible leader replicas (KIP-966); `None` in logs written before
    /// they existed, which therefore replay as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<i32>,
}

/// Topics the broker writes itself; clients may read them but not produce to, delete or
/// repartition them (a group's partition is `hash % count`, so a new count would orphan
/// committed offsets). The controller does not refuse commands on them: that policy belongs
/// to the request handlers.
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// Kafka's rules for topic names: 1 to 249 characters from `[a-zA-Z0-9._-]`, and not `.` or
/// `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    const MAX_LEN: usize = 249;
    let invalid = |reason: String| {
        Err(ControllerError::InvalidTopic(format!(
            "invalid topic name '{name}': {reason}"
        )))
    };
    if name.is_empty() {
        return invalid("the name is empty".to_string());
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed".to_string());
    }
    if name.len() > MAX_LEN {
        return invalid(format!("longer than {MAX_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(format!(
            "{c:?} is not allowed: only ASCII letters, digits, '.', '_' and '-' are"
        ));
    }
    Ok(())
}

impl MetadataImage {
    /// An empty image with the given cluster id.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            ..Self::default()
        }
    }

    pub fn broker(&self, id: i32) -> Option<&BrokerInfo> {
        self.brokers.get(&id)
    }

    /// Registered and not fenced: may lead partitions and be in ISRs.
    pub fn is_live(&self, broker: i32) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// Unfenced brokers in id order: what Metadata and DescribeCluster list.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> + '_ {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn fenced_brokers(&self) -> impl Iterator<Item = &BrokerInfo> + '_ {
        self.brokers.values().filter(|b| b.fenced)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicInfo> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        self.topics.get(topic)?.partition(partition)
    }

    /// The leader of a partition; `None` when the partition does not exist or has no leader
    /// (use [`MetadataImage::partition`] to tell the two apart).
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partition(topic, partition)
            .map(|p| p.leader)
            .filter(|&l| l != NO_LEADER)
    }

    /// Every partition, with its topic, in topic-name then partition order.
    pub fn all_partitions(&self) -> impl Iterator<Item = (&TopicInfo, &PartitionInfo)> + '_ {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
    }

    /// Partitions the broker leads.
    pub fn partitions_led_by(
        &self,
        broker: i32,
    ) -> impl Iterator<Item = (&TopicInfo, &PartitionInfo)> + '_ {
        self.all_partitions()
            .filter(move |(_, p)| p.leader == broker)
    }

    /// Partitions the broker holds a replica of (leader or follower).
    pub fn partitions_replicated_on(
        &self,
        broker: i32,
    ) -> impl Iterator<Item = (&TopicInfo, &PartitionInfo)> + '_ {
        self.all_partitions()
            .filter(move |(_, p)| p.replicas.contains(&broker))
    }

    /// Partitions without a leader.
    pub fn offline_partitions(&self) -> impl Iterator<Item = (&TopicInfo, &PartitionInfo)> + '_ {
        self.all_partitions().filter(|(_, p)| !p.has_leader())
    }

    /// Partitions whose ISR is smaller than their replica set.
    pub fn under_replicated_partitions(
        &self,
    ) -> impl Iterator<Item = (&TopicInfo, &PartitionInfo)> + '_ {
        self.all_partitions()
            .filter(|(_, p)| p.is_under_replicated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(index: i32, replicas: &[i32], isr: &[i32], leader: i32) -> PartitionInfo {
        PartitionInfo {
            index,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            elr: Vec::new(),
            last_known_leader: None,
        }
    }

    fn broker(id: i32, fenced: bool) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "127.0.0.1".into(),
            port: 9092 + id,
            listeners: Vec::new(),
            rpc_address: format!("127.0.0.1:{}", 9093 + id),
            rack: None,
            incarnation: Uuid::from_u128(id as u128),
            fenced,
            epoch: id as i64,
            directory_id: None,
        }
    }

    fn image() -> MetadataImage {
        let mut image = MetadataImage::new("cluster");
        for (id, fenced) in [(1, false), (2, false), (3, true)] {
            image.brokers.insert(id, broker(id, fenced));
        }
        let topic = |name: &str, id: u128, partitions: Vec<PartitionInfo>| TopicInfo {
            name: name.into(),
            id: Uuid::from_u128(id),
            configs: BTreeMap::new(),
            partitions,
        };
        image.topics.insert(
            "a".into(),
            topic(
                "a",
                1,
                vec![
                    partition(0, &[1, 2], &[1, 2], 1),
                    partition(1, &[2, 1], &[2], 2),
                    partition(2, &[3, 1], &[3], NO_LEADER),
                ],
            ),
        );
        image
            .topics
            .insert("b".into(), topic("b", 2, vec![partition(0, &[1], &[1], 1)]));
        image
    }

    fn refs<'a>(
        it: impl Iterator<Item = (&'a TopicInfo, &'a PartitionInfo)>,
    ) -> Vec<(&'a str, i32)> {
        it.map(|(t, p)| (t.name.as_str(), p.index)).collect()
    }

    #[test]
    fn read_helpers() {
        let image = image();
        assert_eq!(refs(image.partitions_led_by(1)), [("a", 0), ("b", 0)]);
        assert_eq!(refs(image.partitions_led_by(2)), [("a", 1)]);
        assert_eq!(refs(image.partitions_led_by(3)), []);
        assert_eq!(refs(image.partitions_replicated_on(3)), [("a", 2)]);
        assert_eq!(refs(image.offline_partitions()), [("a", 2)]);
        assert_eq!(
            refs(image.under_replicated_partitions()),
            [("a", 1), ("a", 2)]
        );
        assert_eq!(image.leader_of("a", 0), Some(1));
        assert_eq!(image.leader_of("a", 2), None);
        assert_eq!(image.leader_of("a", 3), None);
        assert_eq!(image.leader_of("a", -1), None);
        assert_eq!(image.leader_of("zz", 0), None);
        assert!(image.partition("a", 2).is_some());
        assert_eq!(image.topic_by_id(Uuid::from_u128(2)).unwrap().name, "b");
        assert!(image.topic_by_id(Uuid::from_u128(9)).is_none());
        let live: Vec<i32> = image.live_brokers().map(|b| b.id).collect();
        assert_eq!(live, [1, 2]);
        let fenced: Vec<i32> = image.fenced_brokers().map(|b| b.id).collect();
        assert_eq!(fenced, [3]);
        assert!(image.is_live(1) && !image.is_live(3) && !image.is_live(7));
        assert_eq!(image.topic("a").unwrap().replication_factor(), 2);
        assert_eq!(image.partition("a", 1).unwrap().preferred_leader(), 2);
    }

    #[test]
    fn unclean_config_is_case_insensitive() {
        let mut t = image().topics["a"].clone();
        assert!(!t.unclean_leader_election());
        t.configs
            .insert(UNCLEAN_LEADER_ELECTION_ENABLE.into(), "TRUE".into());
        assert!(t.unclean_leader_election());
        t.configs
            .insert(UNCLEAN_LEADER_ELECTION_ENABLE.into(), "false".into());
        assert!(!t.unclean_leader_election());
    }

    #[test]
    fn json_round_trip() {
        let image = image();
        let json = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, image);
        // Deterministic encoding: the same image always serializes to the same bytes.
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn topic_names() {
        for good in [
            "a",
            "orders",
            "A-b_c.d",
            "__consumer_offsets",
            &"x".repeat(249),
        ] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", "a\0", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(
                err.code(),
                crate::error::ResponseError::InvalidTopicException,
                "{bad}"
            );
        }
        assert!(is_internal_topic("__consumer_offsets"));
        assert!(is_internal_topic("__transaction_state"));
        assert!(!is_internal_topic("orders"));
    }
}
