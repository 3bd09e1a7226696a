//! Broker and topic configuration under Kafka's names.
//!
//! One table ([`TOPIC_CONFIGS`]) defines every topic-level config: its Kafka name, the broker
//! config that supplies its default, its type and Kafka's default value. Values are kept as
//! strings (as Kafka's admin APIs carry them) and resolved to a typed [`LogConfig`] when a
//! partition log is opened or reconfigured, so DescribeConfigs, validation and resolution can
//! never disagree about what exists.

use std::collections::BTreeMap;

use runnel_storage::{LogConfig, TimestampType};

use crate::error::BrokerError;

/// The value type of a config, as DescribeConfigs v3+ reports it (Kafka's `ConfigType` ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Definition of one topic-level config.
#[derive(Debug)]
pub struct TopicConfigDef {
    /// Topic-level name (`retention.ms`).
    pub name: &'static str,
    /// Broker-level name that sets the default for every topic (`log.retention.ms`).
    pub broker_name: &'static str,
    pub config_type: ConfigType,
    /// Kafka's default value, used when neither the broker nor the topic sets one.
    pub default: &'static str,
    /// Allowed values for enumerations; empty means "any value of the type".
    pub allowed: &'static [&'static str],
    pub doc: &'static str,
}

/// Every topic config Runnel understands. Keys that are not here are rejected with
/// INVALID_CONFIG rather than silently accepted and ignored.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        config_type: ConfigType::List,
        default: "delete",
        allowed: &["delete", "compact"],
        doc: "'delete' removes old segments; 'compact' keeps the latest record per key.",
    },
    TopicConfigDef {
        name: "compression.type",
        broker_name: "compression.type",
        config_type: ConfigType::String,
        default: "producer",
        allowed: &["producer"],
        doc: "Batches are stored as the producer compressed them ('producer').",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        config_type: ConfigType::Long,
        default: "86400000",
        allowed: &[],
        doc: "How long a tombstone stays in a compacted log after the cleaner first saw it.",
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        config_type: ConfigType::Long,
        default: "9223372036854775807",
        allowed: &[],
        doc: "fsync the log after this many records (default: leave it to the OS).",
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        config_type: ConfigType::Long,
        default: "9223372036854775807",
        allowed: &[],
        doc: "fsync the log when this much time has passed since the last fsync.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        config_type: ConfigType::Int,
        default: "4096",
        allowed: &[],
        doc: "Bytes of log between two entries of the sparse offset index.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        config_type: ConfigType::Int,
        default: "1048588",
        allowed: &[],
        doc: "Largest record batch the topic accepts.",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_name: "log.message.timestamp.after.max.ms",
        config_type: ConfigType::Long,
        default: "3600000",
        allowed: &[],
        doc: "How far after the broker's clock a CreateTime record timestamp may be (KIP-937).",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_name: "log.message.timestamp.before.max.ms",
        config_type: ConfigType::Long,
        default: "9223372036854775807",
        allowed: &[],
        doc: "How far before the broker's clock a CreateTime record timestamp may be (KIP-937).",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        config_type: ConfigType::String,
        default: "CreateTime",
        allowed: &["CreateTime", "LogAppendTime"],
        doc: "Keep the producer's timestamps (CreateTime) or stamp batches on append.",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        config_type: ConfigType::Double,
        default: "0.5",
        allowed: &[],
        doc: "Compact when uncleaned bytes reach this share of the cleanable log.",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        config_type: ConfigType::Long,
        default: "0",
        allowed: &[],
        doc: "A record stays uncompacted for at least this long.",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        config_type: ConfigType::Int,
        default: "1",
        allowed: &[],
        doc: "Replicas that must acknowledge an acks=all write.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        config_type: ConfigType::Long,
        default: "-1",
        allowed: &[],
        doc: "Delete old segments while the partition is larger than this (-1: no limit).",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        config_type: ConfigType::Long,
        default: "604800000",
        allowed: &[],
        doc: "Delete segments whose newest record is older than this (-1: keep forever).",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        config_type: ConfigType::Int,
        default: "1073741824",
        allowed: &[],
        doc: "Roll to a new segment file at this size.",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        config_type: ConfigType::Long,
        default: "604800000",
        allowed: &[],
        doc: "Roll to a new segment file when the active one is this old.",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        default: "false",
        allowed: &["true", "false"],
        doc: "Allow an out-of-sync replica to become leader (may lose data).",
    },
];

