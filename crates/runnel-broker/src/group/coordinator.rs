//! [`GroupCoordinator`]: owns the groups of the `__consumer_offsets` partitions this node
//! leads, drives their state machines, parks JoinGroup/SyncGroup requests and persists group
//! state.
//!
//! **Shards.** Each led `__consumer_offsets` partition is a shard with its own
//! `parking_lot::Mutex` around its groups and parked requests. A shard is inserted *loading*
//! (requests get COORDINATOR_LOAD_IN_PROGRESS), filled by replaying the partition's log, then
//! made active: [`GroupCoordinator::load_partition`]. [`GroupCoordinator::unload_partition`]
//! removes it and tells parked requests NOT_COORDINATOR. [`GroupCoordinator::on_image`] calls
//! these two as leadership of `__consumer_offsets` moves in the controller's image; requests
//! for groups of a partition that is not loaded here answer NOT_COORDINATOR.
//!
//! **Writes.** Records are appended to the partition while the shard lock is held, so the log
//! order is the order in which state changed; the append is a synchronous page-cache write
//! (never an `.await`). As in Kafka (acks=all, `offsets.commit.timeout.ms`), what a client
//! waits on takes effect only once its record is replicated: an OffsetCommit's offsets are
//! pending in their group (invisible to OffsetFetch, UNSTABLE_OFFSET_COMMIT with
//! `require_stable`) and a SyncGroup's assignment is not handed out until then; if the
//! record is not replicated in time the previous state stays. The wait runs on a task of its
//! own, one per append and bounded by the timeout, which takes the shard lock again to apply
//! the outcome: the lock is never held across an `.await`, and a client that goes away cannot
//! leave anything pending.
//!
//! **Parked requests.** JoinGroup and SyncGroup register a oneshot sender under a waiter id,
//! then let the state machine decide; its [`Effects`] name the waiters to answer. The senders
//! are taken out under the lock and completed after it is released. Every wait is bounded by
//! the state machine's own deadlines (rebalance timeout, new-member timeout) and, as a safety
//! net, by a timeout in the handler's future.
//!
//! **Timers.** One task ticks every [`TICK`]: for each group whose earliest deadline has
//! passed it calls [`Group::poll`]. Operations also poll their group right away, so a deadline
//! that has already passed (an initial rebalance delay of 0) never waits for a tick. A tick
//! that finds nothing due costs one comparison per group. Offset expiry runs every
//! `offsets.retention.check.interval.ms`.
//!
//! **Time.** `now` is wall-clock milliseconds captured at open and advanced by tokio's
//! monotonic clock, so tests can drive it with `tokio::time::pause`/`advance`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, watch};

use super::partition_for;
use super::records::{CoordinatorRecord, OffsetValue};
use super::state::{
    Effects, Group, GroupLimits, GroupState, JoinRequest, JoinResult, LeavingMember, PendingStore,
    SyncRequest, SyncResult, WaiterId, NEW_MEMBER_JOIN_TIMEOUT_MS,
};
use super::store::{self, commit_error, store_error};
use crate::error::BrokerError;
use crate::metadata::MetadataImage;
use crate::replica_manager::{now_ms, Partition, ReplicaManager};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Kafka's `offsets.topic.segment.bytes` default.
const OFFSETS_SEGMENT_BYTES: &str = "104857600";
/// How often the timer task looks for due deadlines.
pub const TICK: Duration = Duration::from_millis(50);
/// Added to a parked request's own bound before the handler gives up on it (safety net).
const PARK_GRACE_MS: u64 = 5_000;

/// One offset to commit.
#[derive(Clone, Debug)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// An OffsetCommit request, version differences resolved.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub offsets: Vec<OffsetCommit>,
    /// The request version: v9+ answers GROUP_ID_NOT_FOUND where older ones say
    /// ILLEGAL_GENERATION.
    pub version: i16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOverview {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The selected protocol, for a Stable group only (as Kafka reports it).
    pub protocol_data: String,
    pub members: Vec<MemberDescription>,
}

/// The coordinator of a key, as FindCoordinator reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundCoordinator {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

struct ShardState {
    loading: bool,
    groups: HashMap<String, Group>,
    joins: HashMap<WaiterId, oneshot::Sender<JoinResult>>,
    syncs: HashMap<WaiterId, oneshot::Sender<SyncResult>>,
}

/// The groups of one `__consumer_offsets` partition.
struct Shard {
    partition: i32,
    state: Mutex<ShardState>,
}

/// Responses to send once the shard lock is released.
#[derive(Default)]
#[must_use]
struct Deliveries {
    joins: Vec<(oneshot::Sender<JoinResult>, JoinResult)>,
    syncs: Vec<(oneshot::Sender<SyncResult>, SyncResult)>,
}

impl Deliveries {
    fn send(self) {
        for (tx, r) in self.joins {
            let _ = tx.send(r);
        }
        for (tx, r) in self.syncs {
            let _ = tx.send(r);
        }
    }

    fn extend(&mut self, other: Deliveries) {
        self.joins.extend(other.joins);
        self.syncs.extend(other.syncs);
    }
}

