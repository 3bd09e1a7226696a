//! A cluster client: bootstrap, metadata, per-broker connections and leader routing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    create_partitions_request::CreatePartitionsTopic,
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    describe_configs_request::DescribeConfigsResource,
    fetch_request::{FetchPartition, FetchTopic},
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use runnel_util::Backoff;
use uuid::Uuid;

use crate::connection::{ClientConfig, Connection};
use crate::error::{Error, Result};
use crate::records::{decode_record_batches, encode_record_batch, ConsumedRecord, ProducerRecord};

mod groups;
mod idempotent;
mod pipeline;
pub use groups::{
    decode_consumer_assignment, decode_consumer_subscription, CommittedOffset, GroupDescription,
    GroupMember, ListedGroup,
};
pub use pipeline::ProducePipeline;

// Highest versions this client speaks. Each is handled field-by-field below.
const METADATA_MAX: i16 = 12;
const CREATE_TOPICS_MAX: i16 = 7;
const DELETE_TOPICS_MAX: i16 = 6;
const CREATE_PARTITIONS_MAX: i16 = 3;
const DESCRIBE_CONFIGS_MAX: i16 = 4;
const INCREMENTAL_ALTER_CONFIGS_MAX: i16 = 1;
const PRODUCE_MAX: i16 = 13;
const PRODUCE_MAX_BY_NAME: i16 = 12;
const FETCH_MAX: i16 = 17;
const FETCH_MAX_BY_NAME: i16 = 12;
const LIST_OFFSETS_MAX: i16 = 9;

/// How many times partition and admin requests are retried after retriable errors.
const MAX_RETRIES: u32 = 5;
/// The wait before the first retry, doubled before each next one up to the maximum.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(1600);

/// Kafka's config resource type for topics.
const RESOURCE_TOPIC: i8 = 2;

/// Special timestamps for [`Client::list_offsets`].
pub mod offset_spec {
    /// The earliest offset still in the log (the log start offset).
    pub const EARLIEST: i64 = -2;
    /// The offset the next record will get (the log end offset / high watermark).
    pub const LATEST: i64 = -1;
}

/// Acknowledgement levels for [`Client::produce`].
pub mod acks {
    /// Fire and forget: the broker sends no response.
    pub const NONE: i16 = 0;
    /// Acknowledged once the leader has written the records.
    pub const LEADER: i16 = 1;
    /// Acknowledged once all in-sync replicas have the records.
    pub const ALL: i16 = -1;
}

/// A broker as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// The broker's node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerMetadata {
    /// `host:port`, with brackets around IPv6 literals.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A partition as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// Leader broker id, or -1 when there is none.
    pub leader: i32,
    /// Leader epoch, or -1 when unknown.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
    /// Offline replica broker ids.
    pub offline_replicas: Vec<i32>,
    /// Partition-level error, if any (e.g. LEADER_NOT_AVAILABLE).
    pub error: Option<ResponseError>,
}

/// A topic as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Topic id (Metadata v10+), if the broker sent one.
    pub topic_id: Option<Uuid>,
    /// Whether this is an internal topic (e.g. `__consumer_offsets`).
    pub is_internal: bool,
    /// Topic-level error, if any (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    pub error: Option<ResponseError>,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// The replication factor, taken from the first partition's replica list.
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// The cluster as described by a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Cluster id, if the broker sent one.
    pub cluster_id: Option<String>,
    /// Controller broker id, or -1 when unknown.
    pub controller_id: i32,
    /// Brokers, sorted by node id.
    pub brokers: Vec<BrokerMetadata>,
    /// Topics, sorted by name.
    pub topics: Vec<TopicMetadata>,
}

/// Where a config value comes from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Source unknown.
    Unknown,
    /// A topic-level override.
    DynamicTopic,
    /// A dynamic per-broker config.
    DynamicBroker,
    /// A dynamic cluster-wide broker default.
    DynamicDefaultBroker,
    /// The broker's static configuration file.
    StaticBroker,
    /// The built-in default.
    Default,
    /// A dynamic broker logger config.
    DynamicBrokerLogger,
    /// A client metrics config.
    ClientMetrics,
    /// A group config.
    Group,
    /// A value this client does not know.
    Other(i8),
}

