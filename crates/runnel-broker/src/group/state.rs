//! The classic group protocol for one group, as a pure state machine: no I/O, no async, no
//! clock. Every operation takes the current time (`now`, milliseconds) and returns
//! [`Effects`]: responses for parked JoinGroup/SyncGroup requests (identified by a
//! [`WaiterId`] the caller hands in) and group-metadata writes the caller must persist before
//! telling the group how the write went ([`Group::store_completed`]).
//!
//! The states and transitions follow Kafka's classic `GroupCoordinator`/`GroupMetadata`
//! (KIP-345 static membership, KIP-394 member-id-required, KIP-211 offset expiry, pending
//! sync timeouts):
//!
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!    ▲                 ▲   │ (no members left)                      │ leader's SyncGroup stored
//!    └─────────────────┼───┘                                        ▼
//!                      └──── member joins/leaves/expires ──────── Stable
//!  Dead: deleted or expired; never leaves Dead.
//! ```
//!
//! Deadlines (initial rebalance delay, rebalance timeout, session timeouts, pending members,
//! pending syncs) are plain fields; [`Group::poll`] fires the ones that have passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::consumer_protocol::consumer_subscription_topics;
use super::records::{GroupValue, MemberValue, OffsetValue};

/// Identifies a parked request; the coordinator maps it to the channel the handler waits on.
pub type WaiterId = u64;

/// The member id of a member that does not have one yet.
pub const UNKNOWN_MEMBER_ID: &str = "";
/// Generation of requests from outside group management (simple consumers, admin tools).
pub const NO_GENERATION: i32 = -1;
/// A new member's JoinGroup may wait this long before the member is dropped (Kafka's
/// `NewMemberJoinTimeoutMs`): it has no member id yet, so it cannot heartbeat.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Broker settings that bound what groups may do.
#[derive(Clone, Debug)]
pub struct GroupLimits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub initial_rebalance_delay_ms: i64,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            initial_rebalance_delay_ms: 3_000,
        }
    }
}

impl GroupLimits {
    pub fn check_session_timeout(&self, session_timeout_ms: i32) -> Result<(), ResponseError> {
        if session_timeout_ms < self.min_session_timeout_ms
            || session_timeout_ms > self.max_session_timeout_ms
        {
            return Err(ResponseError::InvalidSessionTimeout);
        }
        Ok(())
    }
}

