//! One partition replica hosted on this node: its log, its idempotent-producer state and its
//! place in replication: leader (with the ISR bookkeeping of [`LeaderState`]) or follower
//! of another broker.
//!
//! Locking: `role`, then `log`, then `producers`; each is a `parking_lot::Mutex` held only
//! for synchronous work (a page-cache write, a positional read, a state update), never across
//! an `.await`. Appends as leader and as follower take `role` first, so no batch of an old
//! role lands in the log after the role changed. Everything waiting on the partition (long-polling
//! consumer fetches, acks=all produces, follower fetches) waits on a `watch` channel.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use runnel_storage::{AppendInfo, PartitionLog, ReadResult};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::BrokerError;
use crate::log_dir::LogDir;
use crate::metadata::PartitionInfo;
use crate::producer_state::{CheckOutcome, ProducerBatch, ProducerStateManager};
use crate::replication::{EpochEndOffset, FetchError, ImageUpdate, IsrChange, LeaderState};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The clock of the ISR lag timers: the wall clock at the first call, advanced by the
/// monotonic clock since. A step of the wall clock (NTP, a resumed VM, an operator's `date`)
/// must neither expire every follower at once (a jump forward) nor keep a dead one in the
/// ISR (a jump back), so the timers never read the wall clock again.
pub fn lag_clock_ms() -> i64 {
    static ORIGIN: std::sync::OnceLock<(std::time::Instant, i64)> = std::sync::OnceLock::new();
    let (start, wall_ms) = *ORIGIN.get_or_init(|| (std::time::Instant::now(), now_ms()));
    wall_ms.saturating_add(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX))
}

/// What waiters on a partition watch: the high watermark and whether this node leads the
/// partition, published together so an acks=all produce never pairs a follower's high
/// watermark with its own leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    /// The offset below which records are committed and visible to consumers.
    pub high_watermark: i64,
    /// The leader epoch while this node leads the partition, -1 otherwise.
    pub leader_epoch: i32,
}

/// This node's part in the partition's replication.
enum Role {
    /// Opened, role not decided yet (or the partition has no leader).
    Unassigned,
    Leader(LeaderState),
    Follower {
        leader: i32,
        leader_epoch: i32,
    },
}

/// How [`Partition::sync_role`] changed the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleChange {
    Unchanged,
    BecameLeader,
    BecameFollower,
}

/// A follower's fetch as the leader saw it.
#[derive(Debug)]
pub enum FollowerFetch {
    /// Serve records from the fetch offset, read as the leader at `leader_epoch`;
    /// `isr_change` is an expansion for the controller.
    Serve {
        leader_epoch: i32,
        isr_change: Option<IsrChange>,
    },
    /// The follower's log diverges from the leader's (KIP-320): it truncates to this first.
    Diverging(EpochEndOffset),
}

/// Why a leader refuses a follower's fetch or OffsetForLeaderEpoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaRefusal {
    /// NOT_LEADER_OR_FOLLOWER, with the leader and epoch this node knows of (-1 if none).
    NotLeader { leader: i32, leader_epoch: i32 },
    /// FENCED_LEADER_EPOCH: the request names an older epoch than the leader's.
    FencedLeaderEpoch { leader_epoch: i32 },
    /// UNKNOWN_LEADER_EPOCH: the request names a newer epoch than this node knows.
    UnknownLeaderEpoch,
    /// OFFSET_OUT_OF_RANGE: the fetch offset is not in the leader's log.
    OffsetOutOfRange,
    /// UNKNOWN_TOPIC_OR_PARTITION: the log was deleted.
    Deleted,
}

impl ReplicaRefusal {
    pub fn code(&self) -> kafka_protocol::ResponseError {
        use kafka_protocol::ResponseError as E;
        match self {
            ReplicaRefusal::NotLeader { .. } => E::NotLeaderOrFollower,
            ReplicaRefusal::FencedLeaderEpoch { .. } => E::FencedLeaderEpoch,
            ReplicaRefusal::UnknownLeaderEpoch => E::UnknownLeaderEpoch,
            ReplicaRefusal::OffsetOutOfRange => E::OffsetOutOfRange,
            ReplicaRefusal::Deleted => E::UnknownTopicOrPartition,
        }
    }
}

/// Where a follower stands, for its next fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPosition {
    pub log_end_offset: i64,
    /// Epoch of the last batch in the log, -1 when it holds none.
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