/// Wall-clock milliseconds advanced by tokio's (pausable) monotonic clock.
struct Clock {
    base_wall: i64,
    base: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            base_wall: now_ms(),
            base: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> i64 {
        self.base_wall + self.base.elapsed().as_millis() as i64
    }
}

/// Where coordinator records were appended: committed once the high watermark passes.
struct Appended {
    partition: Arc<Partition>,
    /// The offset of the batch's first record: tells apart commits of the same partition.
    base_offset: i64,
    required_offset: i64,
    leader_epoch: i32,
    min_insync_replicas: usize,
}

impl Appended {
    async fn wait(&self, timeout: Duration) -> Result<(), BrokerError> {
        self.partition
            .wait_committed(
                self.required_offset,
                self.leader_epoch,
                self.min_insync_replicas,
                timeout,
            )
            .await
    }
}

/// One result per offset of an OffsetCommit.
type CommitResults = Vec<Result<(), ResponseError>>;

/// An OffsetCommit's offsets, appended and pending in their group.
struct StagedCommit {
    shard: Arc<Shard>,
    group_id: String,
    offsets: Vec<((String, i32), OffsetValue)>,
    appended: Appended,
    /// The request's offsets these are, by index.
    accepted: Vec<usize>,
}

/// Serves consumer groups whose `__consumer_offsets` partitions this node leads.
pub struct GroupCoordinator {
    broker: Arc<ReplicaManager>,
    /// `offsets.commit.timeout.ms`: how long offsets and group metadata wait for replication.
    commit_timeout: Duration,
    limits: GroupLimits,
    retention_ms: i64,
    retention_check: Duration,
    clock: Clock,
    shards: RwLock<HashMap<i32, Arc<Shard>>>,
    next_waiter: AtomicU64,
}

impl GroupCoordinator {
    /// A coordinator with no partitions loaded; [`GroupCoordinator::on_image`] loads those
    /// this node leads.
    pub fn open(broker: Arc<ReplicaManager>) -> Arc<Self> {
        let config = broker.config().clone();
        Arc::new(Self {
            limits: GroupLimits {
                min_session_timeout_ms: config.group_min_session_timeout_ms(),
                max_session_timeout_ms: config.group_max_session_timeout_ms(),
                max_size: config.group_max_size(),
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms() as i64,
            },
            retention_ms: config.offsets_retention_ms(),
            commit_timeout: Duration::from_millis(config.offsets_commit_timeout_ms()),
            retention_check: Duration::from_millis(
                config.offsets_retention_check_interval_ms().max(1),
            ),
            clock: Clock::new(),
            shards: RwLock::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            broker,
        })
    }