/// Broker-only configs (no topic-level override), with Kafka's defaults.
pub static BROKER_ONLY_CONFIGS: &[(&str, ConfigType, &str, &str)] = &[
    (
        "auto.create.topics.enable",
        ConfigType::Boolean,
        "true",
        "Create a topic when a client asks for metadata of or produces to one that is missing.",
    ),
    (
        "num.partitions",
        ConfigType::Int,
        "1",
        "Partitions of a topic created without an explicit count.",
    ),
    (
        "default.replication.factor",
        ConfigType::Int,
        "1",
        "Replication factor of a topic created without an explicit one.",
    ),
    (
        "socket.request.max.bytes",
        ConfigType::Int,
        "104857600",
        "Largest Kafka request frame accepted; larger ones close the connection.",
    ),
    (
        "log.retention.check.interval.ms",
        ConfigType::Long,
        "300000",
        "How often retention deletes old segments.",
    ),
    (
        "log.cleaner.enable",
        ConfigType::Boolean,
        "true",
        "Run the log cleaner for topics whose cleanup.policy has 'compact'.",
    ),
    (
        "log.cleaner.backoff.ms",
        ConfigType::Long,
        "15000",
        "How often the log cleaner looks for partitions to compact.",
    ),
    (
        "offsets.topic.num.partitions",
        ConfigType::Int,
        "50",
        "Partitions of the internal __consumer_offsets topic (fixed once it exists).",
    ),
    (
        "offsets.topic.replication.factor",
        ConfigType::Int,
        "3",
        "Replication factor of __consumer_offsets, created only once this many brokers are live.",
    ),
    (
        "offsets.retention.minutes",
        ConfigType::Int,
        "10080",
        "Committed offsets of an empty group are deleted this long after its last commit.",
    ),
    (
        "offsets.retention.check.interval.ms",
        ConfigType::Long,
        "600000",
        "How often expired committed offsets are looked for.",
    ),
    (
        "group.initial.rebalance.delay.ms",
        ConfigType::Int,
        "3000",
        "How long the first rebalance of an empty group waits for more members to join.",
    ),
    (
        "group.min.session.timeout.ms",
        ConfigType::Int,
        "6000",
        "Smallest session timeout a consumer may ask for.",
    ),
    (
        "group.max.session.timeout.ms",
        ConfigType::Int,
        "1800000",
        "Largest session timeout a consumer may ask for.",
    ),
    (
        "group.max.size",
        ConfigType::Int,
        "2147483647",
        "Members a consumer group may have.",
    ),
    (
        "producer.id.expiration.ms",
        ConfigType::Int,
        "86400000",
        "Producer state of an idle idempotent producer is dropped after this long.",
    ),
    (
        "max.connections",
        ConfigType::Int,
        "10000",
        "Client connections served at once; more wait to be accepted.",
    ),
    (
        "max.connections.per.ip",
        ConfigType::Int,
        "2147483647",
        "Client connections one address may hold; more are closed as soon as they are accepted.",
    ),
    (
        "max.connections.per.ip.overrides",
        ConfigType::String,
        "",
        "Per-address exceptions to max.connections.per.ip, as host:count,host:count.",
    ),
    (
        "connections.max.idle.ms",
        ConfigType::Long,
        "600000",
        "A client connection with no request in flight and nothing received for this long is closed.",
    ),
    (
        "socket.request.read.timeout.ms",
        ConfigType::Long,
        "60000",
        "Runnel's own: once a request frame's first byte arrives, the whole frame must arrive within this time or the connection is closed.",
    ),
    (
        "socket.send.buffer.bytes",
        ConfigType::Int,
        "102400",
        "Response bytes a client connection may have waiting to be read before its next request waits.",
    ),
    (
        "queued.max.requests",
        ConfigType::Int,
        "500",
        "Requests read off client sockets but not yet started, node-wide; past it, connections stop reading.",
    ),
    (
        "queued.max.request.bytes",
        ConfigType::Long,
        "536870912",
        "Memory pool for request frames in the node, from their length prefix until their response is ready (-1: no pool).",
    ),
    (
        "fetch.max.bytes",
        ConfigType::Int,
        "57671680",
        "The most record bytes one Fetch response carries, whatever the client asks for.",
    ),
    (
        "broker.session.timeout.ms",
        ConfigType::Int,
        "9000",
        "The controller fences a broker whose last heartbeat is older than this.",
    ),
    (
        "broker.heartbeat.interval.ms",
        ConfigType::Int,
        "2000",
        "How often a broker heartbeats to the active controller.",
    ),
    (
        "offsets.commit.timeout.ms",
        ConfigType::Int,
        "5000",
        "How long an offset commit waits for the offsets topic's in-sync replicas.",
    ),
    (
        "replica.lag.time.max.ms",
        ConfigType::Long,
        "30000",
        "A follower that has not caught up with the leader's log end for this long leaves the ISR.",
    ),
    (
        "replica.fetch.wait.max.ms",
        ConfigType::Int,
        "500",
        "How long a leader holds a follower's fetch when it has no new records.",
    ),
    (
        "replica.fetch.max.bytes",
        ConfigType::Int,
        "1048576",
        "Records per partition in one follower fetch (the first batch is sent even if larger).",
    ),
    (
        "replica.fetch.response.max.bytes",
        ConfigType::Int,
        "10485760",
        "Records in one follower fetch response over all its partitions.",
    ),
    (
        "auto.leader.rebalance.enable",
        ConfigType::Boolean,
        "true",
        "Periodically move leadership back to each partition's preferred replica.",
    ),
    (
        "leader.imbalance.check.interval.seconds",
        ConfigType::Long,
        "300",
        "How often the controller checks whether preferred leaders should be restored.",
    ),
    (
        "broker.rack",
        ConfigType::String,
        "",
        "Rack of this broker, for rack-aware replica placement (empty: none).",
    ),
];

