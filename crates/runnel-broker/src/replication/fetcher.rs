//! The follower's side of replication: one fetcher task per leader this node follows
//! partitions of (Kafka's `ReplicaFetcherThread`), over one gRPC `Fetch` stream.
//!
//! A partition that starts following a leader (a new leader or leader epoch) first truncates:
//! it asks the leader where its own latest epoch ends (`OffsetForLeaderEpoch`) and cuts its
//! log there, so no replica keeps a tail the leader does not have (KIP-101, KIP-279). Then it
//! fetches from its log end: each response's batches are appended as the leader stored them,
//! and the leader's high watermark, capped at the local log end, becomes the follower's. A
//! fetch response may still report a diverging epoch (KIP-320); the follower truncates again.
//!
//! Partition errors (the leader does not know the new epoch yet, or has moved on) put the
//! partition aside for a short backoff; metadata changes re-plan the fetchers.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_rpc::error_code;
use runnel_rpc::replication::v1 as pb;
use runnel_rpc::replication::v1::replica_service_client::ReplicaServiceClient;
use runnel_rpc::ResponseError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::error::BrokerError;
use crate::replica_manager::{
    FollowAssignment, FollowAssignments, ImageApplier, ReplicaManager, TopicPartition,
};
use crate::replication::{truncation_offset, truncation_on_diverging_epoch, EpochEndOffset};

/// Backoff of a partition after an error, and of the fetcher after a failed call.
const PARTITION_BACKOFF: Duration = Duration::from_millis(200);
const CALL_BACKOFF: Duration = Duration::from_millis(500);
/// How long a fetch may go unanswered beyond the leader's long poll before the stream is
/// considered dead and reopened.
const RESPONSE_GRACE: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 receive window of a fetch stream: larger than a default fetch response (10 MiB).
const FLOW_CONTROL_WINDOW: u32 = 16 << 20;

impl ReplicaManager {
    /// Runs a fetcher for every leader this node follows partitions of, re-planning on each
    /// metadata change, until `shutdown` fires.
    pub async fn run_replica_fetchers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut followed = self.watch_followed();
        let mut fetchers: HashMap<i32, RunningFetcher> = HashMap::new();
        loop {
            let current = followed.borrow_and_update().clone();
            let image = self.image();
            let mut by_leader: BTreeMap<i32, FollowAssignments> = BTreeMap::new();
            for (tp, a) in current.iter() {
                by_leader
                    .entry(a.leader)
                    .or_default()
                    .insert(tp.clone(), a.clone());
            }
            fetchers.retain(|leader, f| {
                let keep = by_leader.contains_key(leader) && !f.task.is_finished();
                if !keep {
                    f.task.abort();
                }
                keep
            });
            for (leader, set) in by_leader {
                let Some(address) = image.brokers.get(&leader).map(|b| b.rpc_address.clone())
                else {
                    tracing::warn!(
                        leader,
                        "cannot follow a broker the metadata has no address for"
                    );
                    continue;
                };
                match fetchers.get(&leader) {
                    Some(f) if f.address == address => {
                        // Unchanged sets are not sent: a change interrupts the fetch in flight.
                        f.assignments.send_if_modified(|current| {
                            let changed = !same_assignments(current, &set);
                            if changed {
                                *current = Arc::new(set);
                            }
                            changed
                        });
                    }
                    _ => {
                        if let Some(old) = fetchers.remove(&leader) {
                            old.task.abort();
                        }
                        let (assignments, rx) = watch::channel(Arc::new(set));
                        let Some(fetcher) = Fetcher::new(&self, leader, &address, rx) else {
                            continue;
                        };
                        tracing::info!(leader, address, "starting a replica fetcher");
                        fetchers.insert(
                            leader,
                            RunningFetcher {
                                address,
                                assignments,
                                task: tokio::spawn(fetcher.run()),
                            },
                        );
                    }
                }
            }
            tokio::select! {
                r = followed.changed() => if r.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        for f in fetchers.into_values() {
            f.task.abort();
        }
    }
}

/// Whether two assignment sets name the same partitions, replicas and leader epochs.
fn same_assignments(a: &FollowAssignments, b: &FollowAssignments) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && va.leader_epoch == vb.leader_epoch
                && Arc::ptr_eq(&va.partition, &vb.partition)
        })
}

struct RunningFetcher {
    address: String,
    assignments: watch::Sender<Arc<FollowAssignments>>,
    task: JoinHandle<()>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Asks the leader where its latest epoch ends before fetching.
    Truncating,
    Fetching,
}

