//! Consumer-group administration: FindCoordinator, ListGroups, DescribeGroups, OffsetFetch,
//! OffsetCommit and DeleteGroups, plus decoding of the consumer protocol's assignment and
//! subscription bytes.
//!
//! Every group request goes to the group's coordinator, found with FindCoordinator and
//! cached per group. Coordinator errors (COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
//! COORDINATOR_LOAD_IN_PROGRESS) and broken connections make the client forget the
//! coordinator, back off and ask again.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    },
    offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponsePartitions},
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};
use kafka_protocol::ResponseError;
use runnel_util::Backoff;

use super::{BrokerMetadata, Client};
use crate::connection::Connection;
use crate::error::{Error, Result};

pub(super) const FIND_COORDINATOR_MAX: i16 = 6;
pub(super) const LIST_GROUPS_MAX: i16 = 5;
pub(super) const DESCRIBE_GROUPS_MAX: i16 = 6;
pub(super) const OFFSET_FETCH_MAX: i16 = 9;
pub(super) const OFFSET_COMMIT_MAX: i16 = 9;
pub(super) const DELETE_GROUPS_MAX: i16 = 2;

/// How often a group request is retried after coordinator errors. The first FindCoordinator
/// on a fresh cluster creates `__consumer_offsets`, which can take a few seconds.
const GROUP_MAX_RETRIES: u32 = 10;

/// FindCoordinator key type for consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

/// A group as listed by ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub group_id: String,
    /// The protocol type, `consumer` for Kafka consumers (empty for groups that only store
    /// offsets).
    pub protocol_type: String,
    /// The state (ListGroups v4+), e.g. `Stable` or `Empty`.
    pub state: Option<String>,
}

/// A member of a group as described by DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id the coordinator assigned.
    pub member_id: String,
    /// The static member id (`group.instance.id`), if any.
    pub group_instance_id: Option<String>,
    /// The member's client id.
    pub client_id: String,
    /// The member's host as the coordinator saw it (e.g. `/127.0.0.1`).
    pub client_host: String,
    /// The raw protocol metadata (the subscription for consumers).
    pub metadata: Bytes,
    /// The raw assignment bytes.
    pub assignment: Bytes,
}

impl GroupMember {
    /// The decoded assignment, for members of `consumer` groups: topics with their
    /// partitions, sorted.
    pub fn consumer_assignment(&self) -> Result<Vec<(String, Vec<i32>)>> {
        decode_consumer_assignment(&self.assignment)
    }

    /// The decoded subscription (topic names), for members of `consumer` groups.
    pub fn consumer_subscription(&self) -> Result<Vec<String>> {
        decode_consumer_subscription(&self.metadata)
    }
}

/// A group as described by DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// The state: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    /// The protocol type (`consumer` for Kafka consumers).
    pub protocol_type: String,
    /// The chosen protocol (for consumers, the assignor, e.g. `range`); empty unless stable.
    pub protocol: String,
    /// Members, sorted by member id.
    pub members: Vec<GroupMember>,
    /// The coordinator that answered.
    pub coordinator: BrokerMetadata,
}

/// A committed offset from OffsetFetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset (the next record the group will read).
    pub offset: i64,
    /// The leader epoch of the committed record, -1 if unknown.
    pub leader_epoch: i32,
    /// The commit's metadata string.
    pub metadata: Option<String>,
}