impl ConfigSource {
    /// Maps the wire value.
    pub fn from_i8(v: i8) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::DynamicTopic,
            2 => Self::DynamicBroker,
            3 => Self::DynamicDefaultBroker,
            4 => Self::StaticBroker,
            5 => Self::Default,
            6 => Self::DynamicBrokerLogger,
            7 => Self::ClientMetrics,
            8 => Self::Group,
            other => Self::Other(other),
        }
    }

    /// Kafka's name for the source, e.g. `DYNAMIC_TOPIC_CONFIG`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::DynamicTopic => "DYNAMIC_TOPIC_CONFIG",
            Self::DynamicBroker => "DYNAMIC_BROKER_CONFIG",
            Self::DynamicDefaultBroker => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            Self::StaticBroker => "STATIC_BROKER_CONFIG",
            Self::Default => "DEFAULT_CONFIG",
            Self::DynamicBrokerLogger => "DYNAMIC_BROKER_LOGGER_CONFIG",
            Self::ClientMetrics => "CLIENT_METRICS_CONFIG",
            Self::Group => "GROUP_CONFIG",
            Self::Other(_) => "OTHER",
        }
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One config entry from DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name.
    pub name: String,
    /// Value (`None` for sensitive or unset values).
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether it can be changed.
    pub read_only: bool,
    /// Whether the value is the built-in default.
    pub is_default: bool,
    /// Whether the value is sensitive (and therefore hidden).
    pub is_sensitive: bool,
}

/// The outcome of creating a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// Topic name.
    pub name: String,
    /// Topic id (CreateTopics v7+).
    pub topic_id: Option<Uuid>,
    /// Number of partitions (CreateTopics v5+; -1 if unknown).
    pub num_partitions: i32,
    /// Replication factor (CreateTopics v5+; -1 if unknown).
    pub replication_factor: i16,
}

/// The fetch result for one partition.
#[derive(Debug)]
pub struct FetchedPartition {
    /// Partition index.
    pub partition: i32,
    /// The offset that was requested.
    pub fetch_offset: i64,
    /// The partition's high watermark (-1 if unknown).
    pub high_watermark: i64,
    /// The partition's log start offset (-1 if unknown).
    pub log_start_offset: i64,
    /// Records at or after `fetch_offset` (control records removed).
    pub records: Vec<ConsumedRecord>,
    /// The offset to fetch next.
    pub next_offset: i64,
    /// A partition-level error (e.g. OFFSET_OUT_OF_RANGE); `records` is empty then.
    pub error: Option<Error>,
}

/// One partition's part of a Produce response.
struct ProduceAnswer {
    error_code: i16,
    base_offset: i64,
    message: Option<String>,
}

/// An async Kafka client. Methods take `&mut self`; use one client per task.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    bootstrap: Vec<String>,
    /// A connection to any broker, for cluster-wide requests (Metadata, DescribeConfigs).
    any: Option<Connection>,
    conns: HashMap<i32, Connection>,
    brokers: BTreeMap<i32, BrokerMetadata>,
    topics: HashMap<String, TopicMetadata>,
    controller_id: i32,
    cluster_id: Option<String>,
    /// Coordinator broker id by group id, from FindCoordinator.
    coordinators: HashMap<String, i32>,
}

/// A Produce request carrying `batch` for one partition, at `version` (by topic id from v13).
fn produce_request(
    topic: &str,
    topic_id: Option<Uuid>,
    partition: i32,
    batch: Bytes,
    acks: i16,
    timeout_ms: i32,
    version: i16,
) -> ProduceRequest {
    let mut topic_data =
        TopicProduceData::default().with_partition_data(vec![PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(batch))]);
    if version >= 13 {
        topic_data = topic_data.with_topic_id(topic_id.unwrap_or_default());
    } else {
        topic_data = topic_data.with_name(TopicName(StrBytes::from_string(topic.to_owned())));
    }
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![topic_data])
}

/// The answer for `partition` in a Produce response of `version`.
fn produce_answer(
    response: &ProduceResponse,
    topic: &str,
    topic_id: Option<Uuid>,
    partition: i32,
    version: i16,
    addr: &str,
) -> Result<ProduceAnswer> {
    let p = response
        .responses
        .iter()
        .filter(|t| {
            if version >= 13 {
                Some(t.topic_id) == topic_id
            } else {
                t.name.0.as_str() == topic
            }
        })
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .ok_or_else(|| Error::protocol(addr, "Produce response lacks the partition"))?;
    Ok(ProduceAnswer {
        error_code: p.error_code,
        base_offset: p.base_offset,
        message: p.error_message.as_ref().map(|m| m.to_string()),
    })
}