struct FetchState {
    assignment: FollowAssignment,
    topic_id: Bytes,
    phase: Phase,
    /// Left out of requests until then (after an error).
    not_before: Option<Instant>,
}

impl FetchState {
    fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }

    fn back_off(&mut self) {
        self.not_before = Some(Instant::now() + PARTITION_BACKOFF);
    }
}

/// An open fetch stream: requests go in through `requests`, answers come out of `responses`.
struct FetchSession {
    requests: mpsc::Sender<pb::ReplicaFetchRequest>,
    responses: tonic::Streaming<pb::ReplicaFetchResponse>,
}

struct Fetcher {
    node_id: i32,
    /// This node's metadata, for the broker epoch its requests carry.
    images: Arc<ImageApplier>,
    leader: i32,
    client: ReplicaServiceClient<Channel>,
    assignments: watch::Receiver<Arc<FollowAssignments>>,
    partitions: BTreeMap<TopicPartition, FetchState>,
    /// The assignment `partitions` was last synced with.
    synced: Arc<FollowAssignments>,
    /// `partitions`' keys by (topic id, partition), as responses name them.
    by_id: HashMap<(Bytes, i32), TopicPartition>,
    max_wait_ms: i32,
    max_bytes: i32,
    partition_max_bytes: i32,
    correlation_id: u64,
    /// The partition listed first in the next request: the one after the last that got
    /// records. The leader fills a response in request order up to `max_bytes`, so a fixed
    /// order would starve the partitions at the end under a backlog (Kafka rotates too).
    first: Option<TopicPartition>,
    /// Logged once per outage, not on every retry.
    unreachable: bool,
}