/// Decodes a `ConsumerProtocolAssignment` (a version, then topics with partitions). Empty
/// bytes, as members have during a rebalance, decode to no partitions. Versions newer than
/// this client knows are read as the newest it knows: the consumer protocol only ever adds
/// fields at the end.
pub fn decode_consumer_assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>> {
    let Some(a) = decode_consumer_message::<ConsumerProtocolAssignment>(bytes, "assignment")?
    else {
        return Ok(Vec::new());
    };
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in a.assigned_partitions {
        by_topic
            .entry(tp.topic.0.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    Ok(by_topic
        .into_iter()
        .map(|(t, mut ps)| {
            ps.sort_unstable();
            ps.dedup();
            (t, ps)
        })
        .collect())
}

/// Decodes the topic names of a `ConsumerProtocolSubscription` (sorted).
pub fn decode_consumer_subscription(bytes: &[u8]) -> Result<Vec<String>> {
    let Some(s) = decode_consumer_message::<ConsumerProtocolSubscription>(bytes, "subscription")?
    else {
        return Ok(Vec::new());
    };
    let mut topics: Vec<String> = s.topics.into_iter().map(|t| t.to_string()).collect();
    topics.sort();
    topics.dedup();
    Ok(topics)
}

/// Decodes a consumer-protocol message `M` (a version, then the body); `None` for empty
/// bytes. Versions newer than this client knows are read as the newest it knows. `what`
/// names the message in errors (`assignment`, `subscription`).
fn decode_consumer_message<M: Decodable + Message>(bytes: &[u8], what: &str) -> Result<Option<M>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let (version, mut body) = split_version(bytes, what)?;
    let v = version.min(M::VERSIONS.max);
    M::decode(&mut body, v)
        .map(Some)
        .map_err(|e| Error::Protocol {
            addr: String::new(),
            message: format!("cannot decode consumer {what} v{version}: {e:#}"),
        })
}

fn split_version(bytes: &[u8], what: &str) -> Result<(i16, Bytes)> {
    if bytes.len() < 2 {
        return Err(Error::Protocol {
            addr: String::new(),
            message: format!(
                "consumer {what} is {} bytes, too short for a version",
                bytes.len()
            ),
        });
    }
    let mut b = Bytes::copy_from_slice(bytes);
    let version = b.get_i16();
    if version < 0 {
        return Err(Error::Protocol {
            addr: String::new(),
            message: format!("consumer {what} has a negative version {version}"),
        });
    }
    Ok((version, b))
}

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_owned()))
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_owned()))
}

/// Whether a group request that failed with `e` should go to a freshly looked-up
/// coordinator.
fn is_coordinator_error(e: &Error) -> bool {
    match e {
        Error::Group { error, .. } | Error::Kafka { error, .. } => matches!(
            error,
            ResponseError::CoordinatorNotAvailable
                | ResponseError::NotCoordinator
                | ResponseError::CoordinatorLoadInProgress
        ),
        Error::Io { .. } | Error::Connect { .. } => true,
        _ => false,
    }
}

fn find_coordinator_request(group: &str, version: i16) -> FindCoordinatorRequest {
    if version >= 4 {
        FindCoordinatorRequest::default()
            .with_key_type(KEY_TYPE_GROUP)
            .with_coordinator_keys(vec![StrBytes::from_string(group.to_owned())])
    } else if version >= 1 {
        FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_owned()))
            .with_key_type(KEY_TYPE_GROUP)
    } else {
        FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_owned()))
    }
}

/// A topic of an OffsetFetch request, in the v8+ per-group layout (`OffsetFetchRequestTopics`)
/// or the older one (`OffsetFetchRequestTopic`).
trait OffsetFetchTopic {
    fn new(topic: &str, partitions: &[i32]) -> Self;
}

macro_rules! impl_offset_fetch_topic {
    ($($ty:ty),*) => {$(
        impl OffsetFetchTopic for $ty {
            fn new(topic: &str, partitions: &[i32]) -> Self {
                <$ty>::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes(partitions.to_vec())
            }
        }
    )*};
}

impl_offset_fetch_topic!(OffsetFetchRequestTopic, OffsetFetchRequestTopics);

/// The request's topic list: `None` asks for every partition the group has committed.
fn offset_fetch_request_topics<T: OffsetFetchTopic>(
    topics: Option<&[(String, Vec<i32>)]>,
) -> Option<Vec<T>> {
    topics.map(|ts| ts.iter().map(|(t, ps)| T::new(t, ps)).collect())
}