/// What a follower decides its truncation point from.
pub(crate) struct EpochsAndOffsets {
    pub epochs: Vec<(i32, i64)>,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

/// One partition replica hosted on this node.
pub struct Partition {
    topic: String,
    /// Tells this log from that of a re-created topic of the same name.
    topic_id: Uuid,
    index: i32,
    /// `None` once the topic is deleted: requests still holding this `Arc` get
    /// UNKNOWN_TOPIC_OR_PARTITION instead of writing into a removed directory.
    log: Mutex<Option<PartitionLog>>,
    /// Idempotent-producer state. Lock order: only ever locked while `log` is held, so the
    /// checks and the state update are atomic with the append. Followers keep it too, from
    /// the batches they copy, so a new leader recognises a retry of a batch it replicated.
    pub(crate) producers: Mutex<ProducerStateManager>,
    producer_expiration_ms: i64,
    role: Mutex<Role>,
    view: watch::Sender<ReplicaView>,
    /// The log end offset; follower fetches long-poll on it.
    log_end: watch::Sender<i64>,
    /// The topic's min.insync.replicas, which the leader's HW needs (KIP-966).
    min_insync_replicas: std::sync::atomic::AtomicUsize,
    /// The data dir holding the log; offline after a disk error.
    log_dir: Arc<LogDir>,
}

impl Partition {
    /// A replica around an opened log. The high watermark starts at `checkpointed_hw` (the
    /// last one this node knew; the log start when none was recorded), never above the log end.
    pub(crate) fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: PartitionLog,
        producer_expiration_ms: i64,
        checkpointed_hw: Option<i64>,
        log_dir: Arc<LogDir>,
    ) -> Self {
        let leo = log.log_end_offset();
        // Without a checkpoint nothing is known to be committed: the log start, as in Kafka
        // (a sole in-sync leader moves it to its log end at once).
        let hw = checkpointed_hw
            .unwrap_or(log.log_start_offset())
            .clamp(log.log_start_offset(), leo);
        let producers = ProducerStateManager::load(&log, producer_expiration_ms);
        let (view, _) = watch::channel(ReplicaView {
            high_watermark: hw,
            leader_epoch: -1,
        });
        let (log_end, _) = watch::channel(leo);
        Self {
            topic,
            topic_id,
            index,
            log: Mutex::new(Some(log)),
            producers: Mutex::new(producers),
            producer_expiration_ms,
            role: Mutex::new(Role::Unassigned),
            view,
            log_end,
            min_insync_replicas: std::sync::atomic::AtomicUsize::new(1),
            log_dir,
        }
    }

    /// The topic's min.insync.replicas as the metadata has it; the HW of a leader stops while
    /// its ISR is smaller (KIP-966). Takes effect at the next [`Self::sync_role`].
    pub(crate) fn set_min_insync_replicas(&self, value: usize) {
        self.min_insync_replicas
            .store(value.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Where leader epoch `epoch` ends in this log: `(largest epoch <= epoch, its end
    /// offset)`, `(-1, -1)` when the log holds nothing of that epoch or before (Kafka's
    /// OffsetForLeaderEpoch answer).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Result<(i32, i64), BrokerError> {
        self.with_log(|log| Ok(log.end_offset_for_epoch(epoch)))
    }

    /// Runs `f` on the log; KAFKA_STORAGE_ERROR once the data dir is offline. A disk
    /// failure in `f` (the log went offline, or a read failed) takes the whole dir offline.
    pub(crate) fn with_log<T>(
        &self,
        f: impl FnOnce(&mut PartitionLog) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        self.log_dir.check()?;
        let mut guard = self.log.lock();
        let Some(log) = guard.as_mut() else {
            return Err(BrokerError::UnknownPartition {
                topic: self.topic.clone(),
                partition: self.index,
            });
        };
        let result = f(log);
        if let Some(reason) = log.offline_reason() {
            self.log_dir.take_offline(&format!(
                "partition {}-{}: {reason}",
                self.topic, self.index
            ));
        } else if let Err(BrokerError::Storage(e)) = &result {
            if e.is_disk_failure() {
                self.log_dir
                    .take_offline(&format!("partition {}-{}: {e}", self.topic, self.index));
            }
        }
        result
    }

    /// The data dir went offline: this replica leads and follows nothing any more, and
    /// parked acks=all produces give up (NOT_LEADER_OR_FOLLOWER; the client retries on the
    /// new leader, which the producer-id check keeps free of duplicates).
    pub(crate) fn stop_serving(&self) {
        let mut role = self.lock_role();
        *role = Role::Unassigned;
        self.publish(self.high_watermark(), -1);
    }

    /// A producer-state snapshot that could not be written: the state rebuilds from the log
    /// on the next start, so a full disk only costs time then; any other error is a disk
    /// failure, as in Kafka.
    fn snapshot_failed(&self, e: &std::io::Error) {
        if matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) {
            tracing::warn!(topic = self.topic, partition = self.index, error = %e, "cannot write a producer-state snapshot");
        } else {
            self.log_dir.take_offline(&format!(
                "partition {}-{}: cannot write a producer-state snapshot: {e}",
                self.topic, self.index
            ));
        }
    }

    /// Takes the log out for deletion; later requests get UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) fn take_log(&self) -> Option<PartitionLog> {
        let _role = self.role.lock();
        self.log.lock().take()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    fn not_leader(&self) -> BrokerError {
        BrokerError::NotLeader {
            topic: self.topic.clone(),
            partition: self.index,
        }
    }

    fn lock_role(&self) -> parking_lot::MutexGuard<'_, Role> {
        self.role.lock()
    }

