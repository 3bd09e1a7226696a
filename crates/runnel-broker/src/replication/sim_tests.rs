//! Seeded simulations of one 3-replica partition driving [`LeaderState`] and the truncation
//! rules: random leader appends (acks=all and acks=1), follower fetches of random size, time
//! passing, broker deaths and restarts, leadership moves, and a fake controller that accepts,
//! refuses or loses AlterPartition requests and publishes its state late. Logs are modelled
//! as the leader epoch of each record, so two logs agree exactly where their epochs do.
//!
//! Checked after every step: the HW never decreases while one leader leads and moves exactly
//! when reported; every member of the controller's ISR is in the leader's maximal ISR, holds
//! every offset below the HW and every record ever committed; acks=all requests complete only
//! once every ISR member has them; a truncated follower's log is a prefix of the leader's;
//! the ISR always contains the leader. Each run ends by healing the cluster and checking
//! that the ISR grows back to all replicas and the HW reaches the leader's LEO.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runnel_controller::error::ResponseError;
use runnel_controller::image::PartitionInfo;

use super::follower::{
    end_offset_for_epoch, truncation_offset, truncation_on_diverging_epoch, UNDEFINED_EPOCH,
};
use super::leader::{ImageUpdate, IsrChange, LeaderState};

const SEEDS: u64 = 500;
const STEPS: usize = 300;
const LAG_MS: i64 = 1_000;
const MIN_ISR: usize = 2;

#[derive(Clone, Debug)]
struct Replica {
    /// The leader epoch of each record.
    log: Vec<i32>,
    /// The leader-epoch cache: `(epoch, start offset)`.
    epochs: Vec<(i32, i64)>,
    hw: i64,
    alive: bool,
    /// Has not reconciled its log with the current leader yet.
    must_truncate: bool,
}

impl Replica {
    fn new() -> Self {
        Self {
            log: Vec::new(),
            epochs: Vec::new(),
            hw: 0,
            alive: true,
            must_truncate: false,
        }
    }

    fn leo(&self) -> i64 {
        self.log.len() as i64
    }

    /// Kafka's `LeaderEpochFileCache.assign`: a new epoch drops the entries it conflicts with.
    fn assign_epoch(&mut self, epoch: i32, start: i64) {
        if self.epochs.last().is_none_or(|&(e, _)| e < epoch) {
            self.epochs.retain(|&(e, s)| e < epoch && s < start);
            self.epochs.push((epoch, start));
        }
    }

    fn append(&mut self, epoch: i32) {
        self.assign_epoch(epoch, self.leo());
        self.log.push(epoch);
    }

    fn truncate(&mut self, offset: i64) {
        self.log.truncate(offset as usize);
        self.epochs.retain(|&(_, start)| start < offset);
        self.hw = self.hw.min(offset);
    }
}

/// Coverage, so the invariants are known to be exercised.
#[derive(Debug, Default)]
struct Stats {
    acks_completed: u64,
    not_enough_replicas: u64,
    shrinks: u64,
    expansions: u64,
    truncated_records: u64,
    leader_changes: u64,
}

struct Sim {
    rng: StdRng,
    now: i64,
    /// Broker `id` is `replicas[id - 1]`.
    replicas: Vec<Replica>,
    /// The controller's state of the partition.
    ctrl: PartitionInfo,
    leader: LeaderState,
    /// AlterPartition requests sent and not answered yet.
    in_flight: Vec<IsrChange>,
    /// The controller changed the ISR and the leader has not seen the image yet.
    image_behind: bool,
    /// Chance that a follower skips its turn to fetch, per replica.
    slowness: Vec<f64>,
    last_hw: i64,
    /// The leader's log up to the highest HW ever reported: must never be lost.
    committed: Vec<i32>,
    /// acks=all requests waiting for the HW: the offset after their last record.
    parked: Vec<i64>,
    stats: Stats,
}