fn offset_fetch_request(
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
    version: i16,
) -> OffsetFetchRequest {
    if version >= 8 {
        let mut g = OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(offset_fetch_request_topics(topics));
        if version >= 9 {
            g = g.with_member_id(None).with_member_epoch(-1);
        }
        OffsetFetchRequest::default().with_groups(vec![g])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(offset_fetch_request_topics(topics))
    }
}

/// One committed offset as OffsetFetch returns it:
/// (topic, partition, offset, leader epoch, metadata, error).
type OffsetFetchRow = (String, i32, i64, i32, Option<String>, i16);

/// A partition of an OffsetFetch response, in the v8+ per-group layout
/// (`OffsetFetchResponsePartitions`) or the older one (`OffsetFetchResponsePartition`).
trait OffsetFetchPartition {
    fn into_row(self, topic: String) -> OffsetFetchRow;
}

macro_rules! impl_offset_fetch_partition {
    ($($ty:ty),*) => {$(
        impl OffsetFetchPartition for $ty {
            fn into_row(self, topic: String) -> OffsetFetchRow {
                (
                    topic,
                    self.partition_index,
                    self.committed_offset,
                    self.committed_leader_epoch,
                    self.metadata.map(|m| m.to_string()),
                    self.error_code,
                )
            }
        }
    )*};
}

impl_offset_fetch_partition!(OffsetFetchResponsePartition, OffsetFetchResponsePartitions);

/// Flattens the `(topic name, partitions)` of an OffsetFetch response into rows.
fn offset_fetch_rows<P: OffsetFetchPartition>(
    topics: impl Iterator<Item = (TopicName, Vec<P>)>,
) -> Vec<OffsetFetchRow> {
    topics
        .flat_map(|(name, partitions)| {
            let name = name.0.to_string();
            partitions
                .into_iter()
                .map(move |p| p.into_row(name.clone()))
        })
        .collect()
}

fn offset_commit_request(
    group: &str,
    generation_id: i32,
    member_id: &str,
    offsets: &[(String, i32, i64)],
    version: i16,
) -> OffsetCommitRequest {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (t, p, o) in offsets {
        by_topic.entry(t.as_str()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str(""))),
        );
    }
    let mut request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    if version <= 4 {
        request = request.with_retention_time_ms(-1);
    }
    request
}

impl Client {
    async fn group_backoff(&mut self, group: &str, retries: &mut Backoff, e: &Error) -> bool {
        if !is_coordinator_error(e) || !Self::backoff(retries, e).await {
            return false;
        }
        self.coordinators.remove(group);
        true
    }

    /// Runs a request on `group`'s coordinator, retrying coordinator errors (see
    /// [`is_coordinator_error`]) up to [`GROUP_MAX_RETRIES`] times, each after forgetting the
    /// coordinator and backing off.
    async fn with_group_retries<T>(
        &mut self,
        group: &str,
        mut request: impl AsyncFnMut(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let mut retries = Self::retries(GROUP_MAX_RETRIES);
        loop {
            match request(self).await {
                Err(e) if self.group_backoff(group, &mut retries, &e).await => {}
                other => return other,
            }
        }
    }

    /// Finds the coordinator of `group` (FindCoordinator), retrying while the cluster is
    /// still creating or loading `__consumer_offsets`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<BrokerMetadata> {
        self.with_group_retries(group, async |client| {
            client.find_coordinator_once(group).await
        })
        .await
    }