    /// Publishes a new high watermark (and leadership) to every waiter.
    fn publish(&self, high_watermark: i64, leader_epoch: i32) {
        self.view.send_if_modified(|v| {
            let new = ReplicaView {
                high_watermark,
                leader_epoch,
            };
            let changed = *v != new;
            *v = new;
            changed
        });
    }

    /// A follower's high watermark; the leader epoch field is left alone. Called with the
    /// role locked, so it cannot overwrite what a concurrent role change published.
    fn publish_high_watermark(&self, high_watermark: i64) {
        self.view.send_if_modified(|v| {
            let changed = v.high_watermark != high_watermark;
            v.high_watermark = high_watermark;
            changed
        });
    }

    /// Validates and appends one or more v2 record batches as the leader at `leader_epoch`;
    /// offsets are assigned here. NotLeader when this node no longer leads at that epoch.
    ///
    /// Batches with a producer id are first checked against the producer state (inside the
    /// log mutex): a retry of one of the producer's last five batches appends nothing and
    /// returns the original offsets with `record_count == 0`; an old epoch or a sequence gap
    /// is an error. Batches without a producer id only pay a header read.
    ///
    /// Only headers and CRCs are checked here: a client's batches must first pass
    /// [`crate::records::validate_client_batches`] with [`Partition::validation_rules`], which
    /// the produce handler runs before this, off the partition's locks.
    pub fn append(&self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo, BrokerError> {
        self.log_dir.check()?;
        let mut role = self.lock_role();
        let Role::Leader(state) = &mut *role else {
            return Err(self.not_leader());
        };
        if state.leader_epoch() != leader_epoch {
            return Err(self.not_leader());
        }
        let info = self.with_log(|log| {
            let now = now_ms();
            let mut producers = self.producers.lock();
            let headers = producer_batches(batches);
            if let Some(headers) = &headers {
                match producers.check(headers)? {
                    CheckOutcome::Append => {}
                    CheckOutcome::Duplicate { producer_id, batch } => {
                        // A corrupt retry is still corrupt.
                        runnel_storage::batch::validate_batches(batches)?;
                        tracing::info!(
                            topic = self.topic,
                            partition = self.index,
                            producer_id,
                            first_seq = batch.first_seq,
                            last_seq = batch.last_seq,
                            base_offset = batch.first_offset,
                            "dropped a duplicate batch from an idempotent producer; answering with its original offset"
                        );
                        return Ok(AppendInfo {
                            base_offset: batch.first_offset,
                            last_offset: batch.last_offset,
                            log_append_time: batch.log_append_time,
                            record_count: 0,
                        });
                    }
                }
            }
            if log.latest_epoch().is_some_and(|e| e > leader_epoch) {
                return Err(self.not_leader());
            }
            // On an error nothing was appended (the log undid it), so the producer state
            // stays as it was and the retry is checked against the same sequences.
            let info = log.append(batches, leader_epoch, now)?;
            if let Some(headers) = &headers {
                let mut offset = info.base_offset;
                for b in headers {
                    producers.update(b, offset, info.log_append_time);
                    offset += i64::from(b.last_offset_delta) + 1;
                }
            }
            if producers.note_appended(batches.len()) {
                if let Err(e) = producers.write_snapshot(info.last_offset + 1, now, false) {
                    self.snapshot_failed(&e);
                }
            }
            Ok(info)
        })?;
        if info.record_count > 0 {
            let leo = info.last_offset + 1;
            self.log_end.send_replace(leo);
            if let Some(hw) = state.on_leader_append(leo) {
                self.publish(hw, leader_epoch);
            }
        }
        Ok(info)
    }

    /// The topic's rules for client batches, as of now.
    pub fn validation_rules(&self) -> Result<crate::records::ValidationRules, BrokerError> {
        self.with_log(|log| {
            Ok(crate::records::ValidationRules::from_log_config(
                log.config(),
            ))
        })
    }

    /// Waits until the high watermark reaches `required_offset` (an acks=all produce whose
    /// last offset is `required_offset - 1`) while this node leads at `leader_epoch`.
    /// NotLeader as soon as leadership moves (the records may still be committed by the new
    /// leader; the client's retry finds out), RequestTimedOut after `timeout`, and
    /// NotEnoughReplicasAfterAppend when the ISR that has them is smaller than
    /// `min_insync_replicas` by then (Kafka's `checkEnoughReplicasReachOffset`).
    pub async fn wait_committed(
        &self,
        required_offset: i64,
        leader_epoch: i32,
        min_insync_replicas: usize,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let mut rx = self.view.subscribe();
        let mut dir = self.log_dir.watch();
        let wait = async {
            loop {
                self.log_dir.check()?;
                let view = *rx.borrow_and_update();
                if view.leader_epoch != leader_epoch {
                    return Err(self.not_leader());
                }
                if view.high_watermark >= required_offset {
                    return self.check_replicas_after_append(leader_epoch, min_insync_replicas);
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        return Err(self.not_leader());
                    },
                    _ = dir.changed() => {}
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::RequestTimedOut(format!(
                "{}-{}: offset {} was not replicated to the in-sync replicas within {} ms",
                self.topic,
                self.index,
                required_offset - 1,
                timeout.as_millis()
            ))),
        }
    }

    fn check_replicas_after_append(
        &self,
        leader_epoch: i32,
        needed: usize,
    ) -> Result<(), BrokerError> {
        match &*self.lock_role() {
            Role::Leader(state) if state.leader_epoch() == leader_epoch => {
                let in_sync = state.maximal_isr_len();
                if in_sync < needed {
                    Err(BrokerError::NotEnoughReplicasAfterAppend { in_sync, needed })
                } else {
                    Ok(())
                }
            }
            _ => Err(self.not_leader()),
        }
    }

    /// The committed ISR size while this node leads at `leader_epoch` (acks=all checks it
    /// against min.insync.replicas before appending).
    pub fn in_sync_replicas(&self, leader_epoch: i32) -> Result<usize, BrokerError> {
        match &*self.lock_role() {
            Role::Leader(state) if state.leader_epoch() == leader_epoch => Ok(state.isr().len()),
            _ => Err(self.not_leader()),
        }
    }

    /// Follows the partition's state in a new metadata image: becomes its leader (recording
    /// the new epoch at the log end and starting the ISR bookkeeping), its follower, or
    /// updates the leader state with a newer ISR. `now_ms` is on [`lag_clock_ms`].
    pub(crate) fn sync_role(
        &self,
        p: &PartitionInfo,
        node_id: i32,
        now_ms: i64,
    ) -> Result<RoleChange, BrokerError> {
        let min_isr = self
            .min_insync_replicas
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut role = self.lock_role();
        if p.leader == node_id {
            if let Role::Leader(state) = &mut *role {
                if state.leader_epoch() == p.leader_epoch {
                    let lowered = state.set_min_insync_replicas(min_isr);
                    let applied = match state.on_image(p) {
                        ImageUpdate::Applied { high_watermark } => high_watermark,
                        ImageUpdate::NotLeader => None,
                    };
                    if let Some(hw) = applied.or(lowered) {
                        self.publish(hw, p.leader_epoch);
                    }
                    return Ok(RoleChange::Unchanged);
                }
            }
            let leo = self.with_log(|log| {
                // The log holds an epoch newer than this image's: the image is stale (a
                // restarted node replaying its metadata), not a leadership to take.
                if log.latest_epoch().is_some_and(|e| e > p.leader_epoch) {
                    return Err(BrokerError::StaleMetadata(format!(
                        "{}-{}: the log holds leader epoch {:?}, newer than the metadata's {}",
                        self.topic,
                        self.index,
                        log.latest_epoch(),
                        p.leader_epoch
                    )));
                }
                log.assign_leader_epoch(p.leader_epoch)?;
                Ok(log.log_end_offset())
            })?;
            let hw = self.view.borrow().high_watermark;
            let state = LeaderState::with_min_insync_replicas(p, leo, hw, leo, now_ms, min_isr);
            self.publish(state.high_watermark(), p.leader_epoch);
            *role = Role::Leader(state);
            return Ok(RoleChange::BecameLeader);
        }
        if let Role::Follower {
            leader,
            leader_epoch,
        } = *role
        {
            if leader == p.leader && leader_epoch == p.leader_epoch {
                return Ok(RoleChange::Unchanged);
            }
        }
        *role = Role::Follower {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
        };
        let hw = self.view.borrow().high_watermark;
        // Parked acks=all produces see the epoch change and answer NOT_LEADER_OR_FOLLOWER.
        self.publish(hw, -1);
        Ok(RoleChange::BecameFollower)
    }

    /// The leader's side of a follower fetch at `fetch_offset` (which acknowledges every
    /// offset below it): fencing, the KIP-320 divergence check against the follower's
    /// `last_fetched_epoch`, then the ISR bookkeeping. Records are read separately.
    /// `now_ms` is on [`lag_clock_ms`].
    pub(crate) fn on_follower_fetch(
        &self,
        replica: i32,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        now_ms: i64,
        join_epoch: Option<i64>,
    ) -> Result<FollowerFetch, ReplicaRefusal> {
        let mut role = self.lock_role();
        let state = self.check_leader(&mut role, current_leader_epoch)?;
        let (leo, divergence) = self
            .with_log(|log| {
                let end =
                    (last_fetched_epoch >= 0).then(|| log.end_offset_for_epoch(last_fetched_epoch));
                Ok((log.log_end_offset(), end))
            })
            .map_err(|_| ReplicaRefusal::Deleted)?;
        if let Some((epoch, end_offset)) = divergence {
            if epoch < 0 {
                // The leader holds nothing of that epoch or before (its log start moved
                // past it): the follower must start over from OffsetForLeaderEpoch.
                return Err(ReplicaRefusal::OffsetOutOfRange);
            }
            if epoch < last_fetched_epoch || end_offset < fetch_offset {
                return Ok(FollowerFetch::Diverging(EpochEndOffset {
                    epoch,
                    end_offset,
                }));
            }
        }
        match state.on_follower_fetch(replica, fetch_offset, leo, now_ms, join_epoch) {
            Ok(outcome) => {
                if let Some(hw) = outcome.high_watermark {
                    self.publish(hw, state.leader_epoch());
                }
                Ok(FollowerFetch::Serve {
                    leader_epoch: state.leader_epoch(),
                    isr_change: outcome.isr_change,
                })
            }
            Err(FetchError::OffsetOutOfRange { .. }) => Err(ReplicaRefusal::OffsetOutOfRange),
        }
    }

    /// Fencing of a request that names `current_leader_epoch` (-1 skips the check).
    fn check_leader<'a>(
        &self,
        role: &'a mut Role,
        current_leader_epoch: i32,
    ) -> Result<&'a mut LeaderState, ReplicaRefusal> {
        match role {
            Role::Leader(state) => {
                let epoch = state.leader_epoch();
                if current_leader_epoch >= 0 && current_leader_epoch < epoch {
                    Err(ReplicaRefusal::FencedLeaderEpoch {
                        leader_epoch: epoch,
                    })
                } else if current_leader_epoch > epoch {
                    Err(ReplicaRefusal::UnknownLeaderEpoch)
                } else {
                    Ok(state)
                }
            }
            Role::Follower {
                leader,
                leader_epoch,
            } => {
                if current_leader_epoch > *leader_epoch {
                    Err(ReplicaRefusal::UnknownLeaderEpoch)
                } else {
                    Err(ReplicaRefusal::NotLeader {
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                    })
                }
            }
            Role::Unassigned => Err(ReplicaRefusal::UnknownLeaderEpoch),
        }
    }

    /// OffsetForLeaderEpoch as the leader: where `epoch` ends in this log, after fencing.
    pub(crate) fn leader_end_offset_for_epoch(
        &self,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> Result<EpochEndOffset, ReplicaRefusal> {
        let mut role = self.lock_role();
        self.check_leader(&mut role, current_leader_epoch)?;
        let (epoch, end_offset) = self
            .end_offset_for_epoch(epoch)
            .map_err(|_| ReplicaRefusal::Deleted)?;
        Ok(EpochEndOffset { epoch, end_offset })
    }

    /// What a follower copies: whole batches from `offset` up to the log end, read while
    /// this node still leads at `leader_epoch` (after a long poll it may not).
    pub(crate) fn read_as_leader(
        &self,
        leader_epoch: i32,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, BrokerError> {
        let role = self.lock_role();
        match &*role {
            Role::Leader(state) if state.leader_epoch() == leader_epoch => {
                self.read_to_log_end(offset, max_bytes, min_one)
            }
            _ => Err(self.not_leader()),
        }
    }

    /// Reads whole batches from `offset` up to the log end, committed or not: what a
    /// new group coordinator loads (as Kafka's does).
    pub(crate) fn read_to_log_end(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, BrokerError> {
        self.with_log(|log| Ok(log.read(offset, max_bytes, i64::MAX, min_one)?))
    }

    /// A receiver that changes whenever the log end offset moves (follower long polls).
    pub(crate) fn watch_log_end(&self) -> watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    /// The ISR change the controller answered; returns nothing, publishes a moved high
    /// watermark. Ignored unless this node still leads at the change's epoch.
    pub(crate) fn on_alter_result(
        &self,
        change: &IsrChange,
        result: Result<PartitionInfo, kafka_protocol::ResponseError>,
    ) {
        let mut role = self.lock_role();
        if let Role::Leader(state) = &mut *role {
            if state.leader_epoch() == change.leader_epoch {
                if let Some(hw) = state.on_alter_result(change, result) {
                    self.publish(hw, state.leader_epoch());
                }
            }
        }
    }

    /// Whether `change` is still the leader's pending ISR change (a lost request is re-sent
    /// only then).
    pub(crate) fn is_pending(&self, change: &IsrChange) -> bool {
        matches!(&*self.lock_role(), Role::Leader(state) if state.pending() == Some(change))
    }

    /// Proposes removing ISR followers that stopped catching up (Kafka's ISR expiration);
    /// `now_ms` is on [`lag_clock_ms`].
    pub(crate) fn maybe_shrink_isr(&self, now_ms: i64, max_lag_ms: i64) -> Option<IsrChange> {
        match &mut *self.lock_role() {
            Role::Leader(state) => state.maybe_shrink(now_ms, max_lag_ms),
            _ => None,
        }
    }

    /// Runs `f` on the log while this node follows `leader_epoch`; NotLeader otherwise, so
    /// nothing of a superseded fetch is written once the role changed.
    /// `f` returns its result and the new log end and high watermark, published before the
    /// role lock is released.
    fn as_follower<T>(
        &self,
        leader_epoch: i32,
        f: impl FnOnce(&mut PartitionLog) -> Result<(T, i64, i64), BrokerError>,
    ) -> Result<T, BrokerError> {
        let role = self.lock_role();
        match &*role {
            Role::Follower {
                leader_epoch: e, ..
            } if *e == leader_epoch => {
                let (result, log_end, high_watermark) = self.with_log(f)?;
                self.log_end.send_replace(log_end);
                self.publish_high_watermark(high_watermark);
                Ok(result)
            }
            _ => Err(self.not_leader()),
        }
    }

    /// The follower's position for its next fetch.
    pub(crate) fn fetch_position(&self) -> Result<FetchPosition, BrokerError> {
        self.with_log(|log| {
            Ok(FetchPosition {
                log_end_offset: log.log_end_offset(),
                last_fetched_epoch: log.latest_epoch().unwrap_or(-1),
                log_start_offset: log.log_start_offset(),
            })
        })
    }

    /// The follower's epoch entries, log end and high watermark, for truncation decisions.
    pub(crate) fn epochs_and_offsets(&self) -> Result<EpochsAndOffsets, BrokerError> {
        let high_watermark = self.high_watermark();
        self.with_log(|log| {
            Ok(EpochsAndOffsets {
                epochs: log.leader_epochs(),
                log_end_offset: log.log_end_offset(),
                high_watermark,
            })
        })
    }

    /// After a truncation: the producer state of what the log still holds (from the newest
    /// snapshot at or below its end, later ones deleted). Called with the log locked.
    fn rebuild_producer_state(&self, log: &PartitionLog) {
        let mut producers = self.producers.lock();
        *producers = ProducerStateManager::load(log, self.producer_expiration_ms);
    }

    /// Truncates a follower's log to `offset` (a divergent tail found through the leader's
    /// epochs) and rebuilds the producer state for what remains.
    pub(crate) fn truncate_as_follower(
        &self,
        leader_epoch: i32,
        offset: i64,
    ) -> Result<i64, BrokerError> {
        let hw = self.high_watermark();
        self.as_follower(leader_epoch, |log| {
            if offset >= log.log_end_offset() {
                // Still drops an epoch entry at the log end that no record backs.
                log.truncate_to(offset)?;
                let leo = log.log_end_offset();
                return Ok((leo, leo, hw.min(leo)));
            }
            let before = log.log_end_offset();
            if offset < log.log_start_offset() {
                // The log restarts empty at `offset`, as in `reset_as_follower`.
                self.clear_producer_state(log)?;
            }
            log.truncate_to(offset)?;
            self.rebuild_producer_state(log);
            tracing::info!(
                topic = self.topic,
                partition = self.index,
                from = before,
                to = log.log_end_offset(),
                "truncated a divergent log tail before following the leader"
            );
            let leo = log.log_end_offset();
            Ok((leo, leo, hw.min(leo)))
        })
    }

    /// Forgets the producer state and deletes its snapshots before `log` restarts empty
    /// (first, so a crash in between rebuilds the state from the intact log).
    fn clear_producer_state(&self, log: &PartitionLog) -> Result<(), BrokerError> {
        self.producers.lock().truncate_fully().map_err(|e| {
            BrokerError::DataDir(format!(
                "cannot delete the producer-state snapshots in {}: {e}",
                log.dir().display()
            ))
        })
    }

    /// Empties a follower's log and restarts it at `offset`, the leader's log start, when
    /// everything the follower misses was already deleted on the leader. The producer state
    /// goes too: the batches of the skipped records are unknown here, so as leader this
    /// replica treats their producers as new, as Kafka does.
    pub(crate) fn reset_as_follower(
        &self,
        leader_epoch: i32,
        offset: i64,
    ) -> Result<(), BrokerError> {
        self.as_follower(leader_epoch, |log| {
            let before = log.log_end_offset();
            self.clear_producer_state(log)?;
            log.truncate_fully_and_start_at(offset)?;
            tracing::warn!(
                topic = self.topic,
                partition = self.index,
                log_end = before,
                leader_log_start = offset,
                "the leader no longer has the records this replica misses; restarting its log at the leader's log start"
            );
            Ok(((), offset, offset))
        })
    }

    /// Appends batches copied from the leader (offsets and epochs as the leader wrote them)
    /// and takes the leader's high watermark, capped at the local log end.
    pub(crate) fn append_as_follower(
        &self,
        leader_epoch: i32,
        records: &[u8],
        leader_high_watermark: i64,
    ) -> Result<i64, BrokerError> {
        self.as_follower(leader_epoch, |log| {
            if !records.is_empty() {
                let info = log.append_as_follower(records)?;
                let mut producers = self.producers.lock();
                producers.apply_stored_batches(records, info.base_offset);
                if producers.note_appended(records.len()) {
                    if let Err(e) = producers.write_snapshot(info.last_offset + 1, now_ms(), false)
                    {
                        self.snapshot_failed(&e);
                    }
                }
            }
            let leo = log.log_end_offset();
            Ok((leo, leo, leader_high_watermark.min(leo)))
        })
    }

    /// Writes a producer-state snapshot at the log end offset (fsynced when `sync`).
    pub fn snapshot_producer_state(&self, sync: bool) -> Result<(), BrokerError> {
        self.with_log(|log| {
            let mut producers = self.producers.lock();
            producers
                .write_snapshot(log.log_end_offset(), now_ms(), sync)
                .map_err(|e| {
                    BrokerError::DataDir(format!(
                        "cannot write a producer-state snapshot in {}: {e}",
                        log.dir().display()
                    ))
                })
        })
    }

    /// Reads whole batches from `offset`, at most up to the high watermark.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, BrokerError> {
        let hw = self.high_watermark();
        self.with_log(|log| Ok(log.read(offset, max_bytes, hw, min_one)?))
    }

    pub fn high_watermark(&self) -> i64 {
        self.view.borrow().high_watermark
    }

    /// Whether this replica may answer a client's offset lookup (ListOffsets), as Kafka's
    /// `fetchOffsetForTimestamp`: only as the leader, and only once it knows its high
    /// watermark in this epoch (KIP-207). Before that it answers OFFSET_NOT_AVAILABLE and the
    /// client retries, rather than a high watermark lower than the previous leader served.
    pub fn check_offsets_available(&self) -> Result<(), BrokerError> {
        match &*self.lock_role() {
            Role::Leader(state) if state.high_watermark_known() => Ok(()),
            Role::Leader(state) => Err(BrokerError::OffsetNotAvailable(format!(
                "partition {} of topic '{}' has a new leader whose high watermark {} is not yet \
                 known: it is below offset {} where leader epoch {} began",
                self.index(),
                self.topic(),
                state.high_watermark(),
                state.leader_epoch_start_offset(),
                state.leader_epoch()
            ))),
            _ => Err(self.not_leader()),
        }
    }

    /// A receiver that changes whenever the high watermark (or leadership) changes.
    pub fn watch_high_watermark(&self) -> watch::Receiver<ReplicaView> {
        self.view.subscribe()
    }

    pub fn log_start_offset(&self) -> Result<i64, BrokerError> {
        self.with_log(|log| Ok(log.log_start_offset()))
    }

    pub fn log_end_offset(&self) -> Result<i64, BrokerError> {
        self.with_log(|log| Ok(log.log_end_offset()))
    }

    /// The first record with a timestamp at or after `ts`: (offset, timestamp). The log finds
    /// the batch; its records are then read (decompressing if needed, bounded, outside the
    /// log lock) to find the exact record, as Kafka does. Only ListOffsets pays this, never
    /// the produce/fetch path.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        let hw = self.high_watermark();
        let found = self.with_log(|log| {
            let Some((base, max_ts)) = log.offset_for_timestamp(ts)? else {
                return Ok(None);
            };
            let batch = log.read(base, 1, hw, true)?.records;
            Ok(Some((base, max_ts, batch, log.config().max_message_bytes)))
        })?;
        Ok(found.map(|(base, max_ts, batch, max_message_bytes)| {
            first_record_at_or_after(&batch, ts, max_message_bytes).unwrap_or((base, max_ts))
        }))
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        self.with_log(|log| Ok(log.max_timestamp_offset()?))
    }

    pub fn size_bytes(&self) -> Result<u64, BrokerError> {
        self.with_log(|log| Ok(log.size_bytes()))
    }

    /// Runs one log-cleaner pass if the topic is compacted and one is due. The log is locked
    /// only to plan the pass and to swap its result in; the reading, decoding and writing of
    /// cleaned segments happens without it, so appends and fetches of this partition go on
    /// meanwhile (see `runnel_storage::compaction`). Records at or above the high watermark
    /// are neither cleaned nor used to supersede older ones. Call on a blocking thread.
    pub fn compact(&self) -> Result<runnel_storage::CompactionStats, BrokerError> {
        let hw = self.high_watermark();
        let plan = self.with_log(|log| {
            Ok(log.compaction_plan(now_ms(), hw, runnel_storage::DEFAULT_MAX_MAP_KEYS)?)
        })?;
        let Some(plan) = plan else {
            return Ok(runnel_storage::CompactionStats::default());
        };
        let max_message_bytes = self.with_log(|log| Ok(log.config().max_message_bytes))?;
        let cleaned = plan.execute(&crate::compaction::KafkaCodec::new(max_message_bytes))?;
        self.with_log(|log| Ok(log.install(cleaned)?))
    }
}

