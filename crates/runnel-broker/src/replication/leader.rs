//! The leader's side of ISR replication for one partition, after Kafka's `Partition` and
//! `Replica` (3.x, KRaft mode).
//!
//! A follower's fetch offset is its log end offset (LEO): fetching from offset X acknowledges
//! everything below X. From those acknowledgements the leader derives:
//! - the high watermark (HW): the minimum LEO over the ISR, never decreasing;
//! - ISR changes: followers that stopped catching up are proposed for removal, followers that
//!   caught up are proposed for addition. The controller commits a change (AlterPartition);
//!   until it answers, one change is in flight and no other is proposed;
//! - acks=all: a batch is committed once the HW passes it.
//!
//! Safety rests on the HW using Kafka's *maximal* ISR: the committed ISR plus the members a
//! pending change adds. A member being removed still holds back the HW until the controller
//! accepts; a member being added counts at once. So every replica the controller may hold in
//! the ISR (and may elect) has every offset below the HW.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use runnel_controller::image::PartitionInfo;

/// An offset not known yet (a follower that has not fetched since this broker became leader).
const UNKNOWN_OFFSET: i64 = -1;

/// AlterPartition errors by which the controller says it did not apply the change.
const NOT_APPLIED: [ResponseError; 2] = [
    ResponseError::IneligibleReplica,
    ResponseError::OperationNotAttempted,
];

/// An ISR change for the controller: the fields of `ControllerCommand::AlterPartition` that
/// the leader decides. The epochs are the ones the leader last saw, so the controller refuses
/// a change built on a state that has moved on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    pub new_isr: Vec<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// For an expansion, the replica joining and the broker epoch its qualifying fetch
    /// carried (KIP-903): the controller refuses the change if that broker has registered
    /// again since, so a fetch from before a restart cannot vouch for the restarted broker.
    pub joining: Option<(i32, i64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Kafka's OFFSET_OUT_OF_RANGE: the follower claims offsets the leader does not have.
    #[error("fetch offset {fetch_offset} is outside the leader's log [0, {log_end_offset}]")]
    OffsetOutOfRange {
        fetch_offset: i64,
        log_end_offset: i64,
    },
}

/// What a follower's fetch changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The new HW when it moved: wake parked fetches and complete acks=all requests.
    pub high_watermark: Option<i64>,
    /// An ISR expansion to send to the controller.
    pub isr_change: Option<IsrChange>,
}

/// What a new metadata image means for this leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageUpdate {
    /// Still the leader at the same leader epoch; `high_watermark` is set when the image's ISR
    /// moved it.
    Applied { high_watermark: Option<i64> },
    /// The image names another leader or leader epoch: drop this state.
    NotLeader,
}

/// What the leader knows of one follower (Kafka's `ReplicaState`).
#[derive(Clone, Debug)]
struct FollowerState {
    log_end_offset: i64,
    /// The leader's LEO when this follower last fetched (the maximum seen).
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
    last_caught_up_ms: i64,
}

impl FollowerState {
    /// Kafka's `resetReplicaState` for a new leader: an ISR member gets the full lag time to
    /// show up; anyone else counts as never caught up.
    fn new(in_isr: bool, now_ms: i64) -> Self {
        Self {
            log_end_offset: UNKNOWN_OFFSET,
            last_fetch_leader_leo: UNKNOWN_OFFSET,
            last_fetch_ms: 0,
            last_caught_up_ms: if in_isr { now_ms } else { 0 },
        }
    }