impl Fetcher {
    fn new(
        manager: &ReplicaManager,
        leader: i32,
        address: &str,
        assignments: watch::Receiver<Arc<FollowAssignments>>,
    ) -> Option<Self> {
        let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::error!(leader, address, error = %e, "cannot follow a broker whose RPC address is not a valid host:port");
                return None;
            }
        };
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // HTTP/2's default 64 KiB flow-control windows would make every megabyte of a
            // fetch response wait for window updates; the follower takes whole responses.
            .initial_stream_window_size(Some(FLOW_CONTROL_WINDOW))
            .initial_connection_window_size(Some(FLOW_CONTROL_WINDOW))
            .connect_lazy();
        let client = ReplicaServiceClient::new(channel)
            .max_decoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES);
        let config = manager.config();
        let clamp = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        Some(Self {
            node_id: manager.node_id(),
            images: manager.images(),
            leader,
            client,
            assignments,
            partitions: BTreeMap::new(),
            synced: Arc::default(),
            by_id: HashMap::new(),
            max_wait_ms: i32::try_from(config.replica_fetch_wait_max_ms()).unwrap_or(500),
            max_bytes: clamp(config.replica_fetch_response_max_bytes()),
            partition_max_bytes: clamp(config.replica_fetch_max_bytes()),
            correlation_id: 0,
            first: None,
            unreachable: false,
        })
    }

    async fn run(mut self) {
        let mut session: Option<FetchSession> = None;
        loop {
            // Every wait below also returns on a new assignment (`changed()` marks it seen,
            // so the set is compared here rather than relying on the flag).
            self.sync_assignments();
            let now = Instant::now();
            if self
                .partitions
                .values()
                .any(|s| s.phase == Phase::Truncating && s.ready(now))
            {
                self.truncate().await;
                continue;
            }
            let request = self.build_request(now);
            if request.partitions.is_empty() {
                self.idle().await;
                continue;
            }
            if session.is_none() {
                match self.open_session().await {
                    Some(s) => session = Some(s),
                    None => {
                        self.wait_or_reassign(CALL_BACKOFF).await;
                        continue;
                    }
                }
            }
            let s = session.as_mut().expect("opened above");
            let correlation_id = request.correlation_id;
            if s.requests.send(request).await.is_err() {
                session = None;
                continue;
            }
            let wait = Duration::from_millis(self.max_wait_ms.max(0) as u64) + RESPONSE_GRACE;
            let answer = tokio::select! {
                r = tokio::time::timeout(wait, s.responses.message()) => Some(r),
                // New leaders or partitions: drop this stream (the leader sees it close) and
                // fetch with the new set at once instead of after the long poll.
                _ = self.assignments.changed() => None,
            };
            match answer {
                None => session = None,
                Some(Ok(Ok(Some(response)))) if response.correlation_id == correlation_id => {
                    self.reachable();
                    self.handle_response(response);
                }
                Some(Ok(Ok(Some(response)))) => {
                    tracing::warn!(
                        leader = self.leader,
                        expected = correlation_id,
                        got = response.correlation_id,
                        "a fetch answer out of order; reopening the stream"
                    );
                    session = None;
                }
                Some(Ok(Ok(None))) => session = None,
                Some(Ok(Err(status))) => {
                    self.call_failed("fetch", &status.to_string());
                    session = None;
                    self.wait_or_reassign(CALL_BACKOFF).await;
                }
                Some(Err(_)) => {
                    tracing::warn!(
                        leader = self.leader,
                        "a fetch went unanswered; reopening the stream"
                    );
                    session = None;
                }
            }
        }
    }

    /// Takes the latest assignment: new partitions and new leader epochs start truncating.
    fn sync_assignments(&mut self) {
        let set = self.assignments.borrow_and_update().clone();
        if Arc::ptr_eq(&set, &self.synced) {
            return;
        }
        self.synced = set.clone();
        self.partitions.retain(|tp, _| set.contains_key(tp));
        for (tp, a) in set.iter() {
            let same = self.partitions.get(tp).is_some_and(|s| {
                s.assignment.leader_epoch == a.leader_epoch
                    && Arc::ptr_eq(&s.assignment.partition, &a.partition)
            });
            if !same {
                self.partitions.insert(
                    tp.clone(),
                    FetchState {
                        assignment: a.clone(),
                        topic_id: Bytes::copy_from_slice(a.partition.topic_id().as_bytes()),
                        phase: Phase::Truncating,
                        not_before: None,
                    },
                );
            }
        }
        self.by_id = self
            .partitions
            .iter()
            .map(|(tp, s)| ((s.topic_id.clone(), tp.1), tp.clone()))
            .collect();
    }

    /// Nothing to fetch now: wait for new assignments or the end of the earliest backoff.
    async fn idle(&mut self) {
        let next = self.partitions.values().filter_map(|s| s.not_before).min();
        let wait = next.map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(Instant::now())
        });
        self.wait_or_reassign(wait).await;
    }

    async fn wait_or_reassign(&mut self, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.assignments.changed() => {}
        }
    }

    async fn open_session(&mut self) -> Option<FetchSession> {
        // A channel of one: the next request is sent only after the previous answer.
        let (tx, rx) = mpsc::channel::<pb::ReplicaFetchRequest>(1);
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        match self.client.fetch(stream).await {
            Ok(response) => Some(FetchSession {
                requests: tx,
                responses: response.into_inner(),
            }),
            Err(status) => {
                self.call_failed("fetch", &status.to_string());
                None
            }
        }
    }

    fn build_request(&mut self, now: Instant) -> pb::ReplicaFetchRequest {
        let mut partitions = Vec::new();
        for (_, s) in rotated(&mut self.partitions, self.first.as_ref()) {
            if s.phase != Phase::Fetching || !s.ready(now) {
                continue;
            }
            match s.assignment.partition.fetch_position() {
                Ok(pos) => partitions.push(pb::FetchPartition {
                    topic_id: s.topic_id.clone(),
                    partition: s.assignment.partition.index(),
                    current_leader_epoch: s.assignment.leader_epoch,
                    fetch_offset: pos.log_end_offset,
                    last_fetched_epoch: pos.last_fetched_epoch,
                    log_start_offset: pos.log_start_offset,
                    partition_max_bytes: self.partition_max_bytes,
                }),
                // The log was deleted; the next metadata change drops the partition.
                Err(_) => s.back_off(),
            }
        }
        self.correlation_id += 1;
        pb::ReplicaFetchRequest {
            correlation_id: self.correlation_id,
            replica_id: self.node_id,
            // This broker's epoch as its metadata shows it (-1 before its registration is
            // applied here): the leader lets only fetches under the current epoch add it to
            // an ISR (KIP-903).
            broker_epoch: self
                .images
                .image()
                .brokers
                .get(&self.node_id)
                .map_or(-1, |b| b.epoch),
            max_wait_ms: self.max_wait_ms,
            min_bytes: 1,
            max_bytes: self.max_bytes,
            partitions,
        }
    }

    fn handle_response(&mut self, response: pb::ReplicaFetchResponse) {
        if let Some(error) = error_code::decode(response.error_code) {
            tracing::warn!(
                leader = self.leader,
                %error,
                "the leader refused a fetch"
            );
            for s in self.partitions.values_mut() {
                s.back_off();
            }
            return;
        }
        let mut last_served = None;
        for p in response.partitions {
            let Some(tp) = self.by_id.get(&(p.topic_id.clone(), p.partition)) else {
                continue;
            };
            let Some(state) = self.partitions.get_mut(tp) else {
                continue;
            };
            if state.phase != Phase::Fetching {
                continue;
            }
            let partition = state.assignment.partition.clone();
            let epoch = state.assignment.leader_epoch;
            if let Some(error) = error_code::decode(p.error_code) {
                if error == ResponseError::OffsetOutOfRange {
                    let behind = partition
                        .fetch_position()
                        .is_ok_and(|pos| pos.log_end_offset < p.log_start_offset);
                    if behind {
                        // Retention on the leader deleted what this replica misses.
                        match partition.reset_as_follower(epoch, p.log_start_offset) {
                            Ok(()) => continue,
                            Err(e) => {
                                tracing::warn!(topic = tp.0, partition = tp.1, error = %e, "cannot restart the log at the leader's log start")
                            }
                        }
                    } else {
                        state.phase = Phase::Truncating;
                    }
                }
                tracing::debug!(
                    topic = tp.0,
                    partition = tp.1,
                    leader = self.leader,
                    %error,
                    "the leader refused a partition fetch"
                );
                state.back_off();
                continue;
            }
            if let Some(d) = p.diverging_epoch {
                let result = partition.epochs_and_offsets().and_then(|at| {
                    let t = truncation_on_diverging_epoch(
                        at.log_end_offset,
                        &at.epochs,
                        EpochEndOffset {
                            epoch: d.epoch,
                            end_offset: d.end_offset,
                        },
                    );
                    partition
                        .truncate_as_follower(epoch, t.offset)
                        .map(|_| t.complete)
                });
                match result {
                    Ok(true) => {}
                    Ok(false) => state.phase = Phase::Truncating,
                    Err(e) => {
                        tracing::warn!(topic = tp.0, partition = tp.1, error = %e, "cannot truncate to the leader's diverging epoch");
                        state.back_off();
                    }
                }
                continue;
            }
            match partition.append_as_follower(epoch, &p.records, p.high_watermark) {
                Ok(_) if !p.records.is_empty() => last_served = Some(tp),
                Ok(_) => {}
                // The role changed under this fetch; the next assignment says what to do.
                Err(BrokerError::NotLeader { .. }) => state.back_off(),
                Err(e) => {
                    tracing::warn!(topic = tp.0, partition = tp.1, leader = self.leader, error = %e, "cannot append what the leader sent; truncating again");
                    state.phase = Phase::Truncating;
                    state.back_off();
                }
            }
        }
        if let Some(last) = last_served {
            self.first = after(&self.partitions, last).cloned();
        }
    }

    /// Truncates every partition that starts following (one batched OffsetForLeaderEpoch).
    async fn truncate(&mut self) {
        let now = Instant::now();
        let mut asked = Vec::new();
        let mut requests = Vec::new();
        for (tp, s) in self.partitions.iter_mut() {
            if s.phase != Phase::Truncating || !s.ready(now) {
                continue;
            }
            let Ok(at) = s.assignment.partition.epochs_and_offsets() else {
                s.back_off();
                continue;
            };
            match at.epochs.last() {
                Some(&(latest, _)) => {
                    requests.push(pb::OffsetForLeaderEpochPartition {
                        topic_id: s.topic_id.clone(),
                        partition: tp.1,
                        current_leader_epoch: s.assignment.leader_epoch,
                        leader_epoch: latest,
                    });
                    asked.push(tp.clone());
                }
                None => {
                    // No epochs to compare: keep what is known to be committed.
                    let t = truncation_offset(
                        at.log_end_offset,
                        at.high_watermark,
                        &at.epochs,
                        EpochEndOffset::UNDEFINED,
                    );
                    finish_truncation(tp, s, t.offset, true);
                }
            }
        }
        if requests.is_empty() {
            return;
        }
        let call = self
            .client
            .offset_for_leader_epoch(pb::OffsetForLeaderEpochRequest {
                replica_id: self.node_id,
                partitions: requests,
            });
        let answer = tokio::select! {
            r = tokio::time::timeout(RESPONSE_GRACE, call) => r,
            _ = self.assignments.changed() => return,
        };
        let results = match answer {
            Ok(Ok(response)) => {
                self.reachable();
                response.into_inner().partitions
            }
            Ok(Err(status)) => {
                self.call_failed("OffsetForLeaderEpoch", &status.to_string());
                for tp in &asked {
                    if let Some(s) = self.partitions.get_mut(tp) {
                        s.not_before = Some(Instant::now() + CALL_BACKOFF);
                    }
                }
                return;
            }
            Err(_) => {
                self.call_failed("OffsetForLeaderEpoch", "no answer in time");
                return;
            }
        };
        for r in results {
            let Some(key) = asked.iter().find(|k| {
                k.1 == r.partition
                    && self
                        .partitions
                        .get(*k)
                        .is_some_and(|s| s.topic_id == r.topic_id)
            }) else {
                continue;
            };
            let key = key.clone();
            let Some(s) = self.partitions.get_mut(&key) else {
                continue;
            };
            if let Some(error) = error_code::decode(r.error_code) {
                tracing::debug!(
                    topic = key.0,
                    partition = key.1,
                    leader = self.leader,
                    %error,
                    "OffsetForLeaderEpoch refused; retrying"
                );
                s.back_off();
                continue;
            }
            let Ok(at) = s.assignment.partition.epochs_and_offsets() else {
                s.back_off();
                continue;
            };
            let t = truncation_offset(
                at.log_end_offset,
                at.high_watermark,
                &at.epochs,
                EpochEndOffset {
                    epoch: r.leader_epoch,
                    end_offset: r.end_offset,
                },
            );
            finish_truncation(&key, s, t.offset, t.complete);
        }
    }

    fn call_failed(&mut self, call: &str, error: &str) {
        if !self.unreachable {
            tracing::warn!(
                leader = self.leader,
                call,
                error,
                "cannot reach the leader for replication; retrying"
            );
            self.unreachable = true;
        }
    }

    fn reachable(&mut self) {
        if std::mem::take(&mut self.unreachable) {
            tracing::info!(leader = self.leader, "reached the leader again");
        }
    }
}