/// A JoinGroup request, version differences already resolved.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+ dynamic members must first obtain a member id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: a rejoining static leader may be told to skip the assignment.
    pub supports_skip_assignment: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub member_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    /// Every member's metadata, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(member_id: &str, error: ResponseError) -> Self {
        Self {
            error: Some(error),
            member_id: member_id.to_string(),
            generation_id: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// v5+: must match the group's when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A member leaving (LeaveGroup v3+ identifies each by member id and/or instance id).
#[derive(Clone, Debug)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// Group metadata the caller must write to the log, then report with
/// [`Group::store_completed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingStore {
    /// A rebalance ended with no members; nothing waits on the write.
    Empty,
    /// The leader's assignment for `generation`; the members' SyncGroups wait on the write.
    Assignment {
        generation: i32,
        assignment: BTreeMap<String, Bytes>,
    },
    /// A static member rejoined under a new member id without a rebalance; its JoinGroup
    /// waits on the write, and a failed write undoes the replacement.
    StaticRejoin(Box<StaticRejoin>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRejoin {
    pub group_instance_id: String,
    pub old_member_id: String,
    pub new_member_id: String,
    old_protocols: Vec<(String, Bytes)>,
    old_rebalance_timeout_ms: i32,
    old_session_timeout_ms: i32,
    leader_before: Option<String>,
    supports_skip_assignment: bool,
    waiter: WaiterId,
}

/// What an operation asks the caller to do.
#[derive(Debug, Default)]
#[must_use]
pub struct Effects {
    /// Responses for parked (or immediately answered) JoinGroup requests.
    pub joins: Vec<(WaiterId, JoinResult)>,
    /// Responses for parked (or immediately answered) SyncGroup requests.
    pub syncs: Vec<(WaiterId, SyncResult)>,
    /// Group metadata to persist, in order.
    pub stores: Vec<PendingStore>,
}

impl Effects {
    pub fn extend(&mut self, other: Effects) {
        self.joins.extend(other.joins);
        self.syncs.extend(other.syncs);
        self.stores.extend(other.stores);
    }
}

#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<WaiterId>,
    sync_waiter: Option<WaiterId>,
    /// Joined but not yet through its first rebalance.
    is_new: bool,
    heartbeat_deadline: i64,
}

impl Member {
    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == protocol)
    }

    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    pub fn is_awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    pub fn is_awaiting_sync(&self) -> bool {
        self.sync_waiter.is_some()
    }

    /// When the member's session runs out, if it can. A member parked in a rebalance cannot
    /// heartbeat, so its session is suspended (Kafka's `shouldKeepAlive`) and restarts when
    /// its request is answered; a new member is the exception, its JoinGroup being bounded
    /// by [`NEW_MEMBER_JOIN_TIMEOUT_MS`].
    fn session_deadline(&self) -> Option<i64> {
        let parked = self.is_awaiting_join() || self.is_awaiting_sync();
        (self.is_new || !parked).then_some(self.heartbeat_deadline)
    }

    fn session_expired(&self, now: i64) -> bool {
        self.session_deadline().is_some_and(|d| now >= d)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JoinTimer {
    /// The first rebalance of an empty group waits `delay` for more members, extended while
    /// members keep arriving, for at most the rebalance timeout in total.
    Initial {
        deadline: i64,
        delay: i64,
        remaining: i64,
    },
    /// Completes when every member has rejoined, or at the deadline.
    Rebalance { deadline: i64 },
}

/// One group: membership, rebalance state and committed offsets.
#[derive(Clone, Debug)]
pub struct Group {
    id: String,
    limits: GroupLimits,
    state: GroupState,
    /// When the group last changed state (Kafka's currentStateTimestamp); `None` for groups
    /// loaded from records that predate the field.
    state_timestamp: Option<i64>,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending_members: HashMap<String, i64>,
    /// Members that got a JoinGroup response but have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    pending_sync_deadline: Option<i64>,
    join_timer: Option<JoinTimer>,
    new_member_added: bool,
    subscribed_topics: Option<BTreeSet<String>>,
    /// Committed offsets: replicated, what OffsetFetch answers.
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Offsets appended but not yet replicated (Kafka's `pendingOffsetCommits`), with the log
    /// offset of their batch: invisible to OffsetFetch until the append completes.
    pending_offsets: HashMap<(String, i32), i64>,
}

/// A committed offset and the log offset of its batch (Kafka's `appendedBatchOffset`): when
/// two commits of a partition complete out of order, the one later in the log wins.
#[derive(Clone, Debug)]
struct CommittedOffset {
    value: OffsetValue,
    log_offset: i64,
}

/// The log offset given to offsets replayed from the log: before any batch appended since.
const LOADED_LOG_OFFSET: i64 = -1;

impl Group {
    /// A new, empty group.
    pub fn new(id: impl Into<String>, limits: GroupLimits, now: i64) -> Self {
        Self {
            id: id.into(),
            limits,
            state: GroupState::Empty,
            state_timestamp: Some(now),
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: BTreeSet::new(),
            pending_sync_deadline: None,
            join_timer: None,
            new_member_added: false,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
            pending_offsets: HashMap::new(),
        }
    }

    /// A group as its latest `GroupMetadataValue` describes it: Stable with its members, or
    /// Empty. Members get a full session from `now` to heartbeat. Returns effects because an
    /// over-capacity group (max size lowered since) starts a rebalance at once.
    pub fn load(id: &str, value: GroupValue, limits: GroupLimits, now: i64) -> (Self, Effects) {
        let mut group = Group::new(id, limits, now);
        group.generation = value.generation;
        group.protocol_type = Some(value.protocol_type).filter(|p| !p.is_empty());
        group.protocol = value.protocol;
        group.leader = value.leader;
        group.state_timestamp =
            (value.current_state_timestamp >= 0).then_some(value.current_state_timestamp);
        for m in value.members {
            if let Some(instance) = &m.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let protocols = group
                .protocol
                .clone()
                .map(|p| vec![(p, m.subscription.clone())])
                .unwrap_or_default();
            group.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocols,
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    is_new: false,
                    heartbeat_deadline: now + i64::from(m.session_timeout_ms),
                },
            );
        }
        if group
            .leader
            .as_ref()
            .is_some_and(|l| !group.members.contains_key(l))
        {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group.subscribed_topics = group.compute_subscribed_topics();
        let mut fx = Effects::default();
        if group.members.len() > group.limits.max_size {
            group.prepare_rebalance(now, &mut fx);
            group.poll_join(now, &mut fx);
        }
        (group, fx)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    #[cfg(test)]
    pub(crate) fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    #[cfg(test)]
    pub(crate) fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.get(member_id)
    }

    #[cfg(test)]
    pub(crate) fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    #[cfg(test)]
    pub(crate) fn is_pending_member(&self, member_id: &str) -> bool {
        self.pending_members.contains_key(member_id)
    }

    #[cfg(test)]
    pub(crate) fn static_member_id(&self, group_instance_id: &str) -> Option<&str> {
        self.static_members
            .get(group_instance_id)
            .map(String::as_str)
    }

    /// Empty, without members or members-to-be: nothing but offsets keeps it alive.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }

    /// The committed offsets, by topic and partition.
    pub fn offsets(&self) -> impl Iterator<Item = (&(String, i32), &OffsetValue)> {
        self.offsets.iter().map(|(k, c)| (k, &c.value))
    }

    /// The committed offset of one partition.
    pub fn offset(&self, key: &(String, i32)) -> Option<&OffsetValue> {
        self.offsets.get(key).map(|c| &c.value)
    }

    /// Whether a commit of this partition is appended but not yet replicated.
    pub fn has_pending_offset(&self, key: &(String, i32)) -> bool {
        self.pending_offsets.contains_key(key)
    }

    /// Every partition with a committed or pending offset: what deleting the group's offsets
    /// must write tombstones for.
    pub fn stored_offset_keys(&self) -> impl Iterator<Item = &(String, i32)> {
        self.offsets.keys().chain(
            self.pending_offsets
                .keys()
                .filter(|k| !self.offsets.contains_key(*k)),
        )
    }

    /// Kafka's `hasOffsets`: committed or pending ones keep an empty group alive.
    pub fn has_offsets(&self) -> bool {
        !self.offsets.is_empty() || !self.pending_offsets.is_empty()
    }

    /// The largest rebalance timeout of the members (Kafka's group rebalance timeout).
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn transition(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp = Some(now);
    }

    fn num_awaiting_join(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.is_awaiting_join())
            .count()
    }

    fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join() && self.pending_members.is_empty()
    }

    fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        )
    }

    fn is_static_member_fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        instance
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    /// Kafka's `validateMember`: a static member must be the instance's current member id, a
    /// dynamic one must be a member.
    fn validate_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        match instance {
            Some(instance) => match self.static_members.get(instance) {
                None => Err(ResponseError::UnknownMemberId),
                Some(current) if current != member_id => Err(ResponseError::FencedInstanceId),
                Some(_) => Ok(()),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(ResponseError::UnknownMemberId),
        }
    }

    /// Protocol names every member supports.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.supports(name)))
    }

    /// The protocol for the next generation: among the protocols every member supports, each
    /// member votes for the one it prefers most; the most votes win (ties go to the protocol
    /// the earliest voter preferred, so the choice is deterministic).
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.members.values().all(|m| m.supports(n)))
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for member in self.members.values() {
            let Some(choice) = member
                .protocols
                .iter()
                .map(|(n, _)| n.as_str())
                .find(|n| candidates.contains(n))
            else {
                continue;
            };
            match votes.iter_mut().find(|(n, _)| *n == choice) {
                Some((_, count)) => *count += 1,
                None => votes.push((choice, 1)),
            }
        }
        let best = votes.iter().map(|(_, c)| *c).max()?;
        votes
            .into_iter()
            .find(|(_, c)| *c == best)
            .map(|(n, _)| n.to_string())
    }

    fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        if self.members.is_empty() {
            return Some(BTreeSet::new());
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            topics.extend(consumer_subscription_topics(
                &member.metadata(Some(protocol)),
            )?);
        }
        Some(topics)
    }

    /// Whether a consumer group's members subscribe to `topic` (false when unknown).
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        self.subscribed_topics
            .as_ref()
            .is_some_and(|t| t.contains(topic))
    }

    fn current_member_metadata(&self) -> Vec<JoinedMember> {
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(self.protocol.as_deref()),
            })
            .collect()
    }

    fn current_join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        JoinResult {
            error: None,
            member_id: member_id.to_string(),
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            members: if with_members {
                self.current_member_metadata()
            } else {
                Vec::new()
            },
        }
    }

    fn refresh_heartbeat(&mut self, member_id: &str, now: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
        }
    }

    // ---------------------------------------------------------------- JoinGroup

    /// JoinGroup. `new_member_id` is used if the member needs one (the caller makes it from the
    /// client id or instance id and a UUID). The response for `waiter` comes in the effects,
    /// now or later.
    pub fn join(
        &mut self,
        req: JoinRequest,
        waiter: WaiterId,
        new_member_id: &str,
        now: i64,
    ) -> Effects {
        let mut fx = Effects::default();
        self.do_join(req, waiter, new_member_id, now, &mut fx);
        self.poll_join(now, &mut fx);
        fx
    }

    fn accept_joining_member(&self, req: &JoinRequest) -> bool {
        let known = self.members.contains_key(&req.member_id)
            || (req.member_id.is_empty()
                && req
                    .group_instance_id
                    .as_ref()
                    .is_some_and(|i| self.static_members.contains_key(i)));
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.members
                    .get(&req.member_id)
                    .is_some_and(|m| m.is_awaiting_join())
                    || self.num_awaiting_join() < self.limits.max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                known || self.members.len() < self.limits.max_size
            }
        }
    }

    fn do_join(
        &mut self,
        req: JoinRequest,
        waiter: WaiterId,
        new_member_id: &str,
        now: i64,
        fx: &mut Effects,
    ) {
        let reply = |fx: &mut Effects, member_id: &str, e: ResponseError| {
            fx.joins.push((waiter, JoinResult::error(member_id, e)));
        };
        if let Err(e) = self.limits.check_session_timeout(req.session_timeout_ms) {
            return reply(fx, &req.member_id, e);
        }
        if self.state == GroupState::Dead {
            return reply(fx, &req.member_id, ResponseError::CoordinatorNotAvailable);
        }
        if !self.accept_joining_member(&req) {
            if self.members.contains_key(&req.member_id) {
                self.remove(&req.member_id.clone(), fx);
            }
            return reply(fx, UNKNOWN_MEMBER_ID, ResponseError::GroupMaxSizeReached);
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return reply(fx, &req.member_id, ResponseError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            if let Some(instance) = req.group_instance_id.clone() {
                match self.static_members.get(&instance).cloned() {
                    Some(old) => self.update_static_member_and_rebalance(
                        &instance,
                        &old,
                        new_member_id,
                        req,
                        waiter,
                        now,
                        fx,
                    ),
                    None => self.add_member_and_rebalance(new_member_id, req, waiter, now, fx),
                }
            } else if req.require_known_member_id {
                self.pending_members.insert(
                    new_member_id.to_string(),
                    now + i64::from(req.session_timeout_ms),
                );
                reply(fx, new_member_id, ResponseError::MemberIdRequired);
            } else {
                self.add_member_and_rebalance(new_member_id, req, waiter, now, fx);
            }
            return;
        }
        if req.group_instance_id.is_none() && self.pending_members.contains_key(&req.member_id) {
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(&id, req, waiter, now, fx);
        }
        if let Some(instance) = &req.group_instance_id {
            match self.static_members.get(instance) {
                Some(current) if *current != req.member_id => {
                    return reply(fx, &req.member_id, ResponseError::FencedInstanceId)
                }
                None => return reply(fx, &req.member_id, ResponseError::UnknownMemberId),
                Some(_) => {}
            }
        }
        let Some(member) = self.members.get(&req.member_id) else {
            return reply(fx, &req.member_id, ResponseError::UnknownMemberId);
        };
        let unchanged = member.matches(&req.protocols);
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(req, waiter, now, fx);
            }
            GroupState::CompletingRebalance if unchanged => {
                // Probably lost the first JoinGroup response: answer for the current
                // generation again.
                fx.joins
                    .push((waiter, self.current_join_result(&req.member_id, is_leader)));
            }
            GroupState::Stable if unchanged && !is_leader => {
                fx.joins
                    .push((waiter, self.current_join_result(&req.member_id, false)));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                // Changed metadata, or the leader asking for a rebalance (e.g. topic metadata
                // changed): rebalance.
                self.update_member_and_rebalance(req, waiter, now, fx);
            }
            GroupState::Empty | GroupState::Dead => {
                reply(fx, &req.member_id, ResponseError::UnknownMemberId);
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: &str,
        req: JoinRequest,
        waiter: WaiterId,
        now: i64,
        fx: &mut Effects,
    ) {
        if self.state == GroupState::PreparingRebalance && self.generation == 0 {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.to_string());
        }
        match &req.group_instance_id {
            Some(instance) => {
                self.static_members
                    .insert(instance.clone(), member_id.to_string());
            }
            None => {
                self.pending_members.remove(member_id);
            }
        }
        self.members.insert(
            member_id.to_string(),
            Member {
                member_id: member_id.to_string(),
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                session_timeout_ms: req.session_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(waiter),
                sync_waiter: None,
                is_new: true,
                heartbeat_deadline: now + NEW_MEMBER_JOIN_TIMEOUT_MS,
            },
        );
        self.maybe_prepare_rebalance(now, fx);
    }

    /// Updates a member's protocols and timeouts and parks (or clears) its JoinGroup. A JoinGroup
    /// it had parked already is answered so nothing is left waiting.
    fn update_member(
        &mut self,
        member_id: &str,
        protocols: Vec<(String, Bytes)>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        waiter: Option<WaiterId>,
        fx: &mut Effects,
    ) {
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        m.protocols = protocols;
        m.rebalance_timeout_ms = rebalance_timeout_ms;
        m.session_timeout_ms = session_timeout_ms;
        if let Some(old) = m.join_waiter.take() {
            if Some(old) != waiter {
                fx.joins.push((
                    old,
                    JoinResult::error(member_id, ResponseError::RebalanceInProgress),
                ));
            }
        }
        m.join_waiter = waiter;
    }

    fn update_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        waiter: WaiterId,
        now: i64,
        fx: &mut Effects,
    ) {
        self.update_member(
            &req.member_id,
            req.protocols,
            req.rebalance_timeout_ms,
            req.session_timeout_ms,
            Some(waiter),
            fx,
        );
        self.maybe_prepare_rebalance(now, fx);
    }

    /// Moves a static member to a new member id; requests parked under the old id are fenced.
    fn replace_static_member(
        &mut self,
        instance: &str,
        old_id: &str,
        new_id: &str,
        fx: &mut Effects,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        if let Some(w) = member.join_waiter.take() {
            fx.joins.push((
                w,
                JoinResult::error(old_id, ResponseError::FencedInstanceId),
            ));
        }
        if let Some(w) = member.sync_waiter.take() {
            fx.syncs
                .push((w, SyncResult::error(ResponseError::FencedInstanceId)));
        }
        member.member_id = new_id.to_string();
        self.members.insert(new_id.to_string(), member);
        self.static_members
            .insert(instance.to_string(), new_id.to_string());
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_string());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_string());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn update_static_member_and_rebalance(
        &mut self,
        instance: &str,
        old_id: &str,
        new_id: &str,
        req: JoinRequest,
        waiter: WaiterId,
        now: i64,
        fx: &mut Effects,
    ) {
        let leader_before = self.leader.clone();
        self.replace_static_member(instance, old_id, new_id, fx);
        self.refresh_heartbeat(new_id, now);
        let Some(member) = self.members.get(new_id) else {
            return;
        };
        let old_protocols = member.protocols.clone();
        let old_rebalance_timeout_ms = member.rebalance_timeout_ms;
        let old_session_timeout_ms = member.session_timeout_ms;
        let unchanged = member.matches(&req.protocols);
        let supports_skip_assignment = req.supports_skip_assignment;
        self.update_member(
            new_id,
            req.protocols,
            req.rebalance_timeout_ms,
            req.session_timeout_ms,
            Some(waiter),
            fx,
        );
        match self.state {
            GroupState::Stable => {
                // Same metadata and the same protocol would be selected: keep the current
                // assignment, just persist the new member id. Anything else needs a rebalance.
                if unchanged && self.select_protocol() == self.protocol {
                    fx.stores
                        .push(PendingStore::StaticRejoin(Box::new(StaticRejoin {
                            group_instance_id: instance.to_string(),
                            old_member_id: old_id.to_string(),
                            new_member_id: new_id.to_string(),
                            old_protocols,
                            old_rebalance_timeout_ms,
                            old_session_timeout_ms,
                            leader_before,
                            supports_skip_assignment,
                            waiter,
                        })));
                } else {
                    self.maybe_prepare_rebalance(now, fx);
                }
            }
            GroupState::CompletingRebalance => self.maybe_prepare_rebalance(now, fx),
            // The JoinGroup is answered when the rebalance completes.
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => {
                // Unreachable: a group with a static member is not empty.
                if let Some(m) = self.members.get_mut(new_id) {
                    m.join_waiter = None;
                }
                self.refresh_heartbeat(new_id, now);
                fx.joins.push((
                    waiter,
                    JoinResult::error(new_id, ResponseError::UnknownMemberId),
                ));
            }
        }
    }

    // ---------------------------------------------------------------- rebalance mechanics

    fn maybe_prepare_rebalance(&mut self, now: i64, fx: &mut Effects) {
        if self.can_rebalance() {
            self.prepare_rebalance(now, fx);
        }
    }

    fn prepare_rebalance(&mut self, now: i64, fx: &mut Effects) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(ResponseError::RebalanceInProgress, now, fx);
        }
        let timeout = self.rebalance_timeout_ms();
        self.join_timer = Some(if self.state == GroupState::Empty {
            let delay = self.limits.initial_rebalance_delay_ms;
            JoinTimer::Initial {
                deadline: now + delay,
                delay,
                remaining: (timeout - delay).max(0),
            }
        } else {
            JoinTimer::Rebalance {
                deadline: now + timeout,
            }
        });
        self.transition(GroupState::PreparingRebalance, now);
        self.pending_sync.clear();
        self.pending_sync_deadline = None;
    }

    /// Completes the join phase if its timer fired or (after the initial delay) everyone
    /// rejoined.
    fn poll_join(&mut self, now: i64, fx: &mut Effects) {
        // Bounded: each pass either returns or changes the timer towards completion.
        for _ in 0..4 {
            if self.state != GroupState::PreparingRebalance {
                self.join_timer = None;
                return;
            }
            match self.join_timer {
                Some(JoinTimer::Initial {
                    deadline,
                    delay,
                    remaining,
                }) => {
                    if deadline > now {
                        return;
                    }
                    if self.new_member_added && remaining > 0 {
                        self.new_member_added = false;
                        let next = delay.min(remaining);
                        self.join_timer = Some(JoinTimer::Initial {
                            deadline: now + next,
                            delay: next,
                            remaining: (remaining - delay).max(0),
                        });
                        continue;
                    }
                    self.complete_join(now, fx);
                }
                Some(JoinTimer::Rebalance { deadline }) => {
                    if deadline > now && !self.has_all_members_joined() {
                        return;
                    }
                    self.complete_join(now, fx);
                }
                None => {
                    self.join_timer = Some(JoinTimer::Rebalance {
                        deadline: now + self.rebalance_timeout_ms(),
                    });
                }
            }
        }
    }

    fn maybe_elect_new_joined_leader(&mut self) -> bool {
        if let Some(leader) = &self.leader {
            if self
                .members
                .get(leader)
                .is_some_and(|m| m.is_awaiting_join())
            {
                return true;
            }
        }
        match self.members.values().find(|m| m.is_awaiting_join()) {
            Some(m) => {
                self.leader = Some(m.member_id.clone());
                true
            }
            None => false,
        }
    }

    fn complete_join(&mut self, now: i64, fx: &mut Effects) {
        self.join_timer = None;
        // Dynamic members that did not rejoin in time are dropped; static members keep their
        // place until their session runs out.
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_awaiting_join() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            self.remove(&id, fx);
        }
        if self.state == GroupState::Dead {
            return;
        }
        if !self.maybe_elect_new_joined_leader() && !self.members.is_empty() {
            // Nobody rejoined: wait another round for session timeouts to clear the members.
            self.join_timer = Some(JoinTimer::Rebalance {
                deadline: now + self.rebalance_timeout_ms(),
            });
            return;
        }
        self.init_next_generation(now);
        if self.state == GroupState::Empty {
            fx.stores.push(PendingStore::Empty);
            return;
        }
        let all = self.current_member_metadata();
        let generation = self.generation;
        let protocol_type = self.protocol_type.clone();
        let protocol = self.protocol.clone();
        let leader = self.leader.clone().unwrap_or_default();
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                fx.joins.push((
                    w,
                    JoinResult {
                        error: None,
                        member_id: m.member_id.clone(),
                        generation_id: generation,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol.clone(),
                        leader: leader.clone(),
                        skip_assignment: false,
                        members: if m.member_id == leader {
                            all.clone()
                        } else {
                            Vec::new()
                        },
                    },
                ));
            }
            m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
            m.is_new = false;
            self.pending_sync.insert(m.member_id.clone());
        }
        self.pending_sync_deadline = Some(now + self.rebalance_timeout_ms());
    }

    fn init_next_generation(&mut self, now: i64) {
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.transition(GroupState::Empty, now);
        } else {
            self.protocol = self.select_protocol();
            self.transition(GroupState::CompletingRebalance, now);
        }
        self.subscribed_topics = self.compute_subscribed_topics();
        self.pending_sync.clear();
        self.pending_sync_deadline = None;
    }

    /// Removes a member; its parked requests are answered UNKNOWN_MEMBER_ID.
    fn remove(&mut self, member_id: &str, fx: &mut Effects) {
        if let Some(mut m) = self.members.remove(member_id) {
            if let Some(w) = m.join_waiter.take() {
                fx.joins.push((
                    w,
                    JoinResult::error(UNKNOWN_MEMBER_ID, ResponseError::UnknownMemberId),
                ));
            }
            if let Some(w) = m.sync_waiter.take() {
                fx.syncs
                    .push((w, SyncResult::error(ResponseError::UnknownMemberId)));
            }
            if let Some(instance) = &m.group_instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(instance);
                }
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_members.remove(member_id);
        self.pending_sync.remove(member_id);
    }

    fn remove_member_and_update_group(&mut self, member_id: &str, now: i64, fx: &mut Effects) {
        self.remove(member_id, fx);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now, fx)
            }
            // poll_join (run after every operation) completes the join if this was the last
            // member it waited for.
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn propagate_assignment(&mut self, error: Option<ResponseError>, now: i64, fx: &mut Effects) {
        let protocol_type = self.protocol_type.clone();
        let protocol = self.protocol.clone();
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let result = match error {
                    None => SyncResult {
                        error: None,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol.clone(),
                        assignment: m.assignment.clone(),
                    },
                    Some(e) => SyncResult::error(e),
                };
                fx.syncs.push((w, result));
                // The member may have been unable to heartbeat while parked.
                m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
            }
        }
    }

    fn reset_and_propagate_assignment_error(
        &mut self,
        error: ResponseError,
        now: i64,
        fx: &mut Effects,
    ) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
        }
        self.propagate_assignment(Some(error), now, fx);
    }

    // ---------------------------------------------------------------- SyncGroup

    pub fn sync(&mut self, req: SyncRequest, waiter: WaiterId, now: i64) -> Effects {
        let mut fx = Effects::default();
        let reply = |fx: &mut Effects, e: ResponseError| {
            fx.syncs.push((waiter, SyncResult::error(e)));
        };
        if self.state == GroupState::Dead {
            reply(&mut fx, ResponseError::CoordinatorNotAvailable);
            return fx;
        }
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            reply(&mut fx, e);
            return fx;
        }
        if req.generation_id != self.generation {
            reply(&mut fx, ResponseError::IllegalGeneration);
            return fx;
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|p| self.protocol_type.as_ref() != Some(p))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| self.protocol.as_ref() != Some(p))
        {
            reply(&mut fx, ResponseError::InconsistentGroupProtocol);
            return fx;
        }
        match self.state {
            GroupState::Empty => reply(&mut fx, ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => reply(&mut fx, ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                self.pending_sync.remove(&req.member_id);
                let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    if let Some(old) = m.sync_waiter.replace(waiter) {
                        fx.syncs
                            .push((old, SyncResult::error(ResponseError::RebalanceInProgress)));
                    }
                }
                if is_leader {
                    let mut assignment: BTreeMap<String, Bytes> =
                        req.assignments.into_iter().collect();
                    for id in self.members.keys() {
                        assignment.entry(id.clone()).or_default();
                    }
                    fx.stores.push(PendingStore::Assignment {
                        generation: self.generation,
                        assignment,
                    });
                }
            }
            GroupState::Stable => {
                self.pending_sync.remove(&req.member_id);
                let m = &self.members[&req.member_id];
                fx.syncs.push((
                    waiter,
                    SyncResult {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        assignment: m.assignment.clone(),
                    },
                ));
                self.refresh_heartbeat(&req.member_id, now);
            }
            GroupState::Dead => unreachable!("handled above"),
        }
        fx
    }

    /// The record to persist for `store`: the group as it is, or with the leader's assignment.
    pub fn metadata_value(&self, store: &PendingStore) -> GroupValue {
        let assignment = match store {
            PendingStore::Assignment { assignment, .. } => Some(assignment),
            _ => None,
        };
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_timestamp.unwrap_or(-1),
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(self.protocol.as_deref()),
                    assignment: match assignment {
                        Some(a) => a.get(&m.member_id).cloned().unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }

    /// Reports how the write of `store` went (`Err` carries the error for the clients).
    pub fn store_completed(
        &mut self,
        store: PendingStore,
        result: Result<(), ResponseError>,
        now: i64,
    ) -> Effects {
        let mut fx = Effects::default();
        match store {
            PendingStore::Empty => {}
            PendingStore::Assignment {
                generation,
                assignment,
            } => {
                if self.state == GroupState::CompletingRebalance && generation == self.generation {
                    match result {
                        Ok(()) => {
                            for m in self.members.values_mut() {
                                m.assignment =
                                    assignment.get(&m.member_id).cloned().unwrap_or_default();
                            }
                            self.propagate_assignment(None, now, &mut fx);
                            self.transition(GroupState::Stable, now);
                        }
                        Err(e) => {
                            self.reset_and_propagate_assignment_error(e, now, &mut fx);
                            self.maybe_prepare_rebalance(now, &mut fx);
                        }
                    }
                }
            }
            PendingStore::StaticRejoin(s) => {
                let waiter = self
                    .members
                    .get_mut(&s.new_member_id)
                    .and_then(|m| m.join_waiter.take());
                if waiter != Some(s.waiter) {
                    // The member moved on (fenced again, left); its request was answered then.
                    return fx;
                }
                if result.is_ok() {
                    self.refresh_heartbeat(&s.new_member_id, now);
                }
                match result {
                    Err(e) => {
                        self.update_member(
                            &s.new_member_id,
                            s.old_protocols,
                            s.old_rebalance_timeout_ms,
                            s.old_session_timeout_ms,
                            None,
                            &mut fx,
                        );
                        self.replace_static_member(
                            &s.group_instance_id,
                            &s.new_member_id,
                            &s.old_member_id,
                            &mut fx,
                        );
                        self.refresh_heartbeat(&s.old_member_id, now);
                        let mut result = JoinResult::error(UNKNOWN_MEMBER_ID, e);
                        result.generation_id = self.generation;
                        result.protocol_type = self.protocol_type.clone();
                        result.protocol_name = self.protocol.clone();
                        result.leader = s.leader_before.unwrap_or_default();
                        fx.joins.push((s.waiter, result));
                    }
                    Ok(()) if s.supports_skip_assignment => {
                        // v9+: tell a static leader it leads, but must not reassign.
                        let is_leader = self.leader.as_deref() == Some(s.new_member_id.as_str());
                        let mut result = self.current_join_result(&s.new_member_id, is_leader);
                        result.skip_assignment = is_leader;
                        fx.joins.push((s.waiter, result));
                    }
                    Ok(()) => {
                        // Older clients: name the old leader id so that a rejoining leader
                        // does not think it leads and run a useless assignment.
                        let mut result = self.current_join_result(&s.new_member_id, false);
                        result.leader = s.leader_before.unwrap_or_default();
                        fx.joins.push((s.waiter, result));
                    }
                }
            }
        }
        self.poll_join(now, &mut fx);
        fx
    }

    // ---------------------------------------------------------------- Heartbeat, LeaveGroup

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now: i64,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.validate_member(member_id, group_instance_id)?;
        if generation_id != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        match self.state {
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.refresh_heartbeat(member_id, now);
                Ok(())
            }
            GroupState::PreparingRebalance => {
                self.refresh_heartbeat(member_id, now);
                Err(ResponseError::RebalanceInProgress)
            }
            GroupState::Dead => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// LeaveGroup for each member; `Err` for the whole request.
    #[allow(clippy::type_complexity)]
    pub fn leave(
        &mut self,
        leaving: &[LeavingMember],
        now: i64,
    ) -> Result<(Vec<Result<(), ResponseError>>, Effects), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let mut fx = Effects::default();
        let mut results = Vec::with_capacity(leaving.len());
        for l in leaving {
            let instance = l.group_instance_id.as_deref();
            let static_id = instance.and_then(|i| self.static_members.get(i)).cloned();
            let result = if !l.member_id.is_empty()
                && self.is_static_member_fenced(&l.member_id, instance)
            {
                Err(ResponseError::FencedInstanceId)
            } else if self.pending_members.remove(&l.member_id).is_some() {
                Ok(())
            } else if let Some(id) = static_id.or_else(|| {
                self.members
                    .contains_key(&l.member_id)
                    .then(|| l.member_id.clone())
            }) {
                self.remove_member_and_update_group(&id, now, &mut fx);
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
            results.push(result);
        }
        self.poll_join(now, &mut fx);
        Ok((results, fx))
    }

    // ---------------------------------------------------------------- timers

    /// Fires every deadline that has passed at `now`: expired pending members and sessions,
    /// the end of the join phase, members that never sent SyncGroup.
    pub fn poll(&mut self, now: i64) -> Effects {
        let mut fx = Effects::default();
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_pending {
            self.pending_members.remove(&id);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_expired(now))
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            self.remove_member_and_update_group(&id, now, &mut fx);
        }
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && self.pending_sync_deadline.is_some_and(|d| d <= now)
        {
            self.pending_sync_deadline = None;
            let late = std::mem::take(&mut self.pending_sync);
            if !late.is_empty() {
                for id in &late {
                    self.remove(id, &mut fx);
                }
                self.maybe_prepare_rebalance(now, &mut fx);
            }
        }
        self.poll_join(now, &mut fx);
        fx
    }

    /// The earliest deadline [`poll`](Self::poll) acts on, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        let join = self.join_timer.map(|t| match t {
            JoinTimer::Initial { deadline, .. } | JoinTimer::Rebalance { deadline } => deadline,
        });
        let sessions = self
            .members
            .values()
            .filter_map(Member::session_deadline)
            .min();
        let pending = self.pending_members.values().copied().min();
        [join, sessions, pending, self.pending_sync_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// The coordinator lost this group's partition: everything parked is told to find the
    /// new coordinator.
    pub fn unload(&mut self) -> Effects {
        let mut fx = Effects::default();
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                fx.joins.push((
                    w,
                    JoinResult::error(&m.member_id, ResponseError::NotCoordinator),
                ));
            }
            if let Some(w) = m.sync_waiter.take() {
                fx.syncs
                    .push((w, SyncResult::error(ResponseError::NotCoordinator)));
            }
        }
        fx
    }

    // ---------------------------------------------------------------- offsets

    /// Kafka's `validateOffsetCommit`: whether a commit from this member/generation is
    /// accepted. A valid member's commit counts as a heartbeat.
    pub fn validate_offset_commit(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now: i64,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            // Admin tools and consumers without group management commit into empty groups.
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            self.validate_member(member_id, group_instance_id)?;
            if generation_id != self.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        } else if self.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        self.refresh_heartbeat(member_id, now);
        Ok(())
    }

    /// An offset replayed from the log, committed already.
    pub fn load_offset(&mut self, topic: &str, partition: i32, value: OffsetValue) {
        self.offsets.insert(
            (topic.to_string(), partition),
            CommittedOffset {
                value,
                log_offset: LOADED_LOG_OFFSET,
            },
        );
    }

    /// Kafka's `prepareOffsetCommit`: the offsets of `keys`, appended in the batch at
    /// `log_offset`, are pending until [`Group::complete_offset_commit`]; a later commit of a
    /// partition replaces its pending one.
    pub fn prepare_offset_commit(
        &mut self,
        keys: impl IntoIterator<Item = (String, i32)>,
        log_offset: i64,
    ) {
        for key in keys {
            self.pending_offsets.insert(key, log_offset);
        }
    }

    /// Kafka's `onOffsetCommitAppend` / `failPendingOffsetWrite`: the batch at `log_offset`
    /// holding `offsets` was replicated (`replicated`) or not. A replicated offset becomes the
    /// committed one unless its partition's offsets were deleted meanwhile or a batch later in
    /// the log completed first; a failed one leaves the previous committed offset. The pending
    /// entry goes only if it is this batch's.
    pub fn complete_offset_commit(
        &mut self,
        offsets: Vec<((String, i32), OffsetValue)>,
        log_offset: i64,
        replicated: bool,
    ) {
        for (key, value) in offsets {
            let Some(&pending) = self.pending_offsets.get(&key) else {
                continue;
            };
            if replicated
                && self
                    .offsets
                    .get(&key)
                    .is_none_or(|c| c.log_offset < log_offset)
            {
                self.offsets
                    .insert(key.clone(), CommittedOffset { value, log_offset });
            }
            if pending == log_offset {
                self.pending_offsets.remove(&key);
            }
        }
    }

    /// Kafka's `removeOffsets`: forgets the committed and the pending offset of a partition.
    pub fn remove_offset(&mut self, key: &(String, i32)) {
        self.offsets.remove(key);
        self.pending_offsets.remove(key);
    }

    /// Offsets whose retention has passed (KIP-211): in an empty group, counted from when it
    /// became empty (or from the commit for groups loaded without that time); in a stable
    /// consumer group, only topics nobody subscribes to any more, from their commit; for a
    /// group that only stores offsets, from each commit.
    pub fn expired_offsets(&self, now: i64, retention_ms: i64) -> Vec<(String, i32)> {
        let expired = |v: &OffsetValue, base: i64| match v.expire_timestamp {
            Some(at) => now >= at,
            None => now - base >= retention_ms,
        };
        // A partition with a commit in flight does not expire (Kafka neither).
        let select = |f: &dyn Fn(&(String, i32), &OffsetValue) -> bool| {
            self.offsets()
                .filter(|(k, v)| !self.pending_offsets.contains_key(*k) && f(k, v))
                .map(|(k, _)| k.clone())
                .collect()
        };
        match (&self.protocol_type, self.state) {
            (Some(_), GroupState::Empty) => {
                select(&|_, v| expired(v, self.state_timestamp.unwrap_or(v.commit_timestamp)))
            }
            (Some(pt), GroupState::Stable)
                if pt == CONSUMER_PROTOCOL_TYPE && self.subscribed_topics.is_some() =>
            {
                select(&|(topic, _), v| {
                    !self.is_subscribed_to(topic) && expired(v, v.commit_timestamp)
                })
            }
            (None, _) => select(&|_, v| expired(v, v.commit_timestamp)),
            _ => Vec::new(),
        }
    }

    /// An empty group without offsets (committed or pending) is finished: it turns Dead and
    /// the caller forgets it (writing a tombstone). Returns whether that happened.
    pub fn maybe_mark_dead(&mut self, now: i64) -> bool {
        if self.is_idle() && !self.has_offsets() {
            self.transition(GroupState::Dead, now);
            return true;
        }
        self.state == GroupState::Dead
    }

    /// DeleteGroups: only an empty group can go. Marks it Dead.
    pub fn delete(&mut self, now: i64) -> Result<(), ResponseError> {
        match self.state {
            GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => {
                self.transition(GroupState::Dead, now);
                Ok(())
            }
            _ => Err(ResponseError::NonEmptyGroup),
        }
    }

    /// OffsetDelete: which of `partitions` may lose their offsets (`Ok`) and which may not.
    #[allow(clippy::type_complexity)]
    pub fn check_offset_delete(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        match self.state {
            GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => Ok(partitions.iter().map(|_| Ok(())).collect()),
            _ if self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => Ok(partitions
                .iter()
                .map(|(topic, _)| {
                    if self.is_subscribed_to(topic) {
                        Err(ResponseError::GroupSubscribedToTopic)
                    } else {
                        Ok(())
                    }
                })
                .collect()),
            _ => Err(ResponseError::NonEmptyGroup),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