    /// Kafka's `Replica.updateFetchStateOrThrow`. The follower was caught up
    /// - at `now_ms` if it fetched from at least the leader's current LEO;
    /// - at the time of its previous fetch if it fetched from at least the leader's LEO at
    ///   that previous fetch: it has everything the leader had then.
    ///
    /// A follower that keeps fetching but never reaches the leader's LEO under a steady stream
    /// of appends still counts as caught up this way, while one falling further behind does not.
    fn on_fetch(&mut self, fetch_offset: i64, leader_leo: i64, now_ms: i64) {
        if fetch_offset >= leader_leo {
            self.last_caught_up_ms = self.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= self.last_fetch_leader_leo {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.log_end_offset = fetch_offset;
        self.last_fetch_leader_leo = self.last_fetch_leader_leo.max(leader_leo);
        self.last_fetch_ms = now_ms;
    }

    /// Kafka's `ReplicaState.isCaughtUp`.
    fn is_caught_up(&self, leader_leo: i64, now_ms: i64, max_lag_ms: i64) -> bool {
        self.log_end_offset == leader_leo
            || now_ms.saturating_sub(self.last_caught_up_ms) <= max_lag_ms
    }
}

/// The replication state of one partition this broker leads, for one leader epoch.
#[derive(Clone, Debug)]
pub struct LeaderState {
    id: i32,
    replicas: Vec<i32>,
    /// The ISR the controller committed.
    isr: Vec<i32>,
    leader_epoch: i32,
    partition_epoch: i32,
    /// The leader's LEO when it took this leader epoch: a follower below it has not yet
    /// fetched anything of this epoch, so it may still hold a divergent tail.
    leader_epoch_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    followers: BTreeMap<i32, FollowerState>,
    /// The ISR change sent to the controller and not answered yet.
    pending: Option<IsrChange>,
    /// The topic's min.insync.replicas: the HW stays while the ISR is smaller (KIP-966), so
    /// a replica that left such an ISR holds everything committed and may lead again.
    min_insync_replicas: usize,
}

impl LeaderState {
    /// The state of a broker that just became `partition.leader`. `high_watermark` is the
    /// one the log knows (checkpointed or learnt as a follower); the HW starts there, never
    /// above the LEO, and never moves back. With the ISR being just the leader it is the LEO.
    pub fn new(
        partition: &PartitionInfo,
        log_end_offset: i64,
        high_watermark: i64,
        leader_epoch_start_offset: i64,
        now_ms: i64,
    ) -> Self {
        Self::with_min_insync_replicas(
            partition,
            log_end_offset,
            high_watermark,
            leader_epoch_start_offset,
            now_ms,
            1,
        )
    }

    /// [`Self::new`] for a topic whose min.insync.replicas is `min_insync_replicas`.
    pub fn with_min_insync_replicas(
        partition: &PartitionInfo,
        log_end_offset: i64,
        high_watermark: i64,
        leader_epoch_start_offset: i64,
        now_ms: i64,
        min_insync_replicas: usize,
    ) -> Self {
        let id = partition.leader;
        let followers = partition
            .replicas
            .iter()
            .filter(|&&r| r != id)
            .map(|&r| (r, FollowerState::new(partition.isr.contains(&r), now_ms)))
            .collect();
        let mut state = Self {
            id,
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            leader_epoch_start_offset,
            log_end_offset,
            high_watermark: high_watermark.min(log_end_offset),
            followers,
            pending: None,
            min_insync_replicas: min_insync_replicas.max(1),
        };
        state.maybe_increment_hw();
        state
    }

    /// A new min.insync.replicas for the topic; returns the new HW when a lower value let it
    /// move.
    pub fn set_min_insync_replicas(&mut self, value: usize) -> Option<i64> {
        self.min_insync_replicas = value.max(1);
        self.maybe_increment_hw()
    }

    pub fn leader_id(&self) -> i32 {
        self.id
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn leader_epoch_start_offset(&self) -> i64 {
        self.leader_epoch_start_offset
    }

    /// Whether the high watermark is known in this leader epoch (KIP-207): a new leader starts
    /// with the high watermark it had as a follower, which may lag the one the previous leader
    /// served, until its followers have fetched up to where its epoch began.
    pub fn high_watermark_known(&self) -> bool {
        self.high_watermark >= self.leader_epoch_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// The ISR the controller committed.
    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    /// The ISR change in flight, if any.
    pub fn pending(&self) -> Option<&IsrChange> {
        self.pending.as_ref()
    }

    /// A fetch by `replica` from `fetch_offset`, served when the leader's LEO was
    /// `leader_leo`. Fetches by brokers that are not followers of this partition are ignored.
    /// `join_epoch` is the broker epoch the fetch carried, or `None` while the metadata has
    /// the replica fenced or registered under another epoch (Kafka's `isReplicaIsrEligible`):
    /// the controller would refuse it, so no expansion is proposed.
    pub fn on_follower_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: i64,
        join_epoch: Option<i64>,
    ) -> Result<FetchOutcome, FetchError> {
        // A LEO read before a concurrent append may be stale; the log only grows while leading.
        let log_end_offset = self.log_end_offset.max(leader_leo);
        let Some(follower) = self.followers.get_mut(&replica) else {
            return Ok(FetchOutcome::default());
        };
        if !(0..=log_end_offset).contains(&fetch_offset) {
            return Err(FetchError::OffsetOutOfRange {
                fetch_offset,
                log_end_offset,
            });
        }
        follower.on_fetch(fetch_offset, leader_leo, now_ms);
        self.log_end_offset = log_end_offset;
        // Kafka expands before moving the HW, so a joining member holds the HW at its LEO.
        let isr_change = join_epoch.and_then(|epoch| self.maybe_expand(replica, epoch));
        let high_watermark = self.maybe_increment_hw();
        Ok(FetchOutcome {
            high_watermark,
            isr_change,
        })
    }

    /// The leader appended to its log; returns the new HW when it moved (a one-member ISR).
    pub fn on_leader_append(&mut self, leader_leo: i64) -> Option<i64> {
        self.log_end_offset = self.log_end_offset.max(leader_leo);
        self.maybe_increment_hw()
    }

    /// Kafka's `getOutOfSyncReplicas`: proposes removing the ISR followers that have not been
    /// caught up for more than `replica_lag_time_max_ms`. Call it periodically.
    pub fn maybe_shrink(&mut self, now_ms: i64, replica_lag_time_max_ms: i64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let in_sync = |r: &i32| {
            *r == self.id
                || self.followers.get(r).is_some_and(|f| {
                    f.is_caught_up(self.log_end_offset, now_ms, replica_lag_time_max_ms)
                })
        };
        let new_isr: Vec<i32> = self.isr.iter().copied().filter(in_sync).collect();
        (new_isr.len() < self.isr.len()).then(|| self.propose(new_isr, None))
    }

    /// The controller's answer to `change` (Kafka's `handleAlterPartitionUpdate`). An accepted
    /// change becomes the committed ISR. A lost or timed-out request is re-sent by the caller,
    /// not reported here, so an earlier attempt may have been applied: only errors proving
    /// the change was not applied (INELIGIBLE_REPLICA, OPERATION_NOT_ATTEMPTED) drop it, and
    /// the next fetch or [`Self::maybe_shrink`] may propose again. On any other error it stays
    /// pending, so the HW keeps counting the maximal ISR, until an image with a newer
    /// partition epoch settles it. Answers to a change no longer pending are ignored.
    /// Returns the new HW when it moved.
    pub fn on_alter_result(
        &mut self,
        change: &IsrChange,
        result: Result<PartitionInfo, ResponseError>,
    ) -> Option<i64> {
        if self.pending.as_ref() != Some(change) {
            return None;
        }
        match result {
            Ok(p) => {
                self.pending = None;
                // `>=`: the controller accepts a change that alters nothing without a new epoch.
                if p.leader_epoch == self.leader_epoch && p.partition_epoch >= self.partition_epoch
                {
                    self.isr = p.isr;
                    self.partition_epoch = p.partition_epoch;
                }
            }
            Err(code) if NOT_APPLIED.contains(&code) => self.pending = None,
            Err(_) => {}
        }
        self.maybe_increment_hw()
    }

    /// The partition's state in a new metadata image. A newer partition epoch replaces the ISR
    /// (the controller may have shrunk it, e.g. fencing a broker) and drops the pending change:
    /// it names an older epoch, so the controller either refuses it or already applied it.
    pub fn on_image(&mut self, partition: &PartitionInfo) -> ImageUpdate {
        if partition.leader != self.id || partition.leader_epoch != self.leader_epoch {
            return ImageUpdate::NotLeader;
        }
        if partition.partition_epoch > self.partition_epoch {
            self.isr = partition.isr.clone();
            self.partition_epoch = partition.partition_epoch;
            self.pending = None;
            if partition.replicas != self.replicas {
                self.followers.retain(|r, _| partition.replicas.contains(r));
                for &r in partition.replicas.iter().filter(|&&r| r != self.id) {
                    self.followers
                        .entry(r)
                        .or_insert_with(|| FollowerState::new(false, 0));
                }
                self.replicas = partition.replicas.clone();
            }
        }
        ImageUpdate::Applied {
            high_watermark: self.maybe_increment_hw(),
        }
    }

    /// Checked before an acks=all append: Kafka answers NOT_ENOUGH_REPLICAS when the
    /// committed ISR is smaller than `min.insync.replicas`.
    pub fn check_enough_replicas(&self, min_insync_replicas: usize) -> bool {
        self.isr.len() >= min_insync_replicas
    }

    /// Replicas in the maximal ISR (committed ISR plus a pending change's additions): the
    /// copies an offset below the HW is known to have. Kafka answers an acks=all produce
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND when this fell below `min.insync.replicas` by the
    /// time the HW passed it.
    pub fn maximal_isr_len(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| self.in_maximal_isr(**r))
            .count()
    }

    /// Whether an acks=all batch is committed: `required_offset` is its last offset + 1.
    pub fn is_committed(&self, required_offset: i64) -> bool {
        self.high_watermark >= required_offset
    }

    /// Kafka's `isFollowerInSync`: a follower joins once its LEO reaches the HW (it has
    /// everything committed) and the start of this leader epoch (it truncated any divergent
    /// tail and fetched in this epoch).
    fn maybe_expand(&mut self, replica: i32, broker_epoch: i64) -> Option<IsrChange> {
        if self.pending.is_some() || self.isr.contains(&replica) {
            return None;
        }
        let leo = self.followers.get(&replica)?.log_end_offset;
        if leo < self.high_watermark || leo < self.leader_epoch_start_offset {
            return None;
        }
        let new_isr = self
            .replicas
            .iter()
            .copied()
            .filter(|r| *r == replica || self.isr.contains(r))
            .collect();
        Some(self.propose(new_isr, Some((replica, broker_epoch))))
    }

    fn propose(&mut self, new_isr: Vec<i32>, joining: Option<(i32, i64)>) -> IsrChange {
        let change = IsrChange {
            new_isr,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            joining,
        };
        self.pending = Some(change.clone());
        change
    }

    /// Kafka's *maximal* ISR: the committed one plus the members a pending change adds.
    fn in_maximal_isr(&self, replica: i32) -> bool {
        self.isr.contains(&replica)
            || self
                .pending
                .as_ref()
                .is_some_and(|c| c.new_isr.contains(&replica))
    }

    /// HW = min LEO over the maximal ISR, the leader's included; it only moves forward, and
    /// not at all while the committed ISR is smaller than min.insync.replicas (KIP-966).
    fn maybe_increment_hw(&mut self) -> Option<i64> {
        if self.isr.len() < self.min_insync_replicas {
            return None;
        }
        let hw = self
            .followers
            .iter()
            .filter(|(r, _)| self.in_maximal_isr(**r))
            .map(|(_, f)| f.log_end_offset)
            .fold(self.log_end_offset, i64::min);
        if hw > self.high_watermark {
            self.high_watermark = hw;
            Some(hw)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 1_000;
    const BROKER_EPOCH: i64 = 40;

    fn partition(isr: &[i32], partition_epoch: i32) -> PartitionInfo {
        PartitionInfo {
            index: 0,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader: 1,
            leader_epoch: 5,
            partition_epoch,
            elr: Vec::new(),
            last_known_leader: None,
        }
    }

    /// Broker 1 leads with ISR {1,2,3}, LEO 10, HW 4, leader epoch starting at 10.
    fn leader() -> LeaderState {
        LeaderState::new(&partition(&[1, 2, 3], 7), 10, 4, 10, 0)
    }

    fn fetch(s: &mut LeaderState, replica: i32, offset: i64, now: i64) -> FetchOutcome {
        let leo = s.log_end_offset();
        s.on_follower_fetch(replica, offset, leo, now, Some(BROKER_EPOCH))
            .unwrap()
    }

    fn accepted(change: &IsrChange, partition_epoch: i32) -> Result<PartitionInfo, ResponseError> {
        Ok(partition(&change.new_isr, partition_epoch))
    }

    #[test]
    fn hw_stays_while_the_isr_is_below_min_isr() {
        // KIP-966: a lone leader with min.insync.replicas=2 commits nothing, even acks=1.
        let mut s = LeaderState::with_min_insync_replicas(&partition(&[1], 7), 10, 4, 10, 0, 2);
        assert_eq!(s.high_watermark(), 4);
        assert_eq!(s.on_leader_append(12), None);
        assert!(!s.is_committed(5));
        // Lowering the topic's value lets it move.
        assert_eq!(s.set_min_insync_replicas(1), Some(12));
    }

    #[test]
    fn hw_starts_at_the_known_value_and_a_lone_leader_commits_at_once() {
        let s = leader();
        assert_eq!(s.high_watermark(), 4);
        // A stored HW above the LEO is clamped.
        let s = LeaderState::new(&partition(&[1, 2], 7), 10, 12, 10, 0);
        assert_eq!(s.high_watermark(), 10);
        let mut s = LeaderState::new(&partition(&[1], 7), 10, 4, 10, 0);
        assert_eq!(s.high_watermark(), 10);
        assert_eq!(s.on_leader_append(12), Some(12));
        assert!(s.is_committed(12) && !s.is_committed(13));
    }

    #[test]
    fn hw_is_the_minimum_over_the_isr_and_never_decreases() {
        let mut s = leader();
        assert_eq!(fetch(&mut s, 2, 8, 1).high_watermark, None); // 3 not heard from
        assert_eq!(fetch(&mut s, 3, 6, 1).high_watermark, Some(6));
        assert_eq!(fetch(&mut s, 3, 10, 2).high_watermark, Some(8));
        assert_eq!(s.on_leader_append(15), None);
        assert_eq!(fetch(&mut s, 2, 15, 3).high_watermark, Some(10));
        // A follower that truncated (lower fetch offset) does not move the HW back.
        assert_eq!(fetch(&mut s, 2, 9, 4).high_watermark, None);
        assert_eq!(s.high_watermark(), 10);
    }

    #[test]
    fn a_new_leader_knows_its_hw_once_it_reaches_the_epoch_start() {
        // KIP-207: HW 4 is what this replica knew as a follower; its epoch began at 10.
        let mut s = leader();
        assert!(!s.high_watermark_known());
        fetch(&mut s, 2, 10, 1);
        assert!(
            !s.high_watermark_known(),
            "3 has not fetched yet: HW {}",
            s.high_watermark()
        );
        fetch(&mut s, 3, 10, 1);
        assert!(s.high_watermark_known());
    }

    #[test]
    fn bad_fetches_are_refused_or_ignored() {
        let mut s = leader();
        let err = s
            .on_follower_fetch(2, 11, 10, 1, Some(BROKER_EPOCH))
            .unwrap_err();
        assert_eq!(
            err,
            FetchError::OffsetOutOfRange {
                fetch_offset: 11,
                log_end_offset: 10
            }
        );
        assert!(s
            .on_follower_fetch(2, -1, 10, 1, Some(BROKER_EPOCH))
            .is_err());
        // Not a follower of this partition: the leader itself, or a stranger.
        for r in [1, 9] {
            assert_eq!(
                s.on_follower_fetch(r, 10, 10, 1, Some(BROKER_EPOCH)),
                Ok(FetchOutcome::default())
            );
        }
        assert_eq!(s.high_watermark(), 4);
    }

    #[test]
    fn caught_up_time_follows_kafkas_rule() {
        let mut s = leader();
        // t=100: follower 2 fetches from the LEO (10): caught up at 100.
        fetch(&mut s, 2, 10, 100);
        s.on_leader_append(20);
        // t=500: from 12, behind the LEO (20) but past the LEO at its previous fetch (10):
        // caught up at that previous fetch (100).
        fetch(&mut s, 2, 12, 500);
        s.on_leader_append(30);
        // t=900: from 25, past the LEO at the previous fetch (20): caught up at 500.
        fetch(&mut s, 2, 25, 900);
        // t=1000: from 28, below the LEO at the previous fetch (30): no credit.
        fetch(&mut s, 2, 28, 1_000);
        fetch(&mut s, 3, 30, 1_000);
        assert_eq!(s.maybe_shrink(500 + LAG, LAG), None);
        let change = s.maybe_shrink(501 + LAG, LAG).unwrap();
        assert_eq!(change.new_isr, [1, 3]);
    }

    #[test]
    fn a_follower_at_the_leader_leo_is_never_out_of_sync() {
        let mut s = leader();
        fetch(&mut s, 2, 10, 0);
        fetch(&mut s, 3, 10, 0);
        assert_eq!(s.maybe_shrink(100 * LAG, LAG), None);
    }

    #[test]
    fn shrink_holds_the_hw_until_the_controller_accepts() {
        let mut s = leader();
        fetch(&mut s, 2, 10, 0);
        fetch(&mut s, 3, 5, 0);
        assert_eq!(s.high_watermark(), 5);
        let change = s.maybe_shrink(LAG + 1, LAG).unwrap();
        assert_eq!(
            change,
            IsrChange {
                new_isr: vec![1, 2],
                leader_epoch: 5,
                partition_epoch: 7,
                joining: None,
            }
        );
        assert_eq!(s.pending(), Some(&change));
        // One change at a time.
        assert_eq!(s.maybe_shrink(10 * LAG, LAG), None);
        // Replica 3 still counts for the HW while the change is pending.
        assert_eq!(fetch(&mut s, 2, 10, LAG + 2).high_watermark, None);
        assert!(s.check_enough_replicas(3));
        assert_eq!(s.on_alter_result(&change, accepted(&change, 8)), Some(10));
        assert_eq!(
            (s.isr(), s.partition_epoch(), s.pending()),
            (&[1, 2][..], 8, None)
        );
        assert!(!s.check_enough_replicas(3) && s.check_enough_replicas(2));
    }

    #[test]
    fn expand_needs_the_hw_and_the_epoch_start_and_counts_at_once() {
        let mut s = LeaderState::new(&partition(&[1, 2], 7), 10, 4, 8, 0);
        fetch(&mut s, 2, 10, 0);
        assert_eq!(s.high_watermark(), 10);
        s.on_leader_append(12);
        // Below the HW (10): not in sync.
        assert_eq!(fetch(&mut s, 3, 9, 1).isr_change, None);
        let out = fetch(&mut s, 3, 11, 2);
        let change = out.isr_change.unwrap();
        assert_eq!(change.new_isr, [1, 2, 3]);
        assert_eq!(change.joining, Some((3, BROKER_EPOCH)));
        // The joining member holds the HW at its LEO even before the controller answers.
        assert_eq!(fetch(&mut s, 2, 12, 3).high_watermark, Some(11));
        assert!(!s.check_enough_replicas(3));
        assert_eq!(s.on_alter_result(&change, accepted(&change, 8)), None);
        assert!(s.check_enough_replicas(3));

        // A new leader (LEO 12, epoch start 12) whose HW (5) waits for follower 2: follower 3
        // past the HW but below the epoch start may still hold a divergent tail.
        let mut s = LeaderState::new(&partition(&[1, 2], 7), 12, 5, 12, 0);
        assert_eq!(fetch(&mut s, 3, 10, 1).isr_change, None);
        assert_eq!(
            fetch(&mut s, 3, 12, 2).isr_change.map(|c| c.new_isr),
            Some(vec![1, 2, 3])
        );
    }

    #[test]
    fn a_change_is_dropped_only_when_surely_not_applied() {
        let mut s = leader();
        fetch(&mut s, 2, 10, 0);
        let change = s.maybe_shrink(LAG + 1, LAG).unwrap();
        assert_eq!(
            s.on_alter_result(&change, Err(ResponseError::IneligibleReplica)),
            None
        );
        assert_eq!((s.isr(), s.pending()), (&[1, 2, 3][..], None));
        assert_eq!(s.maybe_shrink(LAG + 1, LAG), Some(change.clone()));
        // INVALID_UPDATE_VERSION: an earlier attempt may have been applied; stay pending
        // until the image shows the outcome.
        assert_eq!(
            s.on_alter_result(&change, Err(ResponseError::InvalidUpdateVersion)),
            None
        );
        assert_eq!(s.pending(), Some(&change));
        assert_eq!(s.maybe_shrink(LAG + 1, LAG), None);
        s.on_image(&partition(&[1, 2], 8));
        assert_eq!((s.isr(), s.pending()), (&[1, 2][..], None));
    }

    #[test]
    fn answers_to_changes_no_longer_pending_are_ignored() {
        let mut s = leader();
        fetch(&mut s, 2, 10, 0);
        let old = s.maybe_shrink(LAG + 1, LAG).unwrap();
        // An image with a newer partition epoch supersedes the pending change.
        assert_eq!(
            s.on_image(&partition(&[1, 2, 3], 8)),
            ImageUpdate::Applied {
                high_watermark: None
            }
        );
        assert_eq!(s.pending(), None);
        let new = s.maybe_shrink(LAG + 1, LAG).unwrap();
        assert_eq!(new.partition_epoch, 8);
        // The late answer to the old change does not settle the new one.
        assert_eq!(
            s.on_alter_result(&old, Err(ResponseError::InvalidUpdateVersion)),
            None
        );
        assert_eq!(s.pending(), Some(&new));
        assert_eq!(s.on_alter_result(&old, accepted(&old, 8)), None);
        assert_eq!(s.isr(), [1, 2, 3]);
    }

    #[test]
    fn images_update_the_isr_or_depose_the_leader() {
        let mut s = leader();
        fetch(&mut s, 2, 10, 0);
        // The controller fenced broker 3: the HW no longer waits for it.
        assert_eq!(
            s.on_image(&partition(&[1, 2], 8)),
            ImageUpdate::Applied {
                high_watermark: Some(10)
            }
        );
        assert_eq!((s.isr(), s.partition_epoch()), (&[1, 2][..], 8));
        // An image that is not newer changes nothing.
        s.on_image(&partition(&[1, 2, 3], 8));
        assert_eq!(s.isr(), [1, 2]);

        let newer_epoch = PartitionInfo {
            leader_epoch: 6,
            ..partition(&[1, 2], 9)
        };
        assert_eq!(s.on_image(&newer_epoch), ImageUpdate::NotLeader);
        let other_leader = PartitionInfo {
            leader: 2,
            ..partition(&[1, 2], 9)
        };
        assert_eq!(s.on_image(&other_leader), ImageUpdate::NotLeader);
    }
}