/// Parses a comma-separated `host:port` list.
pub fn parse_bootstrap(list: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = |a: &String| {
        a.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if addrs.is_empty() || !addrs.iter().all(valid) {
        return Err(Error::InvalidBootstrap(list.to_owned()));
    }
    Ok(addrs)
}

impl Client {
    /// Connects to the first reachable server of a comma-separated `host:port` list, with the
    /// default configuration, and loads the broker list.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        Self::connect_with_config(bootstrap, ClientConfig::default()).await
    }

    /// Like [`Client::connect`] with explicit settings.
    pub async fn connect_with_config(bootstrap: &str, config: ClientConfig) -> Result<Self> {
        let bootstrap = parse_bootstrap(bootstrap)?;
        let mut client = Client {
            config,
            bootstrap,
            any: None,
            conns: HashMap::new(),
            brokers: BTreeMap::new(),
            topics: HashMap::new(),
            controller_id: -1,
            cluster_id: None,
            coordinators: HashMap::new(),
        };
        client.ensure_any().await?;
        client.metadata(Some(&[])).await?;
        Ok(client)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Brokers known from the last Metadata response.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerMetadata> {
        self.brokers.values()
    }

    /// Cluster id from the last Metadata response.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Controller id from the last Metadata response (-1 if unknown).
    pub fn controller_id(&self) -> i32 {
        self.controller_id
    }

    /// The version range the connected broker supports for `key`, if any.
    pub async fn broker_versions(&mut self, key: ApiKey) -> Result<Option<VersionRange>> {
        Ok(self.any_conn().await?.broker_versions(key))
    }

    // ---------------------------------------------------------------- connections

    async fn ensure_any(&mut self) -> Result<()> {
        if self.any.as_ref().is_some_and(|c| !c.is_broken()) {
            return Ok(());
        }
        self.any = None;
        let mut candidates: Vec<String> = self.bootstrap.clone();
        for b in self.brokers.values() {
            let addr = b.addr();
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
        let mut first_err = None;
        for addr in candidates {
            match Connection::connect(&addr, &self.config).await {
                Ok(c) => {
                    self.any = Some(c);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cannot connect");
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| Error::InvalidBootstrap(String::new())))
    }

    async fn any_conn(&mut self) -> Result<&mut Connection> {
        self.ensure_any().await?;
        Ok(self.any.as_mut().expect("ensure_any connected"))
    }

    async fn ensure_broker(&mut self, id: i32) -> Result<()> {
        if self.conns.get(&id).is_some_and(|c| !c.is_broken()) {
            return Ok(());
        }
        self.conns.remove(&id);
        let addr = match self.brokers.get(&id) {
            Some(b) => b.addr(),
            None => {
                return Err(Error::protocol(
                    "",
                    format!("broker {id} is not in the cluster metadata"),
                ))
            }
        };
        let conn = Connection::connect(&addr, &self.config).await?;
        self.conns.insert(id, conn);
        Ok(())
    }

    async fn broker_conn(&mut self, id: i32) -> Result<&mut Connection> {
        self.ensure_broker(id).await?;
        Ok(self.conns.get_mut(&id).expect("ensure_broker connected"))
    }

    /// The connection for admin requests: the controller if known and reachable, else any.
    async fn admin_conn(&mut self) -> Result<&mut Connection> {
        let controller = self.controller_id;
        if controller >= 0
            && self.brokers.contains_key(&controller)
            && self.ensure_broker(controller).await.is_ok()
        {
            return self.broker_conn(controller).await;
        }
        self.any_conn().await
    }

    /// The backoff of one request's retries, at most `max_retries` of them.
    fn retries(max_retries: u32) -> Backoff {
        Backoff::new(RETRY_BACKOFF, RETRY_BACKOFF_MAX).with_max_retries(max_retries)
    }

    /// Waits before retrying after `error`; false, without waiting, once the retries are used up.
    async fn backoff(retries: &mut Backoff, error: &Error) -> bool {
        let attempt = retries.retries();
        let Some(delay) = retries.next_delay() else {
            return false;
        };
        tracing::debug!(%error, attempt, ?delay, "retrying");
        tokio::time::sleep(delay).await;
        true
    }

    /// Whether `error` is worth a retry (a timed-out request is not retried).
    fn should_retry(error: &Error) -> bool {
        match error {
            Error::Timeout { .. } => false,
            e => e.is_retriable(),
        }
    }

    // ---------------------------------------------------------------- metadata

    /// Fetches metadata for `topics` (`None` = all topics; `Some(&[])` = brokers only).
    /// Topics that do not exist are returned with `error` set.
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> Result<Metadata> {
        let conn = self.any_conn().await?;
        let version = conn.negotiate::<MetadataRequest>(METADATA_MAX)?;
        if version < 1 {
            return Err(Error::UnsupportedVersion {
                addr: conn.addr().to_owned(),
                api: ApiKey::Metadata,
                ours: VersionRange {
                    min: 1,
                    max: METADATA_MAX,
                },
                theirs: conn.broker_versions(ApiKey::Metadata),
            });
        }
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }))
            // v0-3 cannot express "do not auto-create"; the library insists on `true` there.
            .with_allow_auto_topic_creation(version < 4);
        let response = conn.send_versioned(&request, version).await?;
        let metadata = convert_metadata(response);
        self.absorb_metadata(&metadata, topics.is_none());
        Ok(metadata)
    }

    fn absorb_metadata(&mut self, metadata: &Metadata, all_topics: bool) {
        if !metadata.brokers.is_empty() {
            self.brokers = metadata
                .brokers
                .iter()
                .map(|b| (b.node_id, b.clone()))
                .collect();
            // Drop connections to brokers that moved or left.
            let brokers = &self.brokers;
            self.conns.retain(|id, c| {
                brokers
                    .get(id)
                    .is_some_and(|b| b.addr() == c.addr() && !c.is_broken())
            });
        }
        self.controller_id = metadata.controller_id;
        if metadata.cluster_id.is_some() {
            self.cluster_id.clone_from(&metadata.cluster_id);
        }
        if all_topics {
            self.topics.clear();
        }
        for t in &metadata.topics {
            if t.error.is_none() {
                self.topics.insert(t.name.clone(), t.clone());
            } else {
                self.topics.remove(&t.name);
            }
        }
    }

    /// Fetches metadata for one topic; errors if it does not exist. Retries briefly while the
    /// topic has no leaders yet (just after creation).
    pub async fn topic_metadata(&mut self, topic: &str) -> Result<TopicMetadata> {
        let mut retries = Self::retries(MAX_RETRIES);
        loop {
            let md = self.metadata(Some(&[topic.to_owned()])).await?;
            let t = md
                .topics
                .into_iter()
                .find(|t| t.name == topic)
                .ok_or_else(|| Error::Kafka {
                    error: ResponseError::UnknownTopicOrPartition,
                    topic: Some(topic.to_owned()),
                    partition: None,
                    message: None,
                })?;
            let err = match t.error {
                None => return Ok(t),
                Some(error) => Error::Kafka {
                    error,
                    topic: Some(topic.to_owned()),
                    partition: None,
                    message: None,
                },
            };
            let retriable = err.kafka_error() != Some(ResponseError::UnknownTopicOrPartition)
                && Self::should_retry(&err);
            if !retriable || !Self::backoff(&mut retries, &err).await {
                return Err(err);
            }
        }
    }

    async fn cached_topic(&mut self, topic: &str) -> Result<TopicMetadata> {
        if let Some(t) = self.topics.get(topic) {
            return Ok(t.clone());
        }
        self.topic_metadata(topic).await
    }

    async fn leader_for(&mut self, topic: &str, partition: i32) -> Result<i32> {
        let t = self.cached_topic(topic).await?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| Error::Kafka {
                error: ResponseError::UnknownTopicOrPartition,
                topic: Some(topic.to_owned()),
                partition: Some(partition),
                message: Some(format!("the topic has {} partitions", t.partitions.len())),
            })?;
        if p.leader < 0 || !self.brokers.contains_key(&p.leader) {
            return Err(Error::NoLeader {
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(p.leader)
    }

    /// Forgets cached metadata for `topic` and reloads it; a missing topic is an error.
    async fn refresh_topic(&mut self, topic: &str) -> Result<()> {
        self.topics.remove(topic);
        self.topic_metadata(topic).await.map(|_| ())
    }

    /// After a retriable partition error and its backoff: reload metadata. Returns the error to
    /// give up with, if reloading shows the topic is gone.
    async fn recover(&mut self, topic: &str) -> Result<()> {
        match self.refresh_topic(topic).await {
            Err(e) if e.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => Err(e),
            _ => Ok(()),
        }
    }

    /// Runs a request on a partition of `topic`, retrying retriable errors (see
    /// [`Client::should_retry`]) up to [`MAX_RETRIES`] times, each after a backoff and
    /// [`Client::recover`].
    async fn with_partition_retries<T>(
        &mut self,
        topic: &str,
        mut request: impl AsyncFnMut(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let mut retries = Self::retries(MAX_RETRIES);
        loop {
            match request(self).await {
                Err(e) if Self::should_retry(&e) && Self::backoff(&mut retries, &e).await => {
                    self.recover(topic).await?;
                }
                other => return other,
            }
        }
    }

    // ---------------------------------------------------------------- admin

    /// Runs one admin request on the admin connection (see [`Client::admin_conn`]). `request`
    /// sends it on the connection it is given and interprets the response. Admin-retriable
    /// failures (see [`is_admin_retriable`]) are retried up to [`MAX_RETRIES`] times, each
    /// after a backoff and a reload of the broker list (which may name a new controller).
    async fn admin_request<T>(
        &mut self,
        mut request: impl AsyncFnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let mut retries = Self::retries(MAX_RETRIES);
        loop {
            let result = match self.admin_conn().await {
                Ok(conn) => request(conn).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e)
                    if is_admin_retriable(&e)
                        && Self::should_retry(&e)
                        && Self::backoff(&mut retries, &e).await =>
                {
                    let _ = self.metadata(Some(&[])).await;
                }
                other => return other,
            }
        }
    }

    /// Creates a topic. `partitions` and `replication_factor` may be -1 for the broker default.
    pub async fn create_topics(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<CreatedTopic> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )]);
        self.admin_request(async |conn| {
            let response = conn.send(request.clone(), CREATE_TOPICS_MAX).await?;
            let t = response
                .topics
                .into_iter()
                .find(|t| t.name.0.as_str() == name)
                .ok_or_else(|| {
                    Error::protocol(conn.addr(), "CreateTopics response lacks the topic")
                })?;
            if let Some(e) =
                Error::from_code(t.error_code, Some(name), None, t.error_message.as_deref())
            {
                return Err(e);
            }
            Ok(CreatedTopic {
                name: name.to_owned(),
                topic_id: non_nil(t.topic_id),
                num_partitions: t.num_partitions,
                replication_factor: t.replication_factor,
            })
        })
        .await
    }

    /// Deletes topics. Returns one result per requested name, in order.
    pub async fn delete_topics(&mut self, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let timeout_ms = self.timeout_ms();
        let response = self
            .admin_request(async |conn| {
                let version = conn.negotiate::<DeleteTopicsRequest>(DELETE_TOPICS_MAX)?;
                let topic_names = || {
                    names
                        .iter()
                        .map(|n| TopicName(StrBytes::from_string(n.clone())))
                };
                let request = if version >= 6 {
                    DeleteTopicsRequest::default().with_topics(
                        topic_names()
                            .map(|n| DeleteTopicState::default().with_name(Some(n)))
                            .collect(),
                    )
                } else {
                    DeleteTopicsRequest::default().with_topic_names(topic_names().collect())
                }
                .with_timeout_ms(timeout_ms);
                conn.send_versioned(&request, version).await
            })
            .await?;
        let mut by_name: HashMap<String, (i16, Option<String>)> = response
            .responses
            .into_iter()
            .filter_map(|r| {
                r.name.map(|n| {
                    (
                        n.0.to_string(),
                        (r.error_code, r.error_message.map(|m| m.to_string())),
                    )
                })
            })
            .collect();
        let results = names
            .iter()
            .map(|n| {
                let r = match by_name.remove(n) {
                    Some((code, msg)) => {
                        match Error::from_code(code, Some(n), None, msg.as_deref()) {
                            Some(e) => Err(e),
                            None => {
                                self.topics.remove(n);
                                Ok(())
                            }
                        }
                    }
                    None => Err(Error::protocol(
                        "",
                        format!("DeleteTopics response lacks topic '{n}'"),
                    )),
                };
                (n.clone(), r)
            })
            .collect();
        Ok(results)
    }

    /// Increases a topic's partition count to `total_count`.
    pub async fn create_partitions(&mut self, name: &str, total_count: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                .with_count(total_count)]);
        let result = self
            .admin_request(async |conn| {
                let response = conn.send(request.clone(), CREATE_PARTITIONS_MAX).await?;
                let r = response
                    .results
                    .into_iter()
                    .find(|r| r.name.0.as_str() == name)
                    .ok_or_else(|| {
                        Error::protocol(conn.addr(), "CreatePartitions response lacks the topic")
                    })?;
                match Error::from_code(r.error_code, Some(name), None, r.error_message.as_deref()) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            })
            .await;
        self.topics.remove(name);
        result
    }

    /// All configs of a topic.
    pub async fn describe_configs(&mut self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_owned()))
                .with_configuration_keys(None),
        ]);
        let conn = self.any_conn().await?;
        let response = conn.send(request, DESCRIBE_CONFIGS_MAX).await?;
        let result = response
            .results
            .into_iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| {
                Error::protocol(conn.addr(), "DescribeConfigs response lacks the topic")
            })?;
        if let Some(e) = Error::from_code(
            result.error_code,
            Some(topic),
            None,
            result.error_message.as_deref(),
        ) {
            return Err(e);
        }
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .into_iter()
            .map(|c| {
                let source = ConfigSource::from_i8(c.config_source);
                ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    source,
                    read_only: c.read_only,
                    is_default: source == ConfigSource::Default,
                    is_sensitive: c.is_sensitive,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Sets and deletes (reverts to default) topic configs in one IncrementalAlterConfigs.
    pub async fn incremental_alter_configs(
        &mut self,
        topic: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        const OP_SET: i8 = 0;
        const OP_DELETE: i8 = 1;
        let configs = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(OP_SET)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .chain(delete.iter().map(|k| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(OP_DELETE)
                    .with_value(None)
            }))
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_owned()))
                .with_configs(configs),
        ]);
        self.admin_request(async |conn| {
            let response = conn
                .send(request.clone(), INCREMENTAL_ALTER_CONFIGS_MAX)
                .await?;
            let r = response
                .responses
                .into_iter()
                .find(|r| r.resource_name.as_str() == topic)
                .ok_or_else(|| {
                    Error::protocol(
                        conn.addr(),
                        "IncrementalAlterConfigs response lacks the topic",
                    )
                })?;
            match Error::from_code(r.error_code, Some(topic), None, r.error_message.as_deref()) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
        .await
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX)
    }

    // ---------------------------------------------------------------- produce

    /// Produces `records` to one partition as a single batch. Returns the base offset the
    /// broker assigned (-1 with `acks = 0`, which gets no response).
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[ProducerRecord],
        acks: i16,
        compression: Compression,
    ) -> Result<i64> {
        let batch = encode_batch_for(records, acks, compression)?;
        self.with_partition_retries(topic, async |client| {
            client
                .produce_once(topic, partition, batch.clone(), acks)
                .await
        })
        .await
    }

    /// Like [`Client::produce`] but a single attempt: no retries, so a caller that counts
    /// acknowledgements knows exactly which attempts were sent. After a retriable error,
    /// [`Client::topic_metadata`] reloads the leaders.
    pub async fn produce_attempt(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[ProducerRecord],
        acks: i16,
        compression: Compression,
    ) -> Result<i64> {
        let batch = encode_batch_for(records, acks, compression)?;
        self.produce_once(topic, partition, batch, acks).await
    }

    async fn produce_once(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> Result<i64> {
        let Some(answer) = self.send_produce(topic, partition, batch, acks).await? else {
            return Ok(-1);
        };
        match Error::from_code(
            answer.error_code,
            Some(topic),
            Some(partition),
            answer.message.as_deref(),
        ) {
            Some(e) => Err(e),
            None => Ok(answer.base_offset),
        }
    }

    /// Sends one Produce request with one batch for one partition to its leader. Returns the
    /// partition's answer, or `None` with `acks = 0` (no response).
    async fn send_produce(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> Result<Option<ProduceAnswer>> {
        let leader = self.leader_for(topic, partition).await?;
        let topic_id = self.topics.get(topic).and_then(|t| t.topic_id);
        let timeout_ms = self.timeout_ms();
        let conn = self.broker_conn(leader).await?;
        let max = if topic_id.is_some() {
            PRODUCE_MAX
        } else {
            PRODUCE_MAX_BY_NAME
        };
        let version = conn.negotiate::<ProduceRequest>(max)?;
        let request = produce_request(topic, topic_id, partition, batch, acks, timeout_ms, version);
        if acks == 0 {
            conn.send_without_response(&request, version).await?;
            return Ok(None);
        }
        let response = conn.send_versioned(&request, version).await?;
        produce_answer(&response, topic, topic_id, partition, version, conn.addr()).map(Some)
    }

    // ---------------------------------------------------------------- fetch

    /// Fetches records from one partition starting at `offset`. Returns an empty vector when
    /// nothing arrived within `max_wait_ms`.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Vec<ConsumedRecord>> {
        self.with_partition_retries(topic, async |client| {
            let mut fetched = client
                .fetch_partitions(topic, &[(partition, offset)], max_wait_ms, max_bytes)
                .await?;
            let p = fetched
                .pop()
                .ok_or_else(|| Error::protocol("", "Fetch response lacks the partition"))?;
            match p.error {
                Some(e) => Err(e),
                None => Ok(p.records),
            }
        })
        .await
    }

    /// Fetches several partitions of one topic, one request per leader. Partition-level
    /// errors are returned in [`FetchedPartition::error`] (and refresh the cached metadata
    /// when retriable); request-level failures are returned as `Err`.
    pub async fn fetch_partitions(
        &mut self,
        topic: &str,
        partitions: &[(i32, i64)],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Vec<FetchedPartition>> {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        let mut out = Vec::with_capacity(partitions.len());
        for &(partition, offset) in partitions {
            match self.leader_for(topic, partition).await {
                Ok(leader) => by_leader
                    .entry(leader)
                    .or_default()
                    .push((partition, offset)),
                Err(e @ Error::NoLeader { .. }) => out.push(FetchedPartition {
                    partition,
                    fetch_offset: offset,
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: Vec::new(),
                    next_offset: offset,
                    error: Some(e),
                }),
                Err(e) => return Err(e),
            }
        }
        for (leader, parts) in by_leader {
            match self
                .fetch_from_leader(topic, leader, &parts, max_wait_ms, max_bytes)
                .await
            {
                Ok(mut v) => out.append(&mut v),
                Err(e) => {
                    self.topics.remove(topic);
                    return Err(e);
                }
            }
        }
        if out
            .iter()
            .any(|p| p.error.as_ref().is_some_and(Error::is_retriable))
        {
            self.topics.remove(topic);
        }
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }

    async fn fetch_from_leader(
        &mut self,
        topic: &str,
        leader: i32,
        parts: &[(i32, i64)],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Vec<FetchedPartition>> {
        let topic_id = self.topics.get(topic).and_then(|t| t.topic_id);
        let conn = self.broker_conn(leader).await?;
        let max = if topic_id.is_some() {
            FETCH_MAX
        } else {
            FETCH_MAX_BY_NAME
        };
        let version = conn.negotiate::<FetchRequest>(max)?;
        let by_id = version >= 13;
        let mut fetch_topic = FetchTopic::default().with_partitions(
            parts
                .iter()
                .map(|&(partition, offset)| {
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max_bytes)
                })
                .collect(),
        );
        if by_id {
            fetch_topic = fetch_topic.with_topic_id(topic_id.unwrap_or_default());
        } else {
            fetch_topic =
                fetch_topic.with_topic(TopicName(StrBytes::from_string(topic.to_owned())));
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_topic]);
        let extra = Duration::from_millis(u64::try_from(max_wait_ms).unwrap_or(0));
        let response = conn
            .send_versioned_with_extra_wait(&request, version, extra)
            .await?;
        if let Some(e) = Error::from_code(response.error_code, Some(topic), None, None) {
            return Err(e);
        }
        let mut out = Vec::with_capacity(parts.len());
        for t in response.responses {
            let matches = if by_id {
                Some(t.topic_id) == topic_id
            } else {
                t.topic.0.as_str() == topic
            };
            if !matches {
                continue;
            }
            for p in t.partitions {
                let Some(&(_, fetch_offset)) =
                    parts.iter().find(|(idx, _)| *idx == p.partition_index)
                else {
                    continue;
                };
                let mut fetched = FetchedPartition {
                    partition: p.partition_index,
                    fetch_offset,
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                    records: Vec::new(),
                    next_offset: fetch_offset,
                    error: Error::from_code(
                        p.error_code,
                        Some(topic),
                        Some(p.partition_index),
                        None,
                    ),
                };
                if fetched.error.is_none() {
                    if let Some(data) = p.records {
                        match decode_record_batches(data, fetch_offset) {
                            Ok(decoded) => {
                                fetched.next_offset = decoded
                                    .next_offset
                                    .unwrap_or(fetch_offset)
                                    .max(fetch_offset);
                                fetched.records = decoded.records;
                            }
                            Err(e) => fetched.error = Some(e),
                        }
                    }
                }
                out.push(fetched);
            }
        }
        for &(partition, offset) in parts {
            if !out.iter().any(|p| p.partition == partition) {
                out.push(FetchedPartition {
                    partition,
                    fetch_offset: offset,
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: Vec::new(),
                    next_offset: offset,
                    error: Some(Error::protocol(
                        conn.addr(),
                        format!("Fetch response lacks partition {partition}"),
                    )),
                });
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- list offsets

    /// The offset for `timestamp` in one partition: [`offset_spec::EARLIEST`] (-2) gives the
    /// log start offset, [`offset_spec::LATEST`] (-1) the log end offset, a real timestamp the
    /// first offset with a timestamp at or after it (-1 if none).
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64> {
        self.with_partition_retries(topic, async |client| {
            client.list_offsets_once(topic, partition, timestamp).await
        })
        .await
    }

    /// Like [`Client::list_offsets`] but a single attempt, without retries (and so usable
    /// from spawned tasks). After a retriable error, [`Client::topic_metadata`] reloads the
    /// leaders.
    pub async fn list_offsets_attempt(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64> {
        self.list_offsets_once(topic, partition, timestamp).await
    }

    async fn list_offsets_once(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64> {
        let leader = self.leader_for(topic, partition).await?;
        let timeout_ms = self.timeout_ms();
        let conn = self.broker_conn(leader).await?;
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_isolation_level(0)
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let response = conn.send(request, LIST_OFFSETS_MAX).await?;
        let p = response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                Error::protocol(conn.addr(), "ListOffsets response lacks the partition")
            })?;
        if let Some(e) = Error::from_code(p.error_code, Some(topic), Some(partition), None) {
            return Err(e);
        }
        Ok(p.offset)
    }
}

fn is_admin_retriable(e: &Error) -> bool {
    match e {
        Error::Kafka { error, .. } => matches!(
            error,
            ResponseError::NotController
                | ResponseError::RequestTimedOut
                | ResponseError::CoordinatorLoadInProgress
        ),
        Error::Io { .. } => true,
        _ => false,
    }
}

fn non_nil(id: Uuid) -> Option<Uuid> {
    (!id.is_nil()).then_some(id)
}

fn convert_metadata(r: MetadataResponse) -> Metadata {
    let mut brokers: Vec<BrokerMetadata> = r
        .brokers
        .into_iter()
        .map(|b| BrokerMetadata {
            node_id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.map(|r| r.to_string()),
        })
        .collect();
    brokers.sort_by_key(|b| b.node_id);
    let mut topics: Vec<TopicMetadata> = r
        .topics
        .into_iter()
        .filter_map(|t| {
            let name = t.name?.0.to_string();
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .into_iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error: ResponseError::try_from_code(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            Some(TopicMetadata {
                name,
                topic_id: non_nil(t.topic_id),
                is_internal: t.is_internal,
                error: ResponseError::try_from_code(t.error_code),
                partitions,
            })
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Metadata {
        cluster_id: r.cluster_id.map(|c| c.to_string()),
        controller_id: r.controller_id.0,
        brokers,
        topics,
    }
}

/// Checks `acks` and encodes `records` as one batch for a produce request.
fn encode_batch_for(
    records: &[ProducerRecord],
    acks: i16,
    compression: Compression,
) -> Result<Bytes> {
    if !matches!(acks, -1..=1) {
        return Err(Error::InvalidArgument(format!(
            "acks must be -1 (all), 0 or 1, not {acks}"
        )));
    }
    encode_record_batch(records, compression)
}

/// The request versions this client speaks, as `(api, min, max)`; for diagnostics.
pub fn client_versions() -> Vec<(ApiKey, VersionRange)> {
    fn range<R: Message>(max: i16) -> VersionRange {
        VersionRange {
            min: R::VERSIONS.min,
            max,
        }
    }
    vec![
        (ApiKey::Metadata, range::<MetadataRequest>(METADATA_MAX)),
        (
            ApiKey::CreateTopics,
            range::<CreateTopicsRequest>(CREATE_TOPICS_MAX),
        ),
        (
            ApiKey::DeleteTopics,
            range::<DeleteTopicsRequest>(DELETE_TOPICS_MAX),
        ),
        (
            ApiKey::CreatePartitions,
            range::<CreatePartitionsRequest>(CREATE_PARTITIONS_MAX),
        ),
        (
            ApiKey::DescribeConfigs,
            range::<DescribeConfigsRequest>(DESCRIBE_CONFIGS_MAX),
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            range::<IncrementalAlterConfigsRequest>(INCREMENTAL_ALTER_CONFIGS_MAX),
        ),
        (ApiKey::Produce, range::<ProduceRequest>(PRODUCE_MAX)),
        (ApiKey::Fetch, range::<FetchRequest>(FETCH_MAX)),
        (
            ApiKey::ListOffsets,
            range::<ListOffsetsRequest>(LIST_OFFSETS_MAX),
        ),
        (
            ApiKey::InitProducerId,
            range::<kafka_protocol::messages::InitProducerIdRequest>(
                idempotent::INIT_PRODUCER_ID_MAX,
            ),
        ),
        (
            ApiKey::FindCoordinator,
            range::<kafka_protocol::messages::FindCoordinatorRequest>(groups::FIND_COORDINATOR_MAX),
        ),
        (
            ApiKey::ListGroups,
            range::<kafka_protocol::messages::ListGroupsRequest>(groups::LIST_GROUPS_MAX),
        ),
        (
            ApiKey::DescribeGroups,
            range::<kafka_protocol::messages::DescribeGroupsRequest>(groups::DESCRIBE_GROUPS_MAX),
        ),
        (
            ApiKey::OffsetFetch,
            range::<kafka_protocol::messages::OffsetFetchRequest>(groups::OFFSET_FETCH_MAX),
        ),
        (
            ApiKey::OffsetCommit,
            range::<kafka_protocol::messages::OffsetCommitRequest>(groups::OFFSET_COMMIT_MAX),
        ),
        (
            ApiKey::DeleteGroups,
            range::<kafka_protocol::messages::DeleteGroupsRequest>(groups::DELETE_GROUPS_MAX),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_parsing() {
        assert_eq!(
            parse_bootstrap("a:1, b:2").unwrap(),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
        assert_eq!(
            parse_bootstrap("[::1]:9092").unwrap(),
            vec!["[::1]:9092".to_owned()]
        );
        assert!(parse_bootstrap("").is_err());
        assert!(parse_bootstrap("localhost").is_err());
        assert!(parse_bootstrap("localhost:notaport").is_err());
    }

    #[test]
    fn broker_addr_brackets_ipv6() {
        let b = BrokerMetadata {
            node_id: 1,
            host: "::1".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(b.addr(), "[::1]:9092");
    }

    #[test]
    fn config_sources() {
        assert_eq!(ConfigSource::from_i8(1).as_str(), "DYNAMIC_TOPIC_CONFIG");
        assert_eq!(ConfigSource::from_i8(5), ConfigSource::Default);
        assert_eq!(ConfigSource::from_i8(42), ConfigSource::Other(42));
    }

    #[test]
    fn client_versions_are_within_library_ranges() {
        for (api, range) in client_versions() {
            assert!(range.min <= range.max, "{api:?}");
            assert!(range.max <= api.valid_versions().max, "{api:?}");
        }
    }
}