impl Sim {
    /// `stats` carries coverage over from earlier seeds.
    fn new(seed: u64, stats: Stats) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let ctrl = PartitionInfo {
            index: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            elr: Vec::new(),
            last_known_leader: None,
        };
        let mut replicas = vec![Replica::new(); 3];
        replicas[0].assign_epoch(0, 0);
        let slowness = (0..3).map(|_| rng.random_range(0.0..0.6)).collect();
        Self {
            rng,
            now: 0,
            replicas,
            leader: LeaderState::new(&ctrl, 0, 0, 0, 0),
            ctrl,
            in_flight: Vec::new(),
            image_behind: false,
            slowness,
            last_hw: 0,
            committed: Vec::new(),
            parked: Vec::new(),
            stats,
        }
    }

    fn r(&self, id: i32) -> &Replica {
        &self.replicas[(id - 1) as usize]
    }

    fn r_mut(&mut self, id: i32) -> &mut Replica {
        &mut self.replicas[(id - 1) as usize]
    }

    fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..25 => self.produce(),
            25..65 => {
                let f = self.rng.random_range(1..=3);
                if !self.rng.random_bool(self.slowness[(f - 1) as usize]) {
                    let max_records = self.rng.random_range(0..=10);
                    self.fetch(f, max_records);
                }
            }
            65..75 => {
                self.now += self.rng.random_range(0..=600);
                if let Some(change) = self.leader.maybe_shrink(self.now, LAG_MS) {
                    self.in_flight.push(change);
                }
            }
            75..85 => self.answer_alter(true),
            85..91 => self.deliver_image(),
            91..93 => {
                let x = self.rng.random_range(1..=3);
                self.kill(x);
            }
            93..98 => {
                if let Some(x) = (1..=3).find(|&x| !self.r(x).alive) {
                    self.restart(x);
                }
            }
            _ => self.move_leadership(),
        }
        self.check();
    }

    /// The HW moves exactly when an event says so, and only forward.
    fn saw(&mut self, moved: Option<i64>) {
        let hw = self.leader.high_watermark();
        match moved {
            Some(h) => assert!(h == hw && h > self.last_hw, "HW {h} reported, {hw} held"),
            None => assert_eq!(hw, self.last_hw, "the HW moved unreported"),
        }
        self.last_hw = hw;
    }

    fn produce(&mut self) {
        let acks_all = self.rng.random_bool(0.7);
        if acks_all && !self.leader.check_enough_replicas(MIN_ISR) {
            self.stats.not_enough_replicas += 1;
            return;
        }
        let (id, epoch) = (self.ctrl.leader, self.ctrl.leader_epoch);
        for _ in 0..self.rng.random_range(1..=3) {
            self.r_mut(id).append(epoch);
        }
        let leo = self.r(id).leo();
        if acks_all {
            self.parked.push(leo);
        }
        let moved = self.leader.on_leader_append(leo);
        self.saw(moved);
    }

    /// Follower `f` fetches from its LEO and gets up to `max_records` records.
    fn fetch(&mut self, f: i32, max_records: usize) {
        let leader_id = self.ctrl.leader;
        if f == leader_id || !self.r(f).alive {
            return;
        }
        if self.r(f).must_truncate {
            self.truncate(f);
        }
        let fetch_offset = self.r(f).leo();
        let leader_leo = self.r(leader_id).leo();
        let out = self
            .leader
            .on_follower_fetch(f, fetch_offset, leader_leo, self.now, Some(0))
            .expect("a reconciled follower fetches within the leader's log");
        self.saw(out.high_watermark);
        self.in_flight.extend(out.isr_change);
        let start = fetch_offset as usize;
        let end = start.saturating_add(max_records).min(leader_leo as usize);
        let records = self.r(leader_id).log[start..end].to_vec();
        let hw = self.leader.high_watermark();
        let follower = self.r_mut(f);
        for epoch in records {
            follower.append(epoch);
        }
        follower.hw = hw.min(follower.leo());
    }

    /// Reconciles follower `f` with the leader, through OffsetForLeaderEpoch or through
    /// diverging epochs in fetch responses (KIP-320), repeating until complete.
    fn truncate(&mut self, f: i32) {
        let leader = self.r(self.ctrl.leader).clone();
        let kip320 = self.rng.random_bool(0.5);
        for round in 0.. {
            assert!(round < 64, "truncation of {f} does not converge");
            let local = self.r(f);
            let leo = local.leo();
            let last_epoch = local.epochs.last().map_or(UNDEFINED_EPOCH, |&(e, _)| e);
            let answer = end_offset_for_epoch(&leader.epochs, leader.leo(), last_epoch);
            let truncation = if kip320 {
                // The leader's fetch-time check: the follower's last epoch must reach its
                // fetch offset on the leader too. Without an epoch there is nothing to check.
                if last_epoch == UNDEFINED_EPOCH
                    || (answer.epoch == last_epoch && answer.end_offset >= leo)
                {
                    break;
                }
                truncation_on_diverging_epoch(leo, &local.epochs, answer)
            } else {
                truncation_offset(leo, local.hw, &local.epochs, answer)
            };
            assert!((0..=leo).contains(&truncation.offset));
            self.stats.truncated_records += (leo - truncation.offset) as u64;
            self.r_mut(f).truncate(truncation.offset);
            if truncation.complete {
                break;
            }
        }
        assert!(
            leader.log.starts_with(&self.r(f).log),
            "follower {f} diverges from the leader after truncating"
        );
        self.r_mut(f).must_truncate = false;
    }

    /// The controller answers the oldest AlterPartition request. With `chaos` it sometimes
    /// refuses a valid change as ineligible (a broker shutting down, say) or applies it and
    /// loses the answer, so the leader re-sends it.
    fn answer_alter(&mut self, chaos: bool) {
        if self.in_flight.is_empty() {
            return;
        }
        let change = self.in_flight.remove(0);
        let roll = if chaos {
            self.rng.random_range(0..10)
        } else {
            9
        };
        let result = self.alter_partition(&change, roll == 0);
        if roll == 1 {
            self.in_flight.push(change);
            return;
        }
        let moved = self.leader.on_alter_result(&change, result);
        self.saw(moved);
    }

    /// The fake controller's AlterPartition, checked like the real one: epochs first, so a
    /// change an earlier attempt applied is refused as INVALID_UPDATE_VERSION.
    fn alter_partition(
        &mut self,
        change: &IsrChange,
        ineligible: bool,
    ) -> Result<PartitionInfo, ResponseError> {
        if change.leader_epoch != self.ctrl.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if change.partition_epoch != self.ctrl.partition_epoch {
            return Err(ResponseError::InvalidUpdateVersion);
        }
        if ineligible || change.new_isr.iter().any(|&r| !self.r(r).alive) {
            return Err(ResponseError::IneligibleReplica);
        }
        if change.new_isr != self.ctrl.isr {
            if change.new_isr.len() < self.ctrl.isr.len() {
                self.stats.shrinks += 1;
            } else {
                self.stats.expansions += 1;
            }
            self.ctrl.isr.clone_from(&change.new_isr);
            self.ctrl.partition_epoch += 1;
            self.image_behind = true;
        }
        Ok(self.ctrl.clone())
    }

    fn deliver_image(&mut self) {
        if self.image_behind {
            self.image_behind = false;
            match self.leader.on_image(&self.ctrl) {
                ImageUpdate::Applied { high_watermark } => self.saw(high_watermark),
                ImageUpdate::NotLeader => panic!("the leader did not change"),
            }
        }
    }

    /// Broker `x` stops; the controller fences it: out of the ISR, and a new leader from the
    /// ISR if it led. A leader with no live ISR member to take over is kept alive.
    fn kill(&mut self, x: i32) {
        let survivors: Vec<i32> = self
            .ctrl
            .isr
            .iter()
            .copied()
            .filter(|&r| r != x && self.r(r).alive)
            .collect();
        if !self.r(x).alive || (x == self.ctrl.leader && survivors.is_empty()) {
            return;
        }
        self.r_mut(x).alive = false;
        if self.ctrl.isr.contains(&x) {
            self.ctrl.isr.retain(|&r| r != x);
            self.ctrl.partition_epoch += 1;
            self.image_behind = true;
        }
        if x == self.ctrl.leader {
            self.ctrl.leader = survivors[self.rng.random_range(0..survivors.len())];
            self.ctrl.leader_epoch += 1;
            self.change_leader();
        }
    }

    /// Broker `x` comes back with its log as it was and reconciles before fetching.
    fn restart(&mut self, x: i32) {
        let replica = self.r_mut(x);
        replica.alive = true;
        replica.must_truncate = true;
    }

    /// A controlled move of leadership to another live ISR member.
    fn move_leadership(&mut self) {
        let leader = self.ctrl.leader;
        let candidates: Vec<i32> = self
            .ctrl
            .isr
            .iter()
            .copied()
            .filter(|&r| r != leader && self.r(r).alive)
            .collect();
        if candidates.is_empty() {
            return;
        }
        self.ctrl.leader = candidates[self.rng.random_range(0..candidates.len())];
        self.ctrl.leader_epoch += 1;
        self.ctrl.partition_epoch += 1;
        self.change_leader();
    }

    /// Every broker sees the new leader at once. The old leader's acks=all requests fail;
    /// its AlterPartition requests stay in flight, to be fenced.
    fn change_leader(&mut self) {
        assert_eq!(self.leader.on_image(&self.ctrl), ImageUpdate::NotLeader);
        let (id, epoch, now) = (self.ctrl.leader, self.ctrl.leader_epoch, self.now);
        let new = self.r_mut(id);
        new.assign_epoch(epoch, new.leo());
        new.must_truncate = false;
        let (leo, hw) = (new.leo(), new.hw);
        self.leader = LeaderState::new(&self.ctrl, leo, hw, leo, now);
        self.last_hw = self.leader.high_watermark();
        for r in [1, 2, 3].into_iter().filter(|&r| r != id) {
            self.r_mut(r).must_truncate = true;
        }
        self.parked.clear();
        self.image_behind = false;
        self.stats.leader_changes += 1;
    }

    fn check(&mut self) {
        let leader_id = self.ctrl.leader;
        assert_eq!(self.leader.leader_id(), leader_id);
        assert!(
            self.ctrl.isr.contains(&leader_id),
            "ISR {:?}",
            self.ctrl.isr
        );
        assert!(self.leader.isr().contains(&leader_id));
        let pending = self.leader.pending().map_or(&[][..], |c| &c.new_isr[..]);
        assert!(pending.is_empty() || pending.contains(&leader_id));
        // Whoever the controller could elect counts for the HW.
        for r in &self.ctrl.isr {
            assert!(
                self.leader.isr().contains(r) || pending.contains(r),
                "controller ISR {:?} not within the leader's maximal ISR",
                self.ctrl.isr
            );
        }
        let hw = self.leader.high_watermark();
        self.r_mut(leader_id).hw = hw;
        if hw as usize > self.committed.len() {
            let log = &self.r(leader_id).log;
            assert!(log.starts_with(&self.committed), "the leader lost records");
            self.committed = log[..hw as usize].to_vec();
        }
        let mut isr_min_leo = i64::MAX;
        for &r in &self.ctrl.isr {
            let replica = self.r(r);
            assert!(replica.leo() >= hw, "HW {hw} above ISR member {r}'s LEO");
            assert!(
                replica.log.starts_with(&self.committed),
                "ISR member {r} lacks committed records"
            );
            isr_min_leo = isr_min_leo.min(replica.leo());
        }
        let before = self.parked.len();
        let leader = &self.leader;
        self.parked.retain(|&required| {
            let done = leader.is_committed(required);
            assert!(
                !done || required <= isr_min_leo,
                "acked {required} not on the ISR"
            );
            !done
        });
        self.stats.acks_completed += (before - self.parked.len()) as u64;
    }

    /// Every broker back, followers fetch everything, the controller and the image catch up:
    /// the ISR must grow back to all replicas and the HW reach the leader's LEO.
    fn heal(&mut self) {
        for x in [1, 2, 3] {
            if !self.r(x).alive {
                self.restart(x);
            }
        }
        for _ in 0..4 {
            for f in [1, 2, 3] {
                self.fetch(f, usize::MAX);
                self.fetch(f, 0); // reports the LEO just reached
            }
            while !self.in_flight.is_empty() {
                self.answer_alter(false);
            }
            self.deliver_image();
            self.check();
        }
        assert_eq!(self.leader.isr(), [1, 2, 3]);
        assert_eq!(self.leader.high_watermark(), self.r(self.ctrl.leader).leo());
    }
}

/// Names the failing seed when a check panics.
struct ReportSeed(u64);

impl Drop for ReportSeed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failing seed: {}", self.0);
        }
    }
}

#[test]
fn simulated_partitions_keep_the_replication_invariants() {
    let mut stats = Stats::default();
    for seed in 0..SEEDS {
        let _report = ReportSeed(seed);
        let mut sim = Sim::new(seed, stats);
        for _ in 0..STEPS {
            sim.step();
        }
        sim.heal();
        stats = sim.stats;
    }
    let Stats {
        acks_completed,
        not_enough_replicas,
        shrinks,
        expansions,
        truncated_records,
        leader_changes,
    } = stats;
    for (what, count) in [
        ("acks=all completions", acks_completed),
        ("NOT_ENOUGH_REPLICAS refusals", not_enough_replicas),
        ("ISR shrinks", shrinks),
        ("ISR expansions", expansions),
        ("truncated records", truncated_records),
        ("leader changes", leader_changes),
    ] {
        assert!(
            count > 0,
            "the simulation never exercised {what}: {stats:?}"
        );
    }
}