/// Truncates to `offset`; the partition fetches next when `complete`, else asks again.
/// The map's entries from `first` (inclusive) to the end, then those before it: the order of
/// a fetch request's partitions. From the start when `first` is `None`.
fn rotated<'a, K: Ord, V>(
    map: &'a mut BTreeMap<K, V>,
    first: Option<&K>,
) -> impl Iterator<Item = (&'a K, &'a mut V)> {
    let (before, from): (Vec<_>, Vec<_>) = map
        .iter_mut()
        .partition(|(k, _)| first.is_some_and(|f| *k < f));
    from.into_iter().chain(before)
}

/// The key after `key`, `None` past the last (the next request starts from the beginning).
fn after<'a, K: Ord, V>(map: &'a BTreeMap<K, V>, key: &K) -> Option<&'a K> {
    map.range((Bound::Excluded(key), Bound::Unbounded))
        .next()
        .map(|(k, _)| k)
}

fn finish_truncation(tp: &TopicPartition, s: &mut FetchState, offset: i64, complete: bool) {
    match s
        .assignment
        .partition
        .truncate_as_follower(s.assignment.leader_epoch, offset)
    {
        Ok(_) => {
            if complete {
                s.phase = Phase::Fetching;
            }
        }
        Err(e) => {
            tracing::warn!(topic = tp.0, partition = tp.1, error = %e, "cannot truncate before following the leader");
            s.back_off();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(map: &mut BTreeMap<i32, ()>, first: Option<i32>) -> Vec<i32> {
        rotated(map, first.as_ref()).map(|(k, _)| *k).collect()
    }

    /// Under a backlog the leader fills only the first partitions listed; the order starts
    /// after the last partition served, so every partition gets its turn.
    #[test]
    fn requests_start_after_the_last_partition_served() {
        let mut map: BTreeMap<i32, ()> = (0..4).map(|k| (k, ())).collect();
        assert_eq!(order(&mut map, None), [0, 1, 2, 3]);
        let next = after(&map, &1).copied();
        assert_eq!(next, Some(2));
        assert_eq!(order(&mut map, next), [2, 3, 0, 1]);
        assert_eq!(after(&map, &3), None);
        assert_eq!(order(&mut map, None), [0, 1, 2, 3]);
        // A first partition no longer followed still orders the rest around its place.
        map.remove(&2);
        assert_eq!(order(&mut map, Some(2)), [3, 0, 1]);
    }
}