/// The producer fields of every batch in `buf` when at least one has a producer id; `None`
/// when none has (or the headers are malformed, which the log's validation then rejects).
/// Costs one 8-byte read per batch for non-idempotent producers.
pub(crate) fn producer_batches(buf: &[u8]) -> Option<Vec<ProducerBatch>> {
    use runnel_storage::batch::BatchHeader;
    let mut pos = 0;
    let mut any = false;
    while let Some(h) = buf.get(pos..).and_then(BatchHeader::new) {
        any |= h.producer_id() >= 0;
        pos += h.total_size()?;
    }
    if !any || pos != buf.len() {
        return None;
    }
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    while let Some(h) = buf.get(pos..).and_then(BatchHeader::new) {
        out.push(ProducerBatch::from_header(&h));
        pos += h.total_size()?;
    }
    Some(out)
}

/// Scans the first batch in `batch` for the first record with timestamp >= `ts`. `None` if the
/// batch cannot be read or (LogAppendTime) carries one timestamp for all its records, in which
/// case the batch's own base offset and max timestamp are the answer.
fn first_record_at_or_after(batch: &[u8], ts: i64, max_message_bytes: usize) -> Option<(i64, i64)> {
    use runnel_storage::batch::{BatchHeader, COMPRESSION_MASK, HEADER_LEN, TIMESTAMP_TYPE_BIT};
    let h = BatchHeader::new(batch)?;
    let batch = batch.get(..h.total_size()?)?;
    if h.attributes() & TIMESTAMP_TYPE_BIT != 0 {
        return None;
    }
    let limit = crate::records::stored_decompress_limit(max_message_bytes);
    let raw = crate::records::decompress(
        h.attributes() & COMPRESSION_MASK,
        &batch[HEADER_LEN..],
        limit,
    )
    .ok()?;
    for record in crate::records::records(&raw, h.records_count()).ok()? {
        let r = record.ok()?;
        let record_ts = h.base_timestamp().saturating_add(r.timestamp_delta);
        if record_ts >= ts {
            let offset = h.base_offset().saturating_add(i64::from(r.offset_delta));
            return Some((offset, record_ts));
        }
    }
    None
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