    /// Follows leadership of `__consumer_offsets`: loads every partition this node now leads
    /// and unloads those it no longer leads. Blocking (replays logs); the node calls it after
    /// every [`ReplicaManager::apply_image`]. Returns the first load error after trying all.
    pub fn on_image(self: &Arc<Self>, image: &MetadataImage) -> Result<(), BrokerError> {
        let node = self.broker.node_id();
        let led: HashSet<i32> = image
            .topic(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.leader == node)
                    .map(|p| p.index)
                    .collect()
            })
            .unwrap_or_default();
        let loaded: Vec<i32> = self.shards.read().keys().copied().collect();
        for p in loaded.iter().filter(|p| !led.contains(p)) {
            self.unload_partition(*p);
            tracing::info!(
                partition = p,
                "no longer the group coordinator of {OFFSETS_TOPIC}-{p}"
            );
        }
        let mut first_error = None;
        for p in led.iter().filter(|p| !loaded.contains(p)) {
            match self.load_partition(*p) {
                Ok(groups) => tracing::info!(
                    partition = p,
                    groups,
                    "now the group coordinator of {OFFSETS_TOPIC}-{p}"
                ),
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "cannot load {OFFSETS_TOPIC}-{p}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Creates `__consumer_offsets` if it is missing (`offsets.topic.num.partitions`,
    /// `offsets.topic.replication.factor`). Losing a race with another creator is success.
    /// Refused (INVALID_REPLICATION_FACTOR) while fewer brokers than the replication factor
    /// are live, as in Kafka: a cluster still starting must not get an offsets topic with
    /// fewer replicas than configured for good. FindCoordinator answers
    /// COORDINATOR_NOT_AVAILABLE meanwhile and clients retry.
    pub async fn ensure_offsets_topic(&self) -> Result<(), BrokerError> {
        let image = self.broker.image();
        if image.topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let config = self.broker.config();
        let replication = config.offsets_topic_replication_factor();
        let live = image.live_brokers().count();
        if (live as i64) < i64::from(replication) {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "{OFFSETS_TOPIC} needs offsets.topic.replication.factor={replication} live \
                 brokers, found {live}; it is created once enough are up"
            )));
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                OFFSETS_SEGMENT_BYTES.to_string(),
            ),
        ]);
        let partitions = config.offsets_topic_num_partitions();
        match self
            .broker
            .create_topic(OFFSETS_TOPIC, partitions, replication, configs, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_topic_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Milliseconds since the epoch, as the coordinator sees it.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Partitions of `__consumer_offsets`: from the image once it exists, from the config
    /// before.
    pub fn num_partitions(&self) -> i32 {
        self.broker
            .image()
            .topic(OFFSETS_TOPIC)
            .map_or(self.broker.config().offsets_topic_num_partitions(), |t| {
                t.partitions.len() as i32
            })
    }

    /// The `__consumer_offsets` partition of a group.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.num_partitions())
    }

    /// The node coordinating `group_id`: the leader of its `__consumer_offsets` partition in
    /// the metadata image, with its address on the Kafka listener named `listener`.
    pub fn find_coordinator(
        &self,
        group_id: &str,
        listener: &str,
    ) -> Result<FoundCoordinator, (ResponseError, String)> {
        let image = self.broker.image();
        let not_available = |why: String| (ResponseError::CoordinatorNotAvailable, why);
        let topic = image
            .topic(OFFSETS_TOPIC)
            .ok_or_else(|| not_available(format!("{OFFSETS_TOPIC} does not exist")))?;
        let p = self.partition_for(group_id);
        let leader = topic
            .partitions
            .get(p as usize)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
            .ok_or_else(|| not_available(format!("{OFFSETS_TOPIC}-{p} has no leader")))?;
        let broker = image
            .brokers
            .get(&leader)
            .ok_or_else(|| not_available(format!("node {leader} is not available")))?;
        let (host, port) = broker.endpoint(listener).ok_or_else(|| {
            not_available(format!("node {leader} has no listener named {listener}"))
        })?;
        Ok(FoundCoordinator {
            node_id: broker.id,
            host: host.to_owned(),
            port,
        })
    }

    // ------------------------------------------------------------ load / unload

    /// Starts coordinating partition `p`: requests for its groups get
    /// COORDINATOR_LOAD_IN_PROGRESS until its log has been replayed. Returns how many groups
    /// were loaded.
    pub fn load_partition(self: &Arc<Self>, p: i32) -> Result<usize, BrokerError> {
        let shard = Arc::new(Shard {
            partition: p,
            state: Mutex::new(ShardState {
                loading: true,
                groups: HashMap::new(),
                joins: HashMap::new(),
                syncs: HashMap::new(),
            }),
        });
        {
            let mut shards = self.shards.write();
            if shards.contains_key(&p) {
                return Ok(0);
            }
            shards.insert(p, shard.clone());
        }
        let replayed = match self
            .broker
            .partition(OFFSETS_TOPIC, p)
            .and_then(|partition| store::replay_partition(&partition))
        {
            Ok(r) => r,
            Err(e) => {
                self.shards.write().remove(&p);
                return Err(e);
            }
        };
        let now = self.now();
        let mut groups = HashMap::new();
        let mut fx_all = Vec::new();
        for (id, value) in replayed.groups {
            let (group, fx) = Group::load(&id, value, self.limits.clone(), now);
            fx_all.push((id.clone(), fx));
            groups.insert(id, group);
        }
        for (id, offsets) in replayed.offsets {
            let group = groups
                .entry(id.clone())
                .or_insert_with(|| Group::new(id, self.limits.clone(), now));
            for ((topic, partition), value) in offsets {
                group.load_offset(&topic, partition, value);
            }
        }
        let count = groups.len();
        let deliveries = {
            let mut st = lock(&shard);
            st.groups = groups;
            st.loading = false;
            let mut out = Deliveries::default();
            for (id, fx) in fx_all {
                out.extend(self.settle(&shard, &mut st, &id, fx, now));
            }
            out
        };
        deliveries.send();
        tracing::debug!(
            partition = p,
            groups = count,
            "loaded {OFFSETS_TOPIC} partition"
        );
        Ok(count)
    }

    /// Stops coordinating partition `p` (this node is no longer its leader). Parked requests
    /// are answered NOT_COORDINATOR so their clients look the coordinator up again.
    pub fn unload_partition(&self, p: i32) {
        let Some(shard) = self.shards.write().remove(&p) else {
            return;
        };
        let deliveries = {
            let mut st = lock(&shard);
            let mut fx = Effects::default();
            for group in st.groups.values_mut() {
                fx.extend(group.unload());
            }
            let mut out = take_waiters(&mut st, fx);
            // Anything left (a request parked under a group that no longer knows it).
            for (_, tx) in st.joins.drain() {
                out.joins
                    .push((tx, JoinResult::error("", ResponseError::NotCoordinator)));
            }
            for (_, tx) in st.syncs.drain() {
                out.syncs
                    .push((tx, SyncResult::error(ResponseError::NotCoordinator)));
            }
            st.groups.clear();
            out
        };
        deliveries.send();
    }

    fn shard_for(&self, group_id: &str) -> Result<Arc<Shard>, ResponseError> {
        let p = self.partition_for(group_id);
        self.shards
            .read()
            .get(&p)
            .cloned()
            .ok_or(ResponseError::NotCoordinator)
    }

    fn partition(&self, p: i32) -> Result<(Arc<Partition>, i32), BrokerError> {
        let partition = self.broker.partition(OFFSETS_TOPIC, p)?;
        let epoch = self
            .broker
            .image()
            .topic(OFFSETS_TOPIC)
            .and_then(|t| t.partitions.get(p as usize))
            .map_or(0, |p| p.leader_epoch);
        Ok((partition, epoch))
    }

    /// Appends records to partition `p`. Called with the shard lock held, so the log order
    /// is the order of the state changes.
    fn append(&self, p: i32, records: &[CoordinatorRecord]) -> Result<Appended, BrokerError> {
        let (partition, leader_epoch) = self.partition(p)?;
        let info = store::append(&partition, leader_epoch, records, now_ms())?;
        let min_insync_replicas = self
            .broker
            .image()
            .topic(OFFSETS_TOPIC)
            .map_or(1, |t| self.broker.config().min_insync_replicas(&t.configs));
        Ok(Appended {
            partition,
            base_offset: info.base_offset,
            required_offset: info.last_offset + 1,
            leader_epoch,
            min_insync_replicas,
        })
    }

    /// Appends the group writes `fx` asks for and takes the senders of the requests to
    /// answer. Runs under the shard lock. The group learns how a write went once it is
    /// replicated ([`GroupCoordinator::complete_store`]), or at once if the append fails.
    fn settle(
        self: &Arc<Self>,
        shard: &Arc<Shard>,
        st: &mut ShardState,
        group_id: &str,
        mut fx: Effects,
        now: i64,
    ) -> Deliveries {
        let mut out = Deliveries::default();
        loop {
            let stores = std::mem::take(&mut fx.stores);
            out.extend(take_waiters(st, std::mem::take(&mut fx)));
            if stores.is_empty() {
                return out;
            }
            for pending in stores {
                let Some(group) = st.groups.get_mut(group_id) else {
                    continue;
                };
                let value = group.metadata_value(&pending);
                let record = CoordinatorRecord::Group {
                    group: group_id.to_string(),
                    value: Some(value),
                };
                match self.append(shard.partition, &[record]) {
                    Ok(appended) => {
                        let me = self.clone();
                        let (shard, group_id) = (shard.clone(), group_id.to_string());
                        tokio::spawn(async move {
                            let result = appended.wait(me.commit_timeout).await;
                            me.complete_store(&shard, &group_id, pending, result);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(group = group_id, error = %e, "cannot store group metadata");
                        fx.extend(group.store_completed(pending, Err(store_error(&e)), now));
                    }
                }
            }
        }
    }

    /// Tells a group how the replication of its metadata record went. Nothing to do if the
    /// partition was unloaded meanwhile: its parked requests were answered then.
    fn complete_store(
        self: &Arc<Self>,
        shard: &Arc<Shard>,
        group_id: &str,
        store: PendingStore,
        replicated: Result<(), BrokerError>,
    ) {
        let result = replicated.map_err(|e| {
            tracing::warn!(group = group_id, error = %e, "group metadata was not replicated");
            store_error(&e)
        });
        let deliveries = {
            let mut st = lock(shard);
            let now = self.now();
            let before = snapshot(&st, group_id);
            let Some(group) = st.groups.get_mut(group_id) else {
                return;
            };
            let fx = group.store_completed(store, result, now);
            let deliveries = self.settle(shard, &mut st, group_id, fx, now);
            log_change(group_id, before, &st);
            deliveries
        };
        deliveries.send();
    }

    fn waiter_id(&self) -> WaiterId {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }

    // ------------------------------------------------------------ group membership

    /// JoinGroup; waits until the rebalance completes (bounded by the rebalance timeout).
    pub async fn join_group(self: &Arc<Self>, group_id: &str, req: JoinRequest) -> JoinResult {
        let member_id = req.member_id.clone();
        if group_id.is_empty() {
            return JoinResult::error(&member_id, ResponseError::InvalidGroupId);
        }
        let shard = match self.shard_for(group_id) {
            Ok(s) => s,
            Err(e) => return JoinResult::error(&member_id, e),
        };
        let new_member_id = format!(
            "{}-{}",
            req.group_instance_id
                .as_deref()
                .filter(|i| !i.is_empty())
                .or(Some(req.client_id.as_str()).filter(|c| !c.is_empty()))
                .unwrap_or("member"),
            uuid::Uuid::new_v4()
        );
        let waiter = self.waiter_id();
        let (tx, rx) = oneshot::channel();
        let deliveries = {
            let mut st = lock(&shard);
            if st.loading {
                return JoinResult::error(&member_id, ResponseError::CoordinatorLoadInProgress);
            }
            let now = self.now();
            if !st.groups.contains_key(group_id) {
                if !member_id.is_empty() {
                    return JoinResult::error(&member_id, ResponseError::UnknownMemberId);
                }
                if let Err(e) = self.limits.check_session_timeout(req.session_timeout_ms) {
                    return JoinResult::error(&member_id, e);
                }
                st.groups.insert(
                    group_id.to_string(),
                    Group::new(group_id, self.limits.clone(), now),
                );
            }
            st.joins.insert(waiter, tx);
            let before = snapshot(&st, group_id);
            let group = st.groups.get_mut(group_id).expect("inserted above");
            let fx = group.join(req, waiter, &new_member_id, now);
            // The join phase ends by the group's rebalance timeout; a new member is dropped
            // after NEW_MEMBER_JOIN_TIMEOUT_MS at the latest.
            let bound_ms = group.rebalance_timeout_ms().max(NEW_MEMBER_JOIN_TIMEOUT_MS)
                + self.limits.initial_rebalance_delay_ms.max(0);
            let deliveries = self.settle(&shard, &mut st, group_id, fx, now);
            log_change(group_id, before, &st);
            (bound_ms, deliveries)
        };
        let bound = Duration::from_millis(deliveries.0 as u64 + PARK_GRACE_MS);
        let deliveries = deliveries.1;
        deliveries.send();
        self.wait(&shard, waiter, rx, bound, &member_id, |st, w| {
            st.joins.remove(&w);
        })
        .await
        .unwrap_or_else(|e| JoinResult::error(&member_id, e))
    }

    /// SyncGroup; a follower (or the leader) waits for the leader's assignment to be stored.
    pub async fn sync_group(self: &Arc<Self>, group_id: &str, req: SyncRequest) -> SyncResult {
        if group_id.is_empty() {
            return SyncResult::error(ResponseError::InvalidGroupId);
        }
        let shard = match self.shard_for(group_id) {
            Ok(s) => s,
            Err(e) => return SyncResult::error(e),
        };
        let waiter = self.waiter_id();
        let (tx, rx) = oneshot::channel();
        let mut bound_ms = PARK_GRACE_MS;
        let deliveries = {
            let mut st = lock(&shard);
            if st.loading {
                // The rebalance state is gone; make the member rejoin (Kafka: older clients
                // do not expect COORDINATOR_LOAD_IN_PROGRESS here).
                return SyncResult::error(ResponseError::RebalanceInProgress);
            }
            let now = self.now();
            if !st.groups.contains_key(group_id) {
                return SyncResult::error(ResponseError::UnknownMemberId);
            }
            st.syncs.insert(waiter, tx);
            let before = snapshot(&st, group_id);
            let group = st.groups.get_mut(group_id).expect("checked above");
            bound_ms += group.rebalance_timeout_ms().max(0) as u64;
            let fx = group.sync(req, waiter, now);
            let deliveries = self.settle(&shard, &mut st, group_id, fx, now);
            log_change(group_id, before, &st);
            deliveries
        };
        deliveries.send();
        self.wait(
            &shard,
            waiter,
            rx,
            Duration::from_millis(bound_ms),
            "",
            |st, w| {
                st.syncs.remove(&w);
            },
        )
        .await
        .unwrap_or_else(SyncResult::error)
    }

    /// Waits for a parked request's answer. A dropped sender means the shard went away; the
    /// timeout is a safety net behind the state machine's own deadlines.
    async fn wait<T>(
        &self,
        shard: &Shard,
        waiter: WaiterId,
        rx: oneshot::Receiver<T>,
        bound: Duration,
        member_id: &str,
        forget: impl FnOnce(&mut ShardState, WaiterId),
    ) -> Result<T, ResponseError> {
        match tokio::time::timeout(bound, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(ResponseError::NotCoordinator),
            Err(_) => {
                tracing::warn!(
                    member = member_id,
                    "a parked group request outlived its bound; answering REBALANCE_IN_PROGRESS"
                );
                forget(&mut lock(shard), waiter);
                Err(ResponseError::RebalanceInProgress)
            }
        }
    }

    pub fn heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let shard = self.shard_for(group_id)?;
        let (result, deliveries) = {
            let mut st = lock(&shard);
            if st.loading {
                // Kafka answers blindly while loading.
                return Ok(());
            }
            let now = self.now();
            let before = snapshot(&st, group_id);
            let group = st
                .groups
                .get_mut(group_id)
                .ok_or(ResponseError::UnknownMemberId)?;
            let result = group.heartbeat(member_id, group_instance_id, generation_id, now);
            // A heartbeat can be the moment a deadline is noticed (no tick needed).
            let fx = group.poll(now);
            let deliveries = self.settle(&shard, &mut st, group_id, fx, now);
            log_change(group_id, before, &st);
            (result, deliveries)
        };
        deliveries.send();
        result
    }

    /// LeaveGroup; `Err` for the whole request, else one result per member.
    pub fn leave_group(
        self: &Arc<Self>,
        group_id: &str,
        members: &[LeavingMember],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let shard = self.shard_for(group_id)?;
        let (results, deliveries) = {
            let mut st = lock_loaded(&shard)?;
            let now = self.now();
            let before = snapshot(&st, group_id);
            let Some(group) = st.groups.get_mut(group_id) else {
                return Ok(members
                    .iter()
                    .map(|_| Err(ResponseError::UnknownMemberId))
                    .collect());
            };
            let (results, fx) = group.leave(members, now)?;
            let deliveries = self.settle(&shard, &mut st, group_id, fx, now);
            log_change(group_id, before, &st);
            (results, deliveries)
        };
        deliveries.send();
        Ok(results)
    }

    // ------------------------------------------------------------ offsets

    /// OffsetCommit: `Err` applies to every partition, else one result per offset. The
    /// offsets are pending in their group until their records are committed (replicated to
    /// the ISR of the offsets partition, as Kafka's acks=all append), at most
    /// `offsets.commit.timeout.ms`; only then are they acknowledged and visible to
    /// OffsetFetch. If that fails the previous offsets stay.
    pub async fn commit_offsets(
        self: &Arc<Self>,
        req: CommitRequest,
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        let (mut results, staged) = self.stage_offsets(req)?;
        let Some(staged) = staged else {
            return Ok(results);
        };
        let accepted = staged.accepted.clone();
        // Completed on a task of its own, so a client that goes away mid-wait cannot leave
        // the offsets pending.
        let me = self.clone();
        let completion = tokio::spawn(async move {
            let replicated = staged.appended.wait(me.commit_timeout).await;
            if let Err(e) = &replicated {
                tracing::warn!(group = staged.group_id, error = %e, "committed offsets were not replicated");
            }
            // Nothing to complete if the partition was unloaded meanwhile.
            if let Some(group) = lock(&staged.shard).groups.get_mut(&staged.group_id) {
                group.complete_offset_commit(
                    staged.offsets,
                    staged.appended.base_offset,
                    replicated.is_ok(),
                );
            }
            replicated.map_err(|e| commit_error(&e))
        });
        let outcome = match completion.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(ResponseError::NotCoordinator),
        };
        if let Err(code) = outcome {
            for i in accepted {
                results[i] = Err(code);
            }
        }
        Ok(results)
    }

    /// Validates an OffsetCommit's offsets, appends the accepted ones and makes them pending
    /// in the group; returns the results and, when something was appended, what to complete.
    fn stage_offsets(
        &self,
        req: CommitRequest,
    ) -> Result<(CommitResults, Option<StagedCommit>), ResponseError> {
        let shard = self.shard_for(&req.group_id)?;
        let image = self.broker.image();
        let mut results: CommitResults = req
            .offsets
            .iter()
            .map(|o| {
                if o.metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES)
                {
                    return Err(ResponseError::OffsetMetadataTooLarge);
                }
                let exists = image.topic(&o.topic).is_some_and(|t| {
                    o.partition >= 0 && (o.partition as usize) < t.partitions.len()
                });
                if !exists {
                    return Err(ResponseError::UnknownTopicOrPartition);
                }
                Ok(())
            })
            .collect();
        let mut st = lock_loaded(&shard)?;
        let now = self.now();
        match st.groups.get_mut(&req.group_id) {
            Some(group) => group.validate_offset_commit(
                &req.member_id,
                req.group_instance_id.as_deref(),
                req.generation_id,
                now,
            )?,
            None if req.generation_id < 0 => {}
            None if req.version >= 9 => return Err(ResponseError::GroupIdNotFound),
            None => return Err(ResponseError::IllegalGeneration),
        }
        let accepted: Vec<usize> = (0..req.offsets.len())
            .filter(|i| results[*i].is_ok())
            .collect();
        if accepted.is_empty() {
            return Ok((results, None));
        }
        let offsets: Vec<((String, i32), OffsetValue)> = accepted
            .iter()
            .map(|i| {
                let o = &req.offsets[*i];
                let value = OffsetValue {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone().unwrap_or_default(),
                    commit_timestamp: now,
                    expire_timestamp: None,
                };
                ((o.topic.clone(), o.partition), value)
            })
            .collect();
        let records: Vec<CoordinatorRecord> = offsets
            .iter()
            .map(|((topic, partition), v)| CoordinatorRecord::Offset {
                group: req.group_id.clone(),
                topic: topic.clone(),
                partition: *partition,
                value: Some(v.clone()),
            })
            .collect();
        let appended = match self.append(shard.partition, &records) {
            Ok(appended) => appended,
            Err(e) => {
                tracing::warn!(group = req.group_id, error = %e, "cannot store committed offsets");
                let code = commit_error(&e);
                for i in accepted {
                    results[i] = Err(code);
                }
                return Ok((results, None));
            }
        };
        st.groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(req.group_id.clone(), self.limits.clone(), now))
            .prepare_offset_commit(offsets.iter().map(|(k, _)| k.clone()), appended.base_offset);
        drop(st);
        Ok((
            results,
            Some(StagedCommit {
                shard,
                group_id: req.group_id,
                offsets,
                appended,
                accepted,
            }),
        ))
    }

    /// OffsetFetch for one group: the committed offset of each requested partition (`None`:
    /// nothing committed), or of every partition with a committed offset when `partitions`
    /// is `None`. Pending commits are not shown; with `require_stable` (KIP-447) a partition
    /// with one answers UNSTABLE_OFFSET_COMMIT instead, as Kafka does, and the client retries.
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
        require_stable: bool,
    ) -> Result<Vec<(String, i32, Result<Option<OffsetValue>, ResponseError>)>, ResponseError> {
        let shard = self.shard_for(group_id)?;
        let st = lock_loaded(&shard)?;
        let Some(group) = st.groups.get(group_id) else {
            return Ok(partitions
                .unwrap_or_default()
                .iter()
                .map(|(t, p)| (t.clone(), *p, Ok(None)))
                .collect());
        };
        let keys: Vec<(String, i32)> = match partitions {
            Some(wanted) => wanted.to_vec(),
            None => group.offsets().map(|(k, _)| k.clone()).collect(),
        };
        Ok(keys
            .into_iter()
            .map(|key| {
                let value = if require_stable && group.has_pending_offset(&key) {
                    Err(ResponseError::UnstableOffsetCommit)
                } else {
                    Ok(group.offset(&key).cloned())
                };
                (key.0, key.1, value)
            })
            .collect())
    }

    /// Removes offsets of a group, writing tombstones; an empty group left without offsets is
    /// removed too (with a group tombstone). Runs under the shard lock. Returns how many
    /// offsets were removed.
    fn remove_offsets(
        &self,
        shard: &Shard,
        st: &mut ShardState,
        group_id: &str,
        partitions: &[(String, i32)],
        now: i64,
    ) -> Result<usize, BrokerError> {
        let Some(group) = st.groups.get(group_id) else {
            return Ok(0);
        };
        // A pending commit is removed too, with a tombstone after its record in the log.
        let present: Vec<(String, i32)> = group
            .stored_offset_keys()
            .filter(|k| partitions.contains(k))
            .cloned()
            .collect();
        let left = group.stored_offset_keys().count() - present.len();
        let dies = left == 0 && group.is_idle();
        let mut records = offset_tombstones(group_id, &present);
        if dies {
            records.push(group_tombstone(group_id));
        }
        if records.is_empty() {
            return Ok(0);
        }
        self.append(shard.partition, &records)?;
        let removed = present.len();
        let group = st.groups.get_mut(group_id).expect("checked above");
        for key in &present {
            group.remove_offset(key);
        }
        if dies && group.maybe_mark_dead(now) {
            st.groups.remove(group_id);
        }
        Ok(removed)
    }

    /// The partitions loaded now, taken out of the map so no map lock is held while each
    /// shard is worked on.
    fn loaded_shards(&self) -> Vec<Arc<Shard>> {
        self.shards.read().values().cloned().collect()
    }

    /// Expires committed offsets past `offsets.retention.minutes` (KIP-211) as of `now` and
    /// drops empty groups left without offsets. Returns how many offsets were removed.
    pub fn expire_offsets(&self, now: i64) -> usize {
        let shards = self.loaded_shards();
        let mut removed = 0;
        for shard in shards {
            let mut st = lock(&shard);
            if st.loading {
                continue;
            }
            let candidates: Vec<(String, Vec<(String, i32)>)> = st
                .groups
                .values()
                .filter_map(|g| {
                    let expired = g.expired_offsets(now, self.retention_ms);
                    let finished = g.is_idle() && !g.has_offsets();
                    (!expired.is_empty() || finished).then(|| (g.id().to_string(), expired))
                })
                .collect();
            for (group_id, partitions) in candidates {
                match self.remove_offsets(&shard, &mut st, &group_id, &partitions, now) {
                    Ok(n) => removed += n,
                    Err(e) => {
                        tracing::warn!(group = group_id, error = %e, "cannot expire offsets");
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(offsets = removed, "expired committed offsets");
        }
        removed
    }

    /// OffsetDelete: `Err` for the whole group, else one result per partition.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        let shard = self.shard_for(group_id)?;
        let mut st = lock_loaded(&shard)?;
        let now = self.now();
        let group = st
            .groups
            .get(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        let mut results = group.check_offset_delete(partitions)?;
        let eligible: Vec<(String, i32)> = partitions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(k, _)| k.clone())
            .collect();
        if let Err(e) = self.remove_offsets(&shard, &mut st, group_id, &eligible, now) {
            tracing::warn!(group = group_id, error = %e, "cannot delete offsets");
            let code = commit_error(&e);
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(code);
            }
        }
        Ok(results)
    }

    /// DeleteGroups: one result per group. Only empty groups can be deleted; their offsets and
    /// metadata become tombstones.
    pub fn delete_groups(&self, group_ids: &[String]) -> Vec<Result<(), ResponseError>> {
        group_ids
            .iter()
            .map(|group_id| self.delete_group(group_id))
            .collect()
    }

    fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        let shard = self.shard_for(group_id)?;
        let mut st = lock_loaded(&shard)?;
        let now = self.now();
        let group = st
            .groups
            .get(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        match group.state() {
            GroupState::Empty => {}
            GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
            _ => return Err(ResponseError::NonEmptyGroup),
        }
        let mut records = offset_tombstones(group_id, group.stored_offset_keys());
        records.push(group_tombstone(group_id));
        if let Err(e) = self.append(shard.partition, &records) {
            tracing::warn!(group = group_id, error = %e, "cannot delete group");
            return Err(commit_error(&e));
        }
        if let Some(mut group) = st.groups.remove(group_id) {
            let _ = group.delete(now);
        }
        tracing::info!(group = group_id, "deleted group");
        Ok(())
    }

    // ------------------------------------------------------------ listing

    /// ListGroups: every group this node coordinates. The error is
    /// COORDINATOR_LOAD_IN_PROGRESS while any partition is still loading.
    pub fn list_groups(&self) -> (Option<ResponseError>, Vec<GroupOverview>) {
        let shards = self.loaded_shards();
        let mut error = None;
        let mut groups = Vec::new();
        for shard in shards {
            let st = lock(&shard);
            if st.loading {
                error = Some(ResponseError::CoordinatorLoadInProgress);
                continue;
            }
            groups.extend(st.groups.values().map(|g| GroupOverview {
                group_id: g.id().to_string(),
                protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                state: g.state(),
            }));
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        (error, groups)
    }

    /// DescribeGroups for one group; `Ok(None)` when it does not exist.
    pub fn describe_group(
        &self,
        group_id: &str,
    ) -> Result<Option<GroupDescription>, ResponseError> {
        let shard = self.shard_for(group_id)?;
        let st = lock_loaded(&shard)?;
        let Some(group) = st.groups.get(group_id) else {
            return Ok(None);
        };
        let stable = group.state() == GroupState::Stable;
        let protocol = group.protocol().map(str::to_string);
        Ok(Some(GroupDescription {
            group_id: group_id.to_string(),
            state: group.state(),
            protocol_type: group.protocol_type().unwrap_or_default().to_string(),
            protocol_data: if stable {
                protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: group
                .members()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        protocol
                            .as_deref()
                            .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default()
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }))
    }

    // ------------------------------------------------------------ timers

    /// Fires due deadlines of every group (sessions, rebalance timeouts, pending syncs).
    pub fn poll_groups(self: &Arc<Self>) {
        let now = self.now();
        let shards = self.loaded_shards();
        for shard in shards {
            let deliveries = {
                let mut st = lock(&shard);
                if st.loading {
                    continue;
                }
                let due: Vec<String> = st
                    .groups
                    .values()
                    .filter(|g| g.next_deadline().is_some_and(|d| d <= now))
                    .map(|g| g.id().to_string())
                    .collect();
                let mut out = Deliveries::default();
                for id in due {
                    let before = snapshot(&st, &id);
                    let Some(group) = st.groups.get_mut(&id) else {
                        continue;
                    };
                    let fx = group.poll(now);
                    out.extend(self.settle(&shard, &mut st, &id, fx, now));
                    log_change(&id, before, &st);
                }
                out
            };
            deliveries.send();
        }
    }

    /// Runs the coordinator's timers (session and rebalance timeouts, offset expiry) until
    /// `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expiry = tokio::time::interval_at(
            tokio::time::Instant::now() + self.retention_check,
            self.retention_check,
        );
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.poll_groups(),
                _ = expiry.tick() => {
                    let now = self.now();
                    self.expire_offsets(now);
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Logs a group's state or generation change, as Kafka's coordinator does.
fn log_change(group_id: &str, before: (GroupState, i32), st: &ShardState) {
    let after = st
        .groups
        .get(group_id)
        .map_or((GroupState::Dead, before.1), |g| {
            (g.state(), g.generation())
        });
    if after != before {
        tracing::info!(
            group = group_id,
            from = before.0.as_str(),
            to = after.0.as_str(),
            generation = after.1,
            "group state changed"
        );
    }
}

fn snapshot(st: &ShardState, group_id: &str) -> (GroupState, i32) {
    st.groups
        .get(group_id)
        .map_or((GroupState::Dead, 0), |g| (g.state(), g.generation()))
}

fn lock(shard: &Shard) -> MutexGuard<'_, ShardState> {
    shard.state.lock()
}

/// Locks an active shard: COORDINATOR_LOAD_IN_PROGRESS while its log is being replayed.
fn lock_loaded(shard: &Shard) -> Result<MutexGuard<'_, ShardState>, ResponseError> {
    let st = lock(shard);
    if st.loading {
        return Err(ResponseError::CoordinatorLoadInProgress);
    }
    Ok(st)
}

/// Takes the senders of the requests `fx` answers.
fn take_waiters(st: &mut ShardState, fx: Effects) -> Deliveries {
    let mut out = Deliveries::default();
    for (w, r) in fx.joins {
        if let Some(tx) = st.joins.remove(&w) {
            out.joins.push((tx, r));
        }
    }
    for (w, r) in fx.syncs {
        if let Some(tx) = st.syncs.remove(&w) {
            out.syncs.push((tx, r));
        }
    }
    out
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;

/// Tombstones (null values) that delete these committed offsets of a group when compacted.
fn offset_tombstones<'a>(
    group_id: &str,
    keys: impl IntoIterator<Item = &'a (String, i32)>,
) -> Vec<CoordinatorRecord> {
    keys.into_iter()
        .map(|(topic, partition)| CoordinatorRecord::Offset {
            group: group_id.to_string(),
            topic: topic.clone(),
            partition: *partition,
            value: None,
        })
        .collect()
}

/// The tombstone that deletes a group's metadata record.
fn group_tombstone(group_id: &str) -> CoordinatorRecord {
    CoordinatorRecord::Group {
        group: group_id.to_string(),
        value: None,
    }
}