    async fn find_coordinator_once(&mut self, group: &str) -> Result<BrokerMetadata> {
        let conn = self.any_conn().await?;
        let version = conn.negotiate::<FindCoordinatorRequest>(FIND_COORDINATOR_MAX)?;
        let request = find_coordinator_request(group, version);
        let addr = conn.addr().to_owned();
        let r = conn.send_versioned(&request, version).await?;
        let (code, message, node_id, host, port) = if version >= 4 {
            let c = r
                .coordinators
                .into_iter()
                .find(|c| c.key.as_str() == group)
                .ok_or_else(|| {
                    Error::protocol(&addr, "FindCoordinator response lacks the group")
                })?;
            (c.error_code, c.error_message, c.node_id.0, c.host, c.port)
        } else {
            (r.error_code, r.error_message, r.node_id.0, r.host, r.port)
        };
        if let Some(e) = Error::from_group_code(code, group, message.as_deref()) {
            return Err(e);
        }
        if node_id < 0 || host.is_empty() || port <= 0 {
            return Err(Error::Group {
                error: ResponseError::CoordinatorNotAvailable,
                group: group.to_owned(),
                message: Some(format!(
                    "FindCoordinator named no usable coordinator (node {node_id} at {host}:{port})"
                )),
            });
        }
        let coordinator = BrokerMetadata {
            node_id,
            host: host.to_string(),
            port,
            rack: None,
        };
        let known = self.brokers.get(&node_id).map(BrokerMetadata::addr);
        if known.as_deref() != Some(coordinator.addr().as_str()) {
            if known.is_some() {
                self.conns.remove(&node_id);
            }
            self.brokers.insert(node_id, coordinator.clone());
        }
        self.coordinators.insert(group.to_owned(), node_id);
        Ok(coordinator)
    }

    /// The connection to `group`'s coordinator and the coordinator itself.
    async fn coordinator_conn(&mut self, group: &str) -> Result<(&mut Connection, BrokerMetadata)> {
        let id = match self.coordinators.get(group) {
            Some(&id) if self.brokers.contains_key(&id) => id,
            _ => self.find_coordinator_once(group).await?.node_id,
        };
        let broker = self
            .brokers
            .get(&id)
            .cloned()
            .expect("coordinator is a known broker");
        let conn = self.broker_conn(id).await?;
        Ok((conn, broker))
    }

    // ---------------------------------------------------------------- list

    /// Lists the groups of every broker (ListGroups). `states` filters by state (ListGroups
    /// v4+, e.g. `["Stable"]`); empty means all. Sorted by group id.
    pub async fn list_groups(&mut self, states: &[String]) -> Result<Vec<ListedGroup>> {
        self.metadata(Some(&[])).await?;
        let ids: Vec<i32> = self.brokers.keys().copied().collect();
        let mut out: BTreeMap<String, ListedGroup> = BTreeMap::new();
        for id in ids {
            let mut retries = Self::retries(GROUP_MAX_RETRIES);
            let groups = loop {
                match self.list_groups_on(id, states).await {
                    Err(e)
                        if (is_coordinator_error(&e)
                            || e.kafka_error()
                                == Some(ResponseError::CoordinatorLoadInProgress))
                            && Self::backoff(&mut retries, &e).await => {}
                    other => break other?,
                }
            };
            for g in groups {
                out.insert(g.group_id.clone(), g);
            }
        }
        Ok(out.into_values().collect())
    }