/// Kafka's older spellings of broker configs, mapped to the canonical one with a unit factor.
static BROKER_ALIASES: &[(&str, &str, i64)] = &[
    ("log.retention.hours", "log.retention.ms", 3_600_000),
    ("log.retention.minutes", "log.retention.ms", 60_000),
    ("log.roll.hours", "log.roll.ms", 3_600_000),
];

/// The table default of broker config `name` as a `T`. The defaults are defined only in the
/// tables; a test calls every accessor, so a default its type cannot hold fails there.
fn broker_default<T: std::str::FromStr>(name: &str) -> T {
    broker_config_type(name)
        .and_then(|(_, default, _)| default.parse().ok())
        .unwrap_or_else(|| panic!("no default of broker config {name} fits its accessor's type"))
}

/// The table default of topic config `name` as a `T` (see [`broker_default`]).
fn topic_default<T: std::str::FromStr>(name: &str) -> T {
    topic_config_def(name)
        .and_then(|d| d.default.parse().ok())
        .unwrap_or_else(|| panic!("no default of topic config {name} fits its type"))
}

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

fn broker_config_type(name: &str) -> Option<(ConfigType, &'static str, &'static [&'static str])> {
    if let Some(d) = TOPIC_CONFIGS.iter().find(|d| d.broker_name == name) {
        return Some((d.config_type, d.default, d.allowed));
    }
    BROKER_ONLY_CONFIGS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, t, default, _)| (*t, *default, &[][..]))
}