    async fn list_groups_on(&mut self, id: i32, states: &[String]) -> Result<Vec<ListedGroup>> {
        let conn = self.broker_conn(id).await?;
        let version = conn.negotiate::<ListGroupsRequest>(LIST_GROUPS_MAX)?;
        if !states.is_empty() && version < 4 {
            return Err(Error::InvalidArgument(format!(
                "broker {} cannot filter groups by state (needs ListGroups v4, it speaks v{version})",
                conn.addr()
            )));
        }
        let mut request = ListGroupsRequest::default();
        if version >= 4 {
            request = request.with_states_filter(
                states
                    .iter()
                    .map(|s| StrBytes::from_string(s.clone()))
                    .collect(),
            );
        }
        let r = conn.send_versioned(&request, version).await?;
        if let Some(e) = Error::from_code(r.error_code, None, None, None) {
            return Err(e);
        }
        Ok(r.groups
            .into_iter()
            .map(|g| ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: (version >= 4).then(|| g.group_state.to_string()),
            })
            .collect())
    }

    // ---------------------------------------------------------------- describe

    /// Describes one group (DescribeGroups) through its coordinator. A group that does not
    /// exist comes back as `Dead` from older brokers or as a GROUP_ID_NOT_FOUND error from
    /// newer ones (DescribeGroups v6).
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription> {
        self.with_group_retries(group, async |client| {
            client.describe_group_once(group).await
        })
        .await
    }

    async fn describe_group_once(&mut self, group: &str) -> Result<GroupDescription> {
        let (conn, coordinator) = self.coordinator_conn(group).await?;
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let r = conn.send(request, DESCRIBE_GROUPS_MAX).await?;
        let g = r
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| {
                Error::protocol(conn.addr(), "DescribeGroups response lacks the group")
            })?;
        if let Some(e) = Error::from_group_code(g.error_code, group, g.error_message.as_deref()) {
            return Err(e);
        }
        let mut members: Vec<GroupMember> = g
            .members
            .into_iter()
            .map(|m| GroupMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                metadata: m.member_metadata,
                assignment: m.member_assignment,
            })
            .collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members,
            coordinator,
        })
    }

    // ---------------------------------------------------------------- offsets

    /// The group's committed offsets (OffsetFetch): for `topics` (topic, partitions) or, with
    /// `None`, for every partition the group has committed. Partitions without a committed
    /// offset are left out. Sorted by topic and partition.
    pub async fn committed_offsets(
        &mut self,
        group: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<CommittedOffset>> {
        self.with_group_retries(group, async |client| {
            client.committed_offsets_once(group, topics).await
        })
        .await
    }

    /// Like [`Client::committed_offsets`] but a single attempt, without retries (and so
    /// usable from spawned tasks: the retrying variants' futures are not provably `Send`).
    /// After a coordinator error the next attempt looks the coordinator up again.
    pub async fn committed_offsets_attempt(
        &mut self,
        group: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<CommittedOffset>> {
        let result = self.committed_offsets_once(group, topics).await;
        self.forget_coordinator_after(group, &result);
        result
    }

    fn forget_coordinator_after<T>(&mut self, group: &str, result: &Result<T>) {
        if result.as_ref().is_err_and(is_coordinator_error) {
            self.coordinators.remove(group);
        }
    }

    async fn committed_offsets_once(
        &mut self,
        group: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<CommittedOffset>> {
        let (conn, _) = self.coordinator_conn(group).await?;
        let version = conn.negotiate::<OffsetFetchRequest>(OFFSET_FETCH_MAX)?;
        if topics.is_none() && version < 2 {
            return Err(Error::InvalidArgument(format!(
                "broker {} cannot list all committed offsets of a group (needs OffsetFetch v2)",
                conn.addr()
            )));
        }
        let request = offset_fetch_request(group, topics, version);
        let addr = conn.addr().to_owned();
        let r = conn.send_versioned(&request, version).await?;
        let rows = if version >= 8 {
            let g = r
                .groups
                .into_iter()
                .find(|g| g.group_id.0.as_str() == group)
                .ok_or_else(|| Error::protocol(&addr, "OffsetFetch response lacks the group"))?;
            if let Some(e) = Error::from_group_code(g.error_code, group, None) {
                return Err(e);
            }
            offset_fetch_rows(g.topics.into_iter().map(|t| (t.name, t.partitions)))
        } else {
            if let Some(e) = Error::from_group_code(r.error_code, group, None) {
                return Err(e);
            }
            offset_fetch_rows(r.topics.into_iter().map(|t| (t.name, t.partitions)))
        };
        let mut out = Vec::with_capacity(rows.len());
        for (topic, partition, offset, leader_epoch, metadata, code) in rows {
            if let Some(e) = Error::from_group_code(code, group, None) {
                if e.is_group_level() {
                    return Err(e);
                }
                return Err(Error::from_code(code, Some(&topic), Some(partition), None)
                    .expect("non-zero code"));
            }
            if offset < 0 {
                continue;
            }
            out.push(CommittedOffset {
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Commits offsets for `group` (OffsetCommit): `(topic, partition, offset)` triples.
    /// With `generation_id` -1 and an empty `member_id` this is an administrative commit,
    /// which the coordinator only accepts while the group has no members. Returns one result
    /// per triple, in order; a group-level refusal (e.g. UNKNOWN_MEMBER_ID,
    /// REBALANCE_IN_PROGRESS) is returned as `Err`.
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<((String, i32), Result<()>)>> {
        self.with_group_retries(group, async |client| {
            client
                .commit_offsets_once(group, generation_id, member_id, offsets)
                .await
        })
        .await
    }

    /// Like [`Client::commit_offsets`] but a single attempt, without retries; see
    /// [`Client::committed_offsets_attempt`].
    pub async fn commit_offsets_attempt(
        &mut self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<((String, i32), Result<()>)>> {
        let result = self
            .commit_offsets_once(group, generation_id, member_id, offsets)
            .await;
        self.forget_coordinator_after(group, &result);
        result
    }

    async fn commit_offsets_once(
        &mut self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<((String, i32), Result<()>)>> {
        let (conn, _) = self.coordinator_conn(group).await?;
        let version = conn.negotiate::<OffsetCommitRequest>(OFFSET_COMMIT_MAX)?;
        let request = offset_commit_request(group, generation_id, member_id, offsets, version);
        let addr = conn.addr().to_owned();
        let r = conn.send_versioned(&request, version).await?;
        let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
        for t in r.topics {
            for p in t.partitions {
                codes.insert((t.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
        let mut out = Vec::with_capacity(offsets.len());
        for (t, p, _) in offsets {
            let key = (t.clone(), *p);
            let result = match codes.get(&key) {
                None => Err(Error::protocol(
                    &addr,
                    format!("OffsetCommit response lacks topic '{t}' partition {p}"),
                )),
                Some(&code) => match Error::from_group_code(code, group, None) {
                    None => Ok(()),
                    Some(e) if e.is_group_level() => return Err(e),
                    Some(_) => {
                        Err(Error::from_code(code, Some(t), Some(*p), None).expect("non-zero code"))
                    }
                },
            };
            out.push((key, result));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- delete

    /// Deletes groups (DeleteGroups), each through its coordinator. Returns one result per
    /// group, in order. Only groups without members can be deleted (NON_EMPTY_GROUP).
    pub async fn delete_groups(&mut self, groups: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let result = self
                .with_group_retries(group, async |client| client.delete_group_once(group).await)
                .await;
            match result {
                // Connection-level failures end the whole operation.
                Err(e @ (Error::Io { .. } | Error::Connect { .. } | Error::Timeout { .. })) => {
                    return Err(e)
                }
                r => out.push((group.clone(), r)),
            }
        }
        Ok(out)
    }

    async fn delete_group_once(&mut self, group: &str) -> Result<()> {
        let (conn, _) = self.coordinator_conn(group).await?;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let r = conn.send(request, DELETE_GROUPS_MAX).await?;
        let res = r
            .results
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| Error::protocol(conn.addr(), "DeleteGroups response lacks the group"))?;
        match Error::from_group_code(res.error_code, group, None) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    fn encode_assignment(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
            topics
                .iter()
                .map(|(t, ps)| {
                    TopicPartition::default()
                        .with_topic(topic_name(t))
                        .with_partitions(ps.to_vec())
                })
                .collect(),
        );
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(version);
        a.encode(&mut buf, version.min(3)).unwrap();
        buf.to_vec()
    }

    #[test]
    fn decodes_assignment_sorted_by_topic_and_partition() {
        for v in 0..=3 {
            let bytes = encode_assignment(v, &[("orders", &[3, 1]), ("audit", &[0])]);
            assert_eq!(
                decode_consumer_assignment(&bytes).unwrap(),
                vec![
                    ("audit".to_owned(), vec![0]),
                    ("orders".to_owned(), vec![1, 3])
                ],
                "version {v}"
            );
        }
    }

    #[test]
    fn empty_assignment_is_no_partitions() {
        assert!(decode_consumer_assignment(&[]).unwrap().is_empty());
        let bytes = encode_assignment(0, &[]);
        assert!(decode_consumer_assignment(&bytes).unwrap().is_empty());
    }

    #[test]
    fn newer_assignment_versions_decode_as_the_newest_known() {
        // A v5 assignment with the v3 layout plus trailing bytes a future version may add.
        let mut bytes = encode_assignment(5, &[("t", &[0, 2])]);
        bytes.extend_from_slice(&[0, 0, 0, 7]);
        assert_eq!(
            decode_consumer_assignment(&bytes).unwrap(),
            vec![("t".to_owned(), vec![0, 2])]
        );
    }

    #[test]
    fn truncated_assignment_is_an_error() {
        assert!(decode_consumer_assignment(&[0]).is_err());
        let bytes = encode_assignment(1, &[("orders", &[1, 2, 3])]);
        assert!(decode_consumer_assignment(&bytes[..bytes.len() - 6]).is_err());
        assert!(decode_consumer_assignment(&[0xff, 0xff, 0, 0]).is_err());
    }

    #[test]
    fn decodes_librdkafka_style_assignment_bytes() {
        // Hand-built v0 assignment: version 0, 1 topic "ab" with partitions [0, 5], null
        // user data (-1 length), as librdkafka and the Java client send it.
        let bytes: Vec<u8> = vec![
            0, 0, // version
            0, 0, 0, 1, // one topic
            0, 2, b'a', b'b', // topic name
            0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, // partitions
            0xff, 0xff, 0xff, 0xff, // user data: null
        ];
        assert_eq!(
            decode_consumer_assignment(&bytes).unwrap(),
            vec![("ab".to_owned(), vec![0, 5])]
        );
    }

    /// Every request this module builds encodes at every version the library knows (a
    /// field set outside its versions would fail here, not against a broker).
    #[test]
    fn requests_encode_at_every_version() {
        use kafka_protocol::protocol::Encodable;
        let mut buf = bytes::BytesMut::new();
        for v in FindCoordinatorRequest::VERSIONS.min..=FIND_COORDINATOR_MAX {
            find_coordinator_request("g", v)
                .encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("FindCoordinator v{v}: {e}"));
        }
        let topics = vec![("t".to_owned(), vec![0, 1])];
        for v in OffsetFetchRequest::VERSIONS.min..=OFFSET_FETCH_MAX {
            offset_fetch_request("g", Some(&topics), v)
                .encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("OffsetFetch v{v}: {e}"));
            if v >= 2 {
                offset_fetch_request("g", None, v)
                    .encode(&mut buf, v)
                    .unwrap_or_else(|e| panic!("OffsetFetch (all) v{v}: {e}"));
            }
        }
        let offsets = vec![("t".to_owned(), 0, 5), ("t".to_owned(), 1, 7)];
        for v in OffsetCommitRequest::VERSIONS.min..=OFFSET_COMMIT_MAX {
            let r = offset_commit_request("g", -1, "", &offsets, v);
            assert_eq!(r.topics.len(), 1);
            assert_eq!(r.topics[0].partitions.len(), 2);
            r.encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("OffsetCommit v{v}: {e}"));
        }
        for v in 0..=LIST_GROUPS_MAX {
            let mut r = ListGroupsRequest::default();
            if v >= 4 {
                r = r.with_states_filter(vec![StrBytes::from_static_str("Stable")]);
            }
            r.encode(&mut buf, v).unwrap();
        }
        for v in 0..=DESCRIBE_GROUPS_MAX {
            DescribeGroupsRequest::default()
                .with_groups(vec![group_id("g")])
                .encode(&mut buf, v)
                .unwrap();
        }
        for v in 0..=DELETE_GROUPS_MAX {
            DeleteGroupsRequest::default()
                .with_groups_names(vec![group_id("g")])
                .encode(&mut buf, v)
                .unwrap();
        }
    }

    #[test]
    fn decodes_subscription_topics() {
        let s = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("b"),
            StrBytes::from_static_str("a"),
        ]);
        for v in 0..=3 {
            let mut buf = bytes::BytesMut::new();
            buf.put_i16(v);
            s.encode(&mut buf, v).unwrap();
            assert_eq!(
                decode_consumer_subscription(&buf).unwrap(),
                vec!["a".to_owned(), "b".to_owned()]
            );
        }
    }
}