/// Checks that `value` parses as `config_type` and is one of `allowed` (when given).
fn validate_value(
    name: &str,
    value: &str,
    config_type: ConfigType,
    allowed: &[&str],
) -> Result<(), BrokerError> {
    let invalid = |why: &str| BrokerError::InvalidConfig(format!("{name}={value}: {why}"));
    match config_type {
        ConfigType::Int => {
            value
                .parse::<i32>()
                .map_err(|_| invalid("expected a 32-bit integer"))?;
        }
        ConfigType::Long => {
            value
                .parse::<i64>()
                .map_err(|_| invalid("expected a 64-bit integer"))?;
        }
        ConfigType::Double => {
            value
                .parse::<f64>()
                .map_err(|_| invalid("expected a number"))?;
        }
        ConfigType::Boolean => {
            if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") {
                return Err(invalid("expected true or false"));
            }
        }
        ConfigType::String | ConfigType::List => {}
    }
    if !allowed.is_empty() {
        let ok = match config_type {
            ConfigType::List => value.split(',').all(|v| allowed.contains(&v.trim())),
            _ => allowed.iter().any(|a| a.eq_ignore_ascii_case(value)),
        };
        if !ok {
            return Err(invalid(&format!(
                "supported values are {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// Validates a set of topic-level overrides (CreateTopics, AlterConfigs).
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), BrokerError> {
    for (name, value) in configs {
        let def = topic_config_def(name)
            .ok_or_else(|| BrokerError::InvalidConfig(format!("unknown topic config '{name}'")))?;
        validate_value(name, value, def.config_type, def.allowed)?;
    }
    let resolved = resolve_numbers(configs);
    if resolved.segment_bytes < 14 {
        return Err(BrokerError::InvalidConfig(
            "segment.bytes must be at least 14".to_string(),
        ));
    }
    Ok(())
}

fn resolve_numbers(configs: &BTreeMap<String, String>) -> LogConfig {
    let broker = BrokerConfig::default();
    broker.log_config(configs)
}

/// Where a config value came from, with Kafka's DescribeConfigs source ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// A config as DescribeConfigs reports it.
#[derive(Clone, Debug)]
pub struct DescribedConfig {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub config_type: ConfigType,
    pub doc: &'static str,
}

/// The node's static broker configuration (`--config KEY=VALUE`), Kafka names.
#[derive(Clone, Debug, Default)]
pub struct BrokerConfig {
    /// Only the values set on the command line; everything else is Kafka's default.
    overrides: BTreeMap<String, String>,
}

impl BrokerConfig {
    /// Parses `KEY=VALUE` pairs, rejecting unknown keys and malformed values so a typo is
    /// caught at start-up instead of silently ignored.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, BrokerError> {
        let mut overrides = BTreeMap::new();
        for (key, value) in pairs {
            let (key, value) = match BROKER_ALIASES.iter().find(|(alias, ..)| *alias == key) {
                Some((_, canonical, factor)) => {
                    let n: i64 = value.parse().map_err(|_| {
                        BrokerError::InvalidConfig(format!("{key}={value}: expected an integer"))
                    })?;
                    (canonical.to_string(), n.saturating_mul(*factor).to_string())
                }
                None => (key.to_string(), value.to_string()),
            };
            let (config_type, _, allowed) = broker_config_type(&key).ok_or_else(|| {
                BrokerError::InvalidConfig(format!("unknown broker config '{key}'"))
            })?;
            validate_value(&key, &value, config_type, allowed)?;
            overrides.insert(key, value);
        }
        Ok(Self { overrides })
    }

    fn get(&self, broker_name: &str) -> Option<&str> {
        self.overrides.get(broker_name).map(String::as_str)
    }

    /// A broker config as a `T`: its override, else its default from the tables above (also
    /// when the override does not fit `T`, as a negative value for an unsigned one).
    fn get_parsed<T: std::str::FromStr>(&self, broker_name: &str) -> T {
        self.get(broker_name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| broker_default(broker_name))
    }

    pub fn auto_create_topics(&self) -> bool {
        self.get_parsed("auto.create.topics.enable")
    }

    pub fn num_partitions(&self) -> i32 {
        self.get_parsed("num.partitions")
    }

    pub fn default_replication_factor(&self) -> i16 {
        self.get_parsed("default.replication.factor")
    }

    pub fn socket_request_max_bytes(&self) -> usize {
        self.get_parsed("socket.request.max.bytes")
    }

    pub fn retention_check_interval_ms(&self) -> u64 {
        self.get_parsed("log.retention.check.interval.ms")
    }

    pub fn log_cleaner_enable(&self) -> bool {
        self.get_parsed("log.cleaner.enable")
    }

    pub fn log_cleaner_backoff_ms(&self) -> u64 {
        self.get_parsed("log.cleaner.backoff.ms")
    }

    pub fn offsets_topic_num_partitions(&self) -> i32 {
        self.get_parsed("offsets.topic.num.partitions")
    }

    pub fn offsets_topic_replication_factor(&self) -> i16 {
        self.get_parsed("offsets.topic.replication.factor")
    }

    pub fn offsets_retention_ms(&self) -> i64 {
        self.get_parsed::<i64>("offsets.retention.minutes") * 60_000
    }

    pub fn offsets_retention_check_interval_ms(&self) -> u64 {
        self.get_parsed("offsets.retention.check.interval.ms")
    }

    pub fn group_initial_rebalance_delay_ms(&self) -> u64 {
        self.get_parsed("group.initial.rebalance.delay.ms")
    }

    pub fn group_min_session_timeout_ms(&self) -> i32 {
        self.get_parsed("group.min.session.timeout.ms")
    }

    pub fn group_max_session_timeout_ms(&self) -> i32 {
        self.get_parsed("group.max.session.timeout.ms")
    }

    pub fn group_max_size(&self) -> usize {
        self.get_parsed("group.max.size")
    }

    pub fn producer_id_expiration_ms(&self) -> i64 {
        self.get_parsed("producer.id.expiration.ms")
    }

    pub fn max_connections(&self) -> usize {
        self.get_parsed("max.connections")
    }

    pub fn queued_max_requests(&self) -> usize {
        self.get_parsed("queued.max.requests")
    }

    pub fn max_connections_per_ip(&self) -> usize {
        self.get_parsed::<i64>("max.connections.per.ip").max(0) as usize
    }

    pub fn max_connections_per_ip_overrides(&self) -> String {
        self.get("max.connections.per.ip.overrides")
            .unwrap_or_default()
            .to_string()
    }

    pub fn connections_max_idle_ms(&self) -> u64 {
        self.get_parsed("connections.max.idle.ms")
    }

    pub fn socket_request_read_timeout_ms(&self) -> u64 {
        self.get_parsed("socket.request.read.timeout.ms")
    }

    pub fn socket_send_buffer_bytes(&self) -> usize {
        self.get_parsed("socket.send.buffer.bytes")
    }

    /// `queued.max.request.bytes`; negative means no memory pool.
    pub fn queued_max_request_bytes(&self) -> i64 {
        self.get_parsed("queued.max.request.bytes")
    }

    pub fn fetch_max_bytes(&self) -> usize {
        self.get_parsed::<i64>("fetch.max.bytes").max(1024) as usize
    }

    pub fn broker_session_timeout_ms(&self) -> u64 {
        self.get_parsed("broker.session.timeout.ms")
    }

    pub fn broker_heartbeat_interval_ms(&self) -> u64 {
        self.get_parsed("broker.heartbeat.interval.ms")
    }

    pub fn offsets_commit_timeout_ms(&self) -> u64 {
        self.get_parsed("offsets.commit.timeout.ms")
    }

    pub fn replica_lag_time_max_ms(&self) -> u64 {
        self.get_parsed("replica.lag.time.max.ms")
    }

    pub fn replica_fetch_wait_max_ms(&self) -> u64 {
        self.get_parsed("replica.fetch.wait.max.ms")
    }

    pub fn replica_fetch_max_bytes(&self) -> usize {
        self.get_parsed("replica.fetch.max.bytes")
    }

    pub fn replica_fetch_response_max_bytes(&self) -> usize {
        self.get_parsed("replica.fetch.response.max.bytes")
    }

    pub fn auto_leader_rebalance_enable(&self) -> bool {
        self.get_parsed("auto.leader.rebalance.enable")
    }

    pub fn leader_imbalance_check_interval_seconds(&self) -> u64 {
        self.get_parsed("leader.imbalance.check.interval.seconds")
    }

    /// `broker.rack`, `None` when unset or empty.
    pub fn broker_rack(&self) -> Option<String> {
        self.get("broker.rack")
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    }

    /// The effective value of a topic config: topic override, then broker config, then Kafka's
    /// default.
    fn effective(&self, def: &TopicConfigDef, topic: &BTreeMap<String, String>) -> DescribedConfig {
        let (value, source) = if let Some(v) = topic.get(def.name) {
            (v.clone(), ConfigSource::DynamicTopic)
        } else if let Some(v) = self.get(def.broker_name) {
            (v.to_string(), ConfigSource::StaticBroker)
        } else {
            (def.default.to_string(), ConfigSource::Default)
        };
        DescribedConfig {
            name: def.name,
            value,
            source,
            config_type: def.config_type,
            doc: def.doc,
        }
    }

    /// Every topic config with its effective value, for DescribeConfigs on a topic.
    pub fn describe_topic(&self, topic: &BTreeMap<String, String>) -> Vec<DescribedConfig> {
        TOPIC_CONFIGS
            .iter()
            .map(|def| self.effective(def, topic))
            .collect()
    }

    /// Every broker config with its value, for DescribeConfigs on a broker.
    pub fn describe_broker(&self) -> Vec<DescribedConfig> {
        let mut out: Vec<DescribedConfig> = BROKER_ONLY_CONFIGS
            .iter()
            .map(|(name, config_type, default, doc)| {
                let (value, source) = match self.get(name) {
                    Some(v) => (v.to_string(), ConfigSource::StaticBroker),
                    None => (default.to_string(), ConfigSource::Default),
                };
                DescribedConfig {
                    name,
                    value,
                    source,
                    config_type: *config_type,
                    doc,
                }
            })
            .collect();
        out.extend(TOPIC_CONFIGS.iter().map(|def| {
            let mut c = self.effective(def, &BTreeMap::new());
            c.name = def.broker_name;
            c
        }));
        out.sort_by_key(|c| c.name);
        out
    }

    /// Resolves the typed log configuration of a topic with the given overrides.
    pub fn log_config(&self, topic: &BTreeMap<String, String>) -> LogConfig {
        let value = |name: &str| {
            let def = topic_config_def(name).expect("known topic config");
            self.effective(def, topic).value
        };
        let long = |name: &str| value(name).parse::<i64>().unwrap_or(i64::MAX);
        let unsigned = |name: &str| u64::try_from(long(name)).unwrap_or(u64::MAX);
        let policy = value("cleanup.policy");
        let has_policy = |p: &str| policy.split(',').any(|v| v.trim().eq_ignore_ascii_case(p));
        LogConfig {
            segment_bytes: unsigned("segment.bytes"),
            segment_ms: unsigned("segment.ms"),
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            index_interval_bytes: u32::try_from(long("index.interval.bytes"))
                .unwrap_or_else(|_| topic_default("index.interval.bytes")),
            max_message_bytes: usize::try_from(long("max.message.bytes"))
                .unwrap_or_else(|_| topic_default("max.message.bytes")),
            flush_messages: unsigned("flush.messages"),
            flush_ms: unsigned("flush.ms"),
            timestamp_type: if value("message.timestamp.type").eq_ignore_ascii_case("LogAppendTime")
            {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            cleanup_delete: has_policy("delete"),
            cleanup_compact: has_policy("compact"),
            min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite())
                .unwrap_or_else(|| topic_default("min.cleanable.dirty.ratio"))
                .clamp(0.0, 1.0),
            delete_retention_ms: long("delete.retention.ms"),
            timestamp_before_max_ms: long("message.timestamp.before.max.ms").max(0),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms").max(0),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
        }
    }

    /// `min.insync.replicas` of a topic: acks=all writes need this many in-sync replicas.
    pub fn min_insync_replicas(&self, topic: &BTreeMap<String, String>) -> usize {
        let def = topic_config_def("min.insync.replicas").expect("known topic config");
        self.effective(def, topic)
            .value
            .parse()
            .unwrap_or_else(|_| topic_default(def.name))
    }

    /// Largest batch any topic accepts by default; the gateway uses it to sanity-check frames.
    pub fn message_max_bytes(&self) -> usize {
        self.get_parsed("message.max.bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topic_override_beats_broker_beats_default() {
        let broker =
            BrokerConfig::from_pairs([("log.retention.ms", "1000"), ("log.segment.bytes", "2048")])
                .unwrap();
        let log = broker.log_config(&map(&[("retention.ms", "5")]));
        assert_eq!(log.retention_ms, 5);
        assert_eq!(log.segment_bytes, 2048);
        assert_eq!(log.index_interval_bytes, 4096);
        let described = broker.describe_topic(&map(&[("retention.ms", "5")]));
        let get = |n: &str| described.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(get("retention.ms").source, ConfigSource::DynamicTopic);
        assert_eq!(get("segment.bytes").source, ConfigSource::StaticBroker);
        assert_eq!(get("segment.ms").source, ConfigSource::Default);
    }

    #[test]
    fn aliases_convert_units() {
        let broker = BrokerConfig::from_pairs([("log.retention.hours", "2")]).unwrap();
        assert_eq!(broker.log_config(&BTreeMap::new()).retention_ms, 7_200_000);
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert!(BrokerConfig::from_pairs([("no.such.thing", "1")]).is_err());
        assert!(BrokerConfig::from_pairs([("num.partitions", "many")]).is_err());
        assert!(validate_topic_configs(&map(&[("retention.ms", "abc")])).is_err());
        assert!(validate_topic_configs(&map(&[("cleanup.policy", "compact,delete")])).is_ok());
        assert!(validate_topic_configs(&map(&[("cleanup.policy", "shred")])).is_err());
        assert!(validate_topic_configs(&map(&[("bogus", "1")])).is_err());
        assert!(
            validate_topic_configs(&map(&[("message.timestamp.type", "LogAppendTime")])).is_ok()
        );
    }

    #[test]
    fn compaction_configs_resolve() {
        let broker = BrokerConfig::from_pairs([("log.cleaner.delete.retention.ms", "5")]).unwrap();
        let log = broker.log_config(&BTreeMap::new());
        assert!(log.cleanup_delete && !log.cleanup_compact);
        assert_eq!(log.delete_retention_ms, 5);
        assert_eq!(log.min_cleanable_dirty_ratio, 0.5);
        assert_eq!(log.min_compaction_lag_ms, 0);
        let log = broker.log_config(&map(&[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "100"),
        ]));
        assert!(!log.cleanup_delete && log.cleanup_compact);
        assert_eq!(log.min_cleanable_dirty_ratio, 0.01);
        assert_eq!(log.min_compaction_lag_ms, 100);
        let both = broker.log_config(&map(&[("cleanup.policy", "compact,delete")]));
        assert!(both.cleanup_delete && both.cleanup_compact);
        assert!(validate_topic_configs(&map(&[("min.cleanable.dirty.ratio", "x")])).is_err());
        assert_eq!(broker.log_cleaner_backoff_ms(), 15_000);
    }

    #[test]
    fn cluster_configs_have_kafkas_defaults() {
        let d = BrokerConfig::default();
        assert_eq!(d.broker_session_timeout_ms(), 9000);
        assert_eq!(d.broker_heartbeat_interval_ms(), 2000);
        assert!(d.auto_leader_rebalance_enable());
        assert_eq!(d.leader_imbalance_check_interval_seconds(), 300);
        assert_eq!(d.broker_rack(), None);
        assert_eq!(d.replica_lag_time_max_ms(), 30_000);
        assert_eq!(d.replica_fetch_wait_max_ms(), 500);
        let c = BrokerConfig::from_pairs([
            ("broker.rack", "r1"),
            ("broker.session.timeout.ms", "500"),
            ("auto.leader.rebalance.enable", "false"),
        ])
        .unwrap();
        assert_eq!(c.broker_rack().as_deref(), Some("r1"));
        assert_eq!(c.broker_session_timeout_ms(), 500);
        assert!(!c.auto_leader_rebalance_enable());
        assert!(BrokerConfig::from_pairs([("broker.heartbeat.interval.ms", "x")]).is_err());
        let described = c.describe_broker();
        let rack = described.iter().find(|c| c.name == "broker.rack").unwrap();
        assert_eq!(rack.value, "r1");
    }

    #[test]
    fn every_default_is_a_valid_value_of_its_type() {
        for d in TOPIC_CONFIGS {
            validate_value(d.name, d.default, d.config_type, d.allowed).unwrap();
        }
        for (name, config_type, default, _) in BROKER_ONLY_CONFIGS {
            validate_value(name, default, *config_type, &[]).unwrap();
        }
    }

    /// Calls every accessor of an empty config: each must yield its table default (and none
    /// may panic on a default its type cannot hold).
    #[test]
    fn accessors_default_to_the_tables() {
        let d = BrokerConfig::default();
        let table = |name: &str| broker_config_type(name).expect(name).1.to_string();
        let cases = [
            (
                "auto.create.topics.enable",
                d.auto_create_topics().to_string(),
            ),
            ("num.partitions", d.num_partitions().to_string()),
            (
                "default.replication.factor",
                d.default_replication_factor().to_string(),
            ),
            (
                "socket.request.max.bytes",
                d.socket_request_max_bytes().to_string(),
            ),
            (
                "log.retention.check.interval.ms",
                d.retention_check_interval_ms().to_string(),
            ),
            ("log.cleaner.enable", d.log_cleaner_enable().to_string()),
            (
                "log.cleaner.backoff.ms",
                d.log_cleaner_backoff_ms().to_string(),
            ),
            (
                "offsets.topic.num.partitions",
                d.offsets_topic_num_partitions().to_string(),
            ),
            (
                "offsets.topic.replication.factor",
                d.offsets_topic_replication_factor().to_string(),
            ),
            (
                "offsets.retention.minutes",
                (d.offsets_retention_ms() / 60_000).to_string(),
            ),
            (
                "offsets.retention.check.interval.ms",
                d.offsets_retention_check_interval_ms().to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                d.group_initial_rebalance_delay_ms().to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                d.group_min_session_timeout_ms().to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                d.group_max_session_timeout_ms().to_string(),
            ),
            ("group.max.size", d.group_max_size().to_string()),
            (
                "producer.id.expiration.ms",
                d.producer_id_expiration_ms().to_string(),
            ),
            ("max.connections", d.max_connections().to_string()),
            ("queued.max.requests", d.queued_max_requests().to_string()),
            (
                "max.connections.per.ip",
                d.max_connections_per_ip().to_string(),
            ),
            (
                "max.connections.per.ip.overrides",
                d.max_connections_per_ip_overrides(),
            ),
            (
                "connections.max.idle.ms",
                d.connections_max_idle_ms().to_string(),
            ),
            (
                "socket.request.read.timeout.ms",
                d.socket_request_read_timeout_ms().to_string(),
            ),
            (
                "socket.send.buffer.bytes",
                d.socket_send_buffer_bytes().to_string(),
            ),
            (
                "queued.max.request.bytes",
                d.queued_max_request_bytes().to_string(),
            ),
            ("fetch.max.bytes", d.fetch_max_bytes().to_string()),
            (
                "broker.session.timeout.ms",
                d.broker_session_timeout_ms().to_string(),
            ),
            (
                "broker.heartbeat.interval.ms",
                d.broker_heartbeat_interval_ms().to_string(),
            ),
            (
                "offsets.commit.timeout.ms",
                d.offsets_commit_timeout_ms().to_string(),
            ),
            (
                "replica.lag.time.max.ms",
                d.replica_lag_time_max_ms().to_string(),
            ),
            (
                "replica.fetch.wait.max.ms",
                d.replica_fetch_wait_max_ms().to_string(),
            ),
            (
                "replica.fetch.max.bytes",
                d.replica_fetch_max_bytes().to_string(),
            ),
            (
                "replica.fetch.response.max.bytes",
                d.replica_fetch_response_max_bytes().to_string(),
            ),
            (
                "auto.leader.rebalance.enable",
                d.auto_leader_rebalance_enable().to_string(),
            ),
            (
                "leader.imbalance.check.interval.seconds",
                d.leader_imbalance_check_interval_seconds().to_string(),
            ),
            ("broker.rack", d.broker_rack().unwrap_or_default()),
            ("message.max.bytes", d.message_max_bytes().to_string()),
            (
                "min.insync.replicas",
                d.min_insync_replicas(&BTreeMap::new()).to_string(),
            ),
        ];
        for (name, got) in cases {
            assert_eq!(got, table(name), "{name}");
        }
        let log = d.log_config(&BTreeMap::new());
        let topic = |name: &str| topic_config_def(name).expect(name).default.to_string();
        for (name, got) in [
            ("segment.bytes", log.segment_bytes.to_string()),
            ("segment.ms", log.segment_ms.to_string()),
            ("retention.ms", log.retention_ms.to_string()),
            ("retention.bytes", log.retention_bytes.to_string()),
            ("index.interval.bytes", log.index_interval_bytes.to_string()),
            ("max.message.bytes", log.max_message_bytes.to_string()),
            ("flush.messages", log.flush_messages.to_string()),
            ("flush.ms", log.flush_ms.to_string()),
            (
                "min.cleanable.dirty.ratio",
                log.min_cleanable_dirty_ratio.to_string(),
            ),
            ("delete.retention.ms", log.delete_retention_ms.to_string()),
            (
                "message.timestamp.before.max.ms",
                log.timestamp_before_max_ms.to_string(),
            ),
            (
                "message.timestamp.after.max.ms",
                log.timestamp_after_max_ms.to_string(),
            ),
            (
                "min.compaction.lag.ms",
                log.min_compaction_lag_ms.to_string(),
            ),
        ] {
            assert_eq!(got, topic(name), "{name}");
        }
    }

    #[test]
    fn log_append_time_resolves() {
        let broker = BrokerConfig::default();
        let log = broker.log_config(&map(&[("message.timestamp.type", "LogAppendTime")]));
        assert_eq!(log.timestamp_type, TimestampType::LogAppendTime);
    }
}
