//! The fault schedules: which node gets which fault when (a signal to a local process, a
//! docker command to a container). Every action is logged with its time; every schedule ends
//! with all nodes started, resumed and connected again, and every wait is bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio::sync::Mutex;

use runnel_client::{acks, Compression, PartitionMetadata, ProducerRecord};

use super::workload::{self, Counters};
use super::{disk, probe};
use crate::bounded_client::ATTEMPT_TIMEOUT;
use crate::cluster_target::{Target, TargetKind};
use crate::link_proxy::{self, Link};

pub(super) mod disk_fault;

/// How long a restarted node gets to answer /health with 200.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed or paused node stays down.
const DOWN_FOR: Duration = Duration::from_secs(5);
/// How long a node that came back gets to rejoin the ISR of all its partitions.
const IN_SYNC_TIMEOUT: Duration = Duration::from_secs(45);
/// Acks this soon after a majority went down may have been decided before it.
const IN_FLIGHT_GRACE: f64 = 1.0;
/// How long kill-two waits, with one of its two nodes back, for produce to succeed again
/// before it restarts the other.
const ONE_BACK_PATIENCE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Schedule {
    /// No faults: the baseline.
    None,
    /// Kill partition 0's leader (SIGKILL, docker kill) at a third of the run, start it 5 s
    /// later.
    KillLeader,
    /// Every few seconds kill a random node, starting it again before the next kill.
    KillRandom,
    /// Pause partition 0's leader (SIGSTOP, docker pause) past the session and replica lag
    /// timeouts, then resume it.
    PauseLeader,
    /// Kill the active controller, start it 5 s later.
    KillController,
    /// Restart each node in turn gracefully (SIGTERM, docker restart), waiting until it is
    /// healthy before the next.
    RollingRestart,
    /// Kill two of three nodes (not partition 0's leader); start one, wait until produce
    /// succeeds again, then start the other.
    KillTwo,
    /// Cut partition 0's leader off the other nodes (docker network disconnect, or every
    /// link of it through the local link proxy) past the session timeout while clients still
    /// reach it, then reconnect it.
    PartitionLeader,
    /// Pause a follower of partition 0 (SIGSTOP, docker pause) past replica.lag.time.max:
    /// for a seeded half of the seeds shorter than the session timeout (its leaders drop it
    /// from the ISR, the controller keeps it unfenced), for the other half longer (fenced
    /// too); then resume it.
    PauseFollower,
    /// Kill a random node, delete everything in its data dir (a replaced disk), start it
    /// again under the same node id: it must fetch every replica back. Local only.
    ReplaceDisk,
    /// Kill a random node and cut each of its partition logs back to what had been fsynced
    /// (the way LazyFS loses unsynced writes at a power loss), then start it again. Local
    /// only.
    LoseUnflushed,
    /// The same on two of three nodes at once (a power loss of a quorum). Without
    /// flush.messages=1 on the topic acknowledged records may be lost (as in Kafka): the
    /// report counts them but does not fail on them. Local only.
    LoseUnflushedQuorum,
    /// Concurrent faults: pause partition 0's leader (SIGSTOP, docker pause), and while it is
    /// paused kill one of the other nodes; start the killed one 5 s later, then resume the
    /// paused one. Two of three nodes are out meanwhile, so nothing may be acknowledged.
    KillWhilePaused,
    /// A seeded disk fault on partition 0's leader or a follower, through the failpoints of
    /// `runnel-faulty`: EIO on a write or an fsync (the data dir goes offline; once the
    /// controller has fenced the node it is restarted), or a full or slow disk for a few
    /// seconds. fsync faults fire only with flush.messages=1. Local only, runnel-faulty only.
    DiskFault,
    /// Cut one direction only between partition 0's leader and the other nodes (seeded: its
    /// outbound or its inbound links) past the session timeout, then heal it. Local only.
    PartitionOneWay,
    /// Cut partition 0's leader off the active controller alone, both ways, past the session
    /// timeout (another partition's leader if partition 0's is the controller), then heal it.
    /// Local only.
    PartitionController,
    /// Concurrent faults: cut partition 0's leader off the other nodes, and while it is cut
    /// off kill one of the others; start it 5 s later, then heal the cut. With 3 nodes no
    /// leader can reach a majority meanwhile, so nothing may be acknowledged. Local only.
    KillDuringPartition,
}

impl Schedule {
    /// The name given on the command line.
    pub(crate) fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }

    /// Whether the schedule cuts network links between nodes (a local run then puts its
    /// nodes behind a link proxy).
    pub(crate) fn cuts_links(self) -> bool {
        matches!(
            self,
            Schedule::PartitionLeader
                | Schedule::PartitionOneWay
                | Schedule::PartitionController
                | Schedule::KillDuringPartition
        )
    }

    /// Why this schedule cannot run on `target`, if it cannot.
    pub(crate) fn unsupported_on(self, target: TargetKind) -> Option<&'static str> {
        match (self, target) {
            (s, TargetKind::Local) if s.cuts_links() && !link_proxy::SUPPORTED => Some(
                "cutting links between local nodes needs Linux (the link proxy tells the nodes' \
                 connections apart through /proc); run it on Linux or with --target compose",
            ),
            (
                Schedule::PartitionOneWay
                | Schedule::PartitionController
                | Schedule::KillDuringPartition,
                TargetKind::Compose,
            ) => Some(
                "it cuts single links between nodes through the local link proxy; run it with \
                 --target local",
            ),
            (
                Schedule::ReplaceDisk | Schedule::LoseUnflushed | Schedule::LoseUnflushedQuorum,
                TargetKind::Compose,
            ) => {
                Some("it changes a node's files while the node is down; run it with --target local")
            }
            (Schedule::DiskFault, TargetKind::Compose) => Some(
                "its failpoints exist only in the runnel-faulty binary, which the compose image \
                 does not run; run it with --target local from target/release/runnel-faulty",
            ),
            _ => None,
        }
    }
}

/// What a leader cut off from the other nodes acknowledged: produces sent to it alone (acks=all)
/// while it was isolated (wholly, or one way: its followers cannot get new records, or it
/// cannot hear that they did). Any ack of one sent after the cut began is a violation: its
/// followers could not have the records.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct IsolationProbe {
    pub(crate) node: u16,
    pub(crate) sent: usize,
    pub(crate) acked: usize,
    pub(crate) last_error: Option<String>,
}

/// One fault action, at seconds since the workload started.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultEvent {
    pub(crate) at: f64,
    pub(crate) action: String,
}

/// What the injector did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct FaultLog {
    pub(crate) events: Vec<FaultEvent>,
    /// Stretches in which a majority of the nodes was down: acks=all must not succeed then.
    pub(crate) quorum_loss: Vec<(f64, f64)>,
    /// Stretches after a quorum loss in which one node had come back but not yet the others:
    /// produce should recover within them.
    pub(crate) one_back: Vec<(f64, f64)>,
    /// What the cut-off leader of partition-leader, partition-one-way or
    /// kill-during-partition acknowledged.
    pub(crate) isolation_probe: Option<IsolationProbe>,
    /// Why losing acknowledged records does not fail this run, if it does not: a majority
    /// lost its unflushed writes on a topic that does not fsync every append.
    pub(crate) loss_allowed: Option<String>,
}

/// What the schedules' choices depend on.
pub(crate) struct InjectorSettings {
    pub(crate) seed: u64,
    /// The broker session timeout and replica.lag.time.max the nodes run with.
    pub(crate) session_timeout: Duration,
    pub(crate) lag_time_max: Duration,
    /// The topic fsyncs every append (flush.messages=1).
    pub(crate) durable: bool,
}

pub(crate) struct Injector {
    cluster: Arc<Mutex<Target>>,
    started: Instant,
    bootstrap: String,
    topic: String,
    rng: StdRng,
    /// The broker session timeout and replica.lag.time.max the nodes run with.
    session_timeout: Duration,
    lag_time_max: Duration,
    /// The topic fsyncs every append (flush.messages=1): no fault of this nemesis may lose
    /// an acknowledged record of it.
    durable: bool,
    /// The workload's totals, to see when produce succeeds again.
    counters: Arc<Counters>,
    log: FaultLog,
}

impl Injector {
    pub(crate) fn new(
        cluster: Arc<Mutex<Target>>,
        started: Instant,
        bootstrap: String,
        topic: String,
        settings: InjectorSettings,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            cluster,
            started,
            bootstrap,
            topic,
            rng: StdRng::seed_from_u64(settings.seed),
            session_timeout: settings.session_timeout,
            lag_time_max: settings.lag_time_max,
            durable: settings.durable,
            counters,
            log: FaultLog::default(),
        }
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn note(&mut self, action: String) {
        let at = self.now();
        eprintln!("[{at:6.1}s] fault: {action}");
        self.log.events.push(FaultEvent { at, action });
    }

    async fn sleep_until(&self, at: Duration) {
        tokio::time::sleep_until((self.started + at).into()).await;
    }

    async fn ids(&self) -> Vec<u16> {
        self.cluster.lock().await.ids()
    }

    /// Notes what `result` says was done to node `id`, or how it failed.
    fn done(&mut self, id: u16, what: &str, result: anyhow::Result<impl AsRef<str>>, why: &str) {
        match result {
            Ok(how) => self.note(format!("{} node {id}{why}", how.as_ref())),
            Err(e) => self.note(format!("{what} node {id} failed: {e:#}")),
        }
    }

    async fn pause(&mut self, id: u16, why: &str) {
        let result = self.cluster.lock().await.pause(id).await;
        self.done(id, "pause", result, why);
    }

    async fn resume(&mut self, id: u16) {
        let result = self.cluster.lock().await.resume(id).await;
        self.done(id, "resume", result, "");
    }

    async fn kill(&mut self, id: u16, why: &str) {
        let result = self.cluster.lock().await.kill(id).await;
        self.done(id, "kill", result, why);
    }

    /// Starts node `id` again and waits (bounded) until it answers /health.
    async fn restart(&mut self, id: u16) {
        let result = self.cluster.lock().await.start(id).await;
        let started = result.is_ok();
        self.done(id, "start", result, "");
        if started {
            self.wait_healthy(id).await;
        }
    }

    /// Waits (bounded) until node `id` answers /health with 200.
    async fn wait_healthy(&mut self, id: u16) {
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            let pending = self.cluster.lock().await.unhealthy(&[id]).await;
            if pending.is_empty() {
                self.note(format!("node {id} healthy"));
                return;
            }
            if Instant::now() >= deadline {
                self.note(format!(
                    "node {id} not healthy within {} s",
                    RESTART_TIMEOUT.as_secs()
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The topic's partitions as the Kafka metadata names them, if it answers in time.
    async fn partitions(&self) -> Option<Vec<PartitionMetadata>> {
        self.partitions_from(&self.bootstrap).await
    }

    /// The same as the nodes other than `id` see it: a node just reconnected after a cut
    /// answers from its stale view until it has caught up.
    async fn partitions_seen_without(&self, id: u16) -> Option<Vec<PartitionMetadata>> {
        let skipped = self
            .cluster
            .lock()
            .await
            .kafka_of(id)
            .map(|a| a.to_string());
        let others: Vec<&str> = self
            .bootstrap
            .split(',')
            .filter(|&a| Some(a) != skipped.as_deref())
            .collect();
        if others.is_empty() {
            return self.partitions().await;
        }
        self.partitions_from(&others.join(",")).await
    }

    async fn partitions_from(&self, bootstrap: &str) -> Option<Vec<PartitionMetadata>> {
        let mut client = workload::connect(bootstrap).await.ok()?;
        let topic = tokio::time::timeout(ATTEMPT_TIMEOUT, client.topic_metadata(&self.topic))
            .await
            .ok()?
            .ok()?;
        Some(topic.partitions)
    }

    /// Partition 0's leader from the Kafka metadata, else a random node.
    async fn leader_of_partition_0(&mut self) -> (u16, &'static str) {
        let leader = self
            .partitions()
            .await
            .and_then(|p| p.iter().find(|p| p.partition == 0).map(|p| p.leader))
            .and_then(|l| u16::try_from(l).ok());
        match leader {
            Some(id) => (id, " (leader of partition 0)"),
            None => (
                self.random_node().await,
                " (partition 0's leader unknown; random)",
            ),
        }
    }

    /// The active controller as the first answering node reports it, else a random node.
    async fn controller(&mut self) -> (u16, &'static str) {
        let nodes = self.cluster.lock().await.https();
        for http in nodes {
            if let Some(id) = probe::cluster_view(http)
                .await
                .and_then(|v| v.controller.leader_id)
                .and_then(|id| u16::try_from(id).ok())
            {
                return (id, " (active controller)");
            }
        }
        (self.random_node().await, " (controller unknown; random)")
    }

    async fn random_node(&mut self) -> u16 {
        let ids = self.ids().await;
        ids.choose(&mut self.rng).copied().unwrap_or(1)
    }

    /// Runs `schedule` over a workload of `duration`; returns once every node is back.
    pub(crate) async fn run(mut self, schedule: Schedule, duration: Duration) -> FaultLog {
        let third = duration / 3;
        match schedule {
            Schedule::None => {}
            Schedule::KillLeader => {
                self.sleep_until(third).await;
                let (id, why) = self.leader_of_partition_0().await;
                self.kill(id, why).await;
                tokio::time::sleep(DOWN_FOR).await;
                self.restart(id).await;
            }
            Schedule::KillController => {
                self.sleep_until(third).await;
                let (id, why) = self.controller().await;
                self.kill(id, why).await;
                tokio::time::sleep(DOWN_FOR).await;
                self.restart(id).await;
            }
            Schedule::PauseLeader => {
                self.sleep_until(third).await;
                let (id, why) = self.leader_of_partition_0().await;
                self.pause(id, why).await;
                tokio::time::sleep(self.session_timeout + Duration::from_secs(2)).await;
                self.resume(id).await;
            }
            Schedule::PartitionLeader => self.partition_leader(third).await,
            Schedule::KillRandom => self.kill_random(duration).await,
            Schedule::RollingRestart => self.rolling_restart().await,
            Schedule::KillTwo => self.kill_two(third).await,
            Schedule::PauseFollower => self.pause_follower(third).await,
            Schedule::ReplaceDisk => self.replace_disk(third).await,
            Schedule::LoseUnflushed => self.lose_unflushed(third, 1).await,
            Schedule::LoseUnflushedQuorum => self.lose_unflushed(third, 2).await,
            Schedule::KillWhilePaused => self.kill_while_paused(third).await,
            Schedule::DiskFault => self.disk_fault(third).await,
            Schedule::PartitionOneWay => self.partition_one_way(third).await,
            Schedule::PartitionController => self.partition_controller(third).await,
            Schedule::KillDuringPartition => self.kill_during_partition(third).await,
        }
        self.log
    }

    async fn kill_random(&mut self, duration: Duration) {
        self.sleep_until(Duration::from_secs(2)).await;
        // Leave the last seconds fault-free so recovery is measured.
        while self.started.elapsed() + Duration::from_secs(6) < duration {
            let id = self.random_node().await;
            self.kill(id, " (random)").await;
            let down = Duration::from_millis(self.rng.random_range(1000..3000));
            tokio::time::sleep(down).await;
            self.restart(id).await;
            let gap = Duration::from_millis(self.rng.random_range(1000..3000));
            tokio::time::sleep(gap).await;
        }
    }

    async fn rolling_restart(&mut self) {
        self.sleep_until(Duration::from_secs(1)).await;
        for id in self.ids().await {
            let result = self.cluster.lock().await.restart_gracefully(id).await;
            match result {
                Ok(steps) => {
                    for (i, step) in steps.into_iter().enumerate() {
                        let why = if i == 0 { " (rolling restart)" } else { "" };
                        self.note(format!("{step} node {id}{why}"));
                    }
                    self.wait_healthy(id).await;
                }
                Err(e) => self.note(format!("restart node {id} failed: {e:#}")),
            }
        }
    }

    async fn kill_two(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let mut ids = self.ids().await;
        let total = ids.len();
        let (leader, _) = self.leader_of_partition_0().await;
        // Keep partition 0's leader up, so the acks it must refuse are really tried.
        ids.retain(|&id| id != leader);
        let victims: Vec<u16> = ids.choose_multiple(&mut self.rng, 2).copied().collect();
        for &id in &victims {
            self.kill(id, " (one of two)").await;
        }
        let down_from = self.now() + IN_FLIGHT_GRACE;
        tokio::time::sleep(DOWN_FOR).await;
        let majority_down = victims.len() * 2 > total;
        let mut victims = victims.into_iter();
        if let Some(first) = victims.next() {
            if majority_down {
                self.log.quorum_loss.push((down_from, self.now()));
            }
            self.restart(first).await;
            if majority_down {
                // From the moment it answers /health: acks before that are not its doing.
                let back_from = self.now();
                self.wait_for_an_ack().await;
                self.log.one_back.push((back_from, self.now()));
            }
        }
        for id in victims {
            self.restart(id).await;
        }
    }

    /// How long a partition lasts: past the session timeout (the controller fences the node
    /// cut off), leader elections on the majority side, and the produce request timeout of
    /// what was sent to it.
    fn partition_length(&self) -> Duration {
        self.session_timeout * 3 + Duration::from_secs(5)
    }

    /// Cuts partition 0's leader off the other nodes for long enough that the majority
    /// fences it and elects new leaders, while a probe keeps producing to it directly: an
    /// isolated leader must not acknowledge an acks=all write.
    async fn partition_leader(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let (id, why) = self.leader_of_partition_0().await;
        let result = self.cluster.lock().await.isolate(id).await;
        let isolated = result.is_ok();
        self.done(id, "isolate", result, why);
        if !isolated {
            return;
        }
        let since = Instant::now();
        let probe = self.probe_cut_off_leader(id).await;
        tokio::time::sleep(self.partition_length()).await;
        self.finish_probe(probe).await;
        self.reconnect(id, since).await;
    }

    /// Heals every link of node `id` and waits until it is healthy and in sync again.
    async fn reconnect(&mut self, id: u16, since: Instant) {
        let result = self.cluster.lock().await.heal(id).await;
        self.done(id, "reconnect", result, "");
        self.wait_healthy(id).await;
        self.wait_in_sync(id, since).await;
    }

    /// Cuts `links`, noting why; false if they could not be cut.
    async fn cut(&mut self, links: &[Link], why: &str) -> bool {
        let result = self.cluster.lock().await.cut_links(links);
        match result {
            Ok(()) => {
                self.note(format!("cut links {}{why}", describe_links(links)));
                true
            }
            Err(e) => {
                self.note(format!("cut links {} failed: {e:#}", describe_links(links)));
                false
            }
        }
    }

    async fn heal_links(&mut self, links: &[Link]) {
        let result = self.cluster.lock().await.heal_links(links);
        match result {
            Ok(()) => self.note(format!("heal links {}", describe_links(links))),
            Err(e) => self.note(format!(
                "heal links {} failed: {e:#}",
                describe_links(links)
            )),
        }
    }

    /// Cuts one direction between partition 0's leader and every other node: its outbound
    /// links (followers get nothing new from it, the controller no heartbeats) or its inbound
    /// ones (it hears no fetch offsets, no heartbeat answers). Either way its followers cannot
    /// confirm new records, so the probe of a cut-off leader applies.
    async fn partition_one_way(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let (id, why) = self.leader_of_partition_0().await;
        let others: Vec<u16> = self.ids().await.into_iter().filter(|&o| o != id).collect();
        let outbound = self.rng.random_bool(0.5);
        let links: Vec<Link> = others
            .iter()
            .map(|&o| if outbound { (id, o) } else { (o, id) })
            .collect();
        let direction = if outbound { "outbound" } else { "inbound" };
        if !self
            .cut(&links, &format!(", node {id}'s {direction}{why}"))
            .await
        {
            return;
        }
        let since = Instant::now();
        let probe = self.probe_cut_off_leader(id).await;
        tokio::time::sleep(self.partition_length()).await;
        self.finish_probe(probe).await;
        self.heal_links(&links).await;
        self.wait_healthy(id).await;
        self.wait_in_sync(id, since).await;
    }

    /// Cuts a partition leader off the active controller alone, both ways: it still reaches
    /// the other nodes (its followers keep fetching), but its heartbeats go nowhere, so the
    /// controller fences it and moves its leaderships away while it may go on believing it
    /// leads.
    async fn partition_controller(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let (controller, controller_why) = self.controller().await;
        let partitions = self.partitions().await.unwrap_or_default();
        let led_by = |p: &PartitionMetadata| u16::try_from(p.leader).ok();
        let partition_0 = partitions
            .iter()
            .find(|p| p.partition == 0)
            .and_then(led_by);
        let other_leader = partitions
            .iter()
            .filter_map(|p| led_by(p).map(|l| (p.partition, l)))
            .find(|&(_, l)| l != controller);
        let (victim, why) = match (partition_0, other_leader) {
            (Some(l), _) if l != controller => (l, " (leader of partition 0)".to_owned()),
            (_, Some((p, l))) => (
                l,
                format!(" (leader of partition {p}; partition 0's leader is the controller)"),
            ),
            _ => {
                let others: Vec<u16> = self
                    .ids()
                    .await
                    .into_iter()
                    .filter(|&o| o != controller)
                    .collect();
                let Some(&other) = others.choose(&mut self.rng) else {
                    self.note("no node besides the controller to cut off".to_owned());
                    return;
                };
                (
                    other,
                    " (the controller leads every partition; a random other node)".to_owned(),
                )
            }
        };
        let links = [(victim, controller), (controller, victim)];
        let why = format!(" between node {victim}{why} and node {controller}{controller_why}");
        if !self.cut(&links, &why).await {
            return;
        }
        let since = Instant::now();
        tokio::time::sleep(self.partition_length()).await;
        self.heal_links(&links).await;
        self.wait_healthy(victim).await;
        self.wait_in_sync(victim, since).await;
    }

    /// Cuts partition 0's leader off the other nodes, kills one of the others while the cut
    /// lasts (before or after the controller fenced the cut-off node, as the seed says),
    /// starts it again 5 s later, then heals the cut. With 3 nodes the one left can reach no
    /// majority meanwhile: nothing may be acknowledged.
    async fn kill_during_partition(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let (cut_off, why) = self.leader_of_partition_0().await;
        let result = self.cluster.lock().await.isolate(cut_off).await;
        let isolated = result.is_ok();
        self.done(cut_off, "isolate", result, why);
        if !isolated {
            return;
        }
        let since = Instant::now();
        let probe = self.probe_cut_off_leader(cut_off).await;
        let before_kill = Duration::from_millis(
            self.rng
                .random_range(500..(self.session_timeout.as_millis() as u64 + 2000)),
        );
        tokio::time::sleep(before_kill).await;
        let others: Vec<u16> = self
            .ids()
            .await
            .into_iter()
            .filter(|&id| id != cut_off)
            .collect();
        if let Some(&killed) = others.choose(&mut self.rng) {
            self.kill(killed, &format!(" (while node {cut_off} is cut off)"))
                .await;
            let down_from = self.now() + IN_FLIGHT_GRACE;
            tokio::time::sleep(DOWN_FOR).await;
            if others.len() < 3 {
                self.log.quorum_loss.push((down_from, self.now()));
            }
            self.restart(killed).await;
            self.finish_probe(probe).await;
            self.reconnect(cut_off, since).await;
            self.wait_in_sync(killed, since).await;
        } else {
            self.finish_probe(probe).await;
            self.reconnect(cut_off, since).await;
        }
    }

    /// Starts producing to node `id` alone, cut off from (some of) its followers.
    async fn probe_cut_off_leader(&mut self, id: u16) -> Option<LeaderProbe> {
        let kafka = self.cluster.lock().await.kafka_of(id)?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(probe_isolated_leader(
            kafka,
            id,
            self.topic.clone(),
            self.started,
            self.now(),
            stop_rx,
        ));
        Some(LeaderProbe { stop, task })
    }

    /// Stops the probe and notes what the cut-off leader acknowledged.
    async fn finish_probe(&mut self, probe: Option<LeaderProbe>) {
        let Some(probe) = probe else { return };
        let _ = probe.stop.send(true);
        match tokio::time::timeout(ATTEMPT_TIMEOUT * 2, probe.task).await {
            Ok(Ok(result)) => {
                self.note(format!(
                    "isolated node {} acknowledged {} of {} probe produces",
                    result.node, result.acked, result.sent
                ));
                self.log.isolation_probe = Some(result);
            }
            _ => self.note("the cut-off-leader probe did not finish".to_owned()),
        }
    }

    async fn pause_follower(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let partition_0 = self
            .partitions()
            .await
            .and_then(|p| p.into_iter().find(|p| p.partition == 0));
        let followers: Vec<u16> = partition_0
            .iter()
            .flat_map(|p| {
                let leader = p.leader;
                p.replicas
                    .iter()
                    .filter(move |&&r| r != leader)
                    .filter_map(|&r| u16::try_from(r).ok())
            })
            .collect();
        let (id, why) = match followers.choose(&mut self.rng) {
            Some(&id) => (id, " (follower of partition 0)"),
            None => (
                self.random_node().await,
                " (partition 0's followers unknown; random)",
            ),
        };
        // Past the lag limit always; then either short of the session timeout (only the
        // leaders' ISR expiry notices) or well past it (the controller fences it too).
        let lag = self.lag_time_max + Duration::from_millis(300);
        let down = if self.rng.random_bool(0.5) && lag < self.session_timeout {
            let span = (self.session_timeout - lag).as_millis() as u64;
            lag + Duration::from_millis(self.rng.random_range(0..span.max(1)))
        } else {
            let from = self.session_timeout.max(lag) + Duration::from_secs(1);
            from + Duration::from_millis(
                self.rng
                    .random_range(0..self.session_timeout.as_millis() as u64 + 1),
            )
        };
        self.pause(id, &format!("{why} for {:.1} s", down.as_secs_f64()))
            .await;
        let since = Instant::now();
        tokio::time::sleep(down).await;
        self.resume(id).await;
        self.wait_in_sync(id, since).await;
    }

    async fn replace_disk(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let id = self.random_node().await;
        // Back before the session timeout (still unfenced, maybe still in ISRs) or after it.
        let down = if self.rng.random_bool(0.5) {
            Duration::from_secs(1)
        } else {
            DOWN_FOR
        };
        self.kill(
            id,
            &format!(" (its disk is replaced; down {} s)", down.as_secs()),
        )
        .await;
        let since = Instant::now();
        let dir = self.cluster.lock().await.data_dir_of(id);
        let wiped = dir
            .as_deref()
            .map_or_else(|| Err(anyhow::anyhow!("no data dir")), disk::wipe);
        match wiped {
            Ok(n) => self.note(format!("deleted the {n} entries of node {id}'s data dir")),
            Err(e) => self.note(format!("wiping node {id}'s data dir failed: {e:#}")),
        }
        tokio::time::sleep(down.saturating_sub(since.elapsed())).await;
        self.restart(id).await;
        self.wait_in_sync(id, since).await;
    }

    /// Kills `count` random nodes at once, cuts their logs back to what was fsynced and
    /// starts them again.
    async fn lose_unflushed(&mut self, at: Duration, count: usize) {
        self.sleep_until(at).await;
        let ids = self.ids().await;
        let total = ids.len();
        let victims: Vec<u16> = ids.choose_multiple(&mut self.rng, count).copied().collect();
        for &id in &victims {
            self.kill(id, " (power loss)").await;
        }
        let since = Instant::now();
        let down_from = self.now() + IN_FLIGHT_GRACE;
        let majority_down = victims.len() * 2 > total;
        if majority_down && !self.durable {
            self.log.loss_allowed = Some(format!(
                "{} of {total} nodes lost their unflushed writes at once and topic {} does not \
                 fsync every append (flush.messages=1): acknowledged records held only in \
                 those nodes' page caches may be gone, as in Kafka",
                victims.len(),
                self.topic
            ));
        }
        for &id in &victims {
            let dir = self.cluster.lock().await.data_dir_of(id);
            let cut = match dir {
                Some(d) => disk::lose_unflushed(&d, &mut self.rng),
                None => Err(anyhow::anyhow!("no data dir")),
            };
            match cut {
                Ok(cuts) => {
                    let lost: Vec<String> = cuts
                        .iter()
                        .filter(|c| c.log_end_after < c.log_end_before)
                        .map(|c| {
                            format!(
                                "{} {}->{} (fsynced to {})",
                                c.partition, c.log_end_before, c.log_end_after, c.recovery_point
                            )
                        })
                        .collect();
                    let bytes: u64 = cuts.iter().map(|c| c.bytes_dropped).sum();
                    self.note(format!(
                        "cut node {id}'s unflushed writes: {bytes} bytes in {} of {} logs{}{}",
                        lost.len(),
                        cuts.len(),
                        if lost.is_empty() { "" } else { ": " },
                        lost.join(", ")
                    ));
                }
                Err(e) => self.note(format!("cutting node {id}'s logs failed: {e:#}")),
            }
        }
        tokio::time::sleep(DOWN_FOR).await;
        if majority_down {
            self.log.quorum_loss.push((down_from, self.now()));
        }
        for (i, &id) in victims.iter().enumerate() {
            self.restart(id).await;
            if i == 0 && majority_down {
                // As in kill-two: produce must resume with the majority back, here with one
                // node whose logs were cut beside one that kept everything.
                let back_from = self.now();
                self.wait_for_an_ack().await;
                self.log.one_back.push((back_from, self.now()));
            }
        }
        for &id in &victims {
            self.wait_in_sync(id, since).await;
        }
    }

    async fn kill_while_paused(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let (paused, why) = self.leader_of_partition_0().await;
        self.pause(paused, why).await;
        let since = Instant::now();
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(200..1500))).await;
        let others: Vec<u16> = self
            .ids()
            .await
            .into_iter()
            .filter(|&id| id != paused)
            .collect();
        let Some(&killed) = others.choose(&mut self.rng) else {
            self.resume(paused).await;
            return;
        };
        self.kill(killed, &format!(" (while node {paused} is paused)"))
            .await;
        let down_from = self.now() + IN_FLIGHT_GRACE;
        tokio::time::sleep(DOWN_FOR).await;
        let total = self.ids().await.len();
        if total < 4 {
            self.log.quorum_loss.push((down_from, self.now()));
        }
        self.restart(killed).await;
        self.resume(paused).await;
        self.wait_in_sync(killed, since).await;
        self.wait_in_sync(paused, since).await;
    }

    /// Waits (bounded) until node `id` is in the ISR of every partition of the topic it is
    /// a replica of, as the other nodes see it: it has fetched back what it lost or missed.
    /// `since` is when it went
    /// down: the metadata may still list it in an ISR its leader has not shrunk yet, so
    /// membership counts only once a lagging follower would have been dropped.
    async fn wait_in_sync(&mut self, id: u16, since: Instant) {
        let started = Instant::now();
        let trusted_from = since + self.lag_time_max + Duration::from_secs(1);
        let deadline = started + IN_SYNC_TIMEOUT;
        let me = i32::from(id);
        loop {
            let behind: Option<Vec<i32>> = self.partitions_seen_without(id).await.map(|ps| {
                ps.iter()
                    .filter(|p| p.replicas.contains(&me) && !p.isr.contains(&me))
                    .map(|p| p.partition)
                    .collect()
            });
            match behind {
                Some(b) if b.is_empty() && Instant::now() >= trusted_from => {
                    self.note(format!(
                        "node {id} in sync again after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ));
                    return;
                }
                _ if Instant::now() >= deadline => {
                    self.note(format!(
                        "node {id} not in sync within {} s: out of the ISR of partitions {:?}",
                        IN_SYNC_TIMEOUT.as_secs(),
                        behind.unwrap_or_default()
                    ));
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Waits (at most ONE_BACK_PATIENCE) until the workload gets a produce acknowledged.
    async fn wait_for_an_ack(&mut self) {
        if self.counters.wait_for_an_ack(ONE_BACK_PATIENCE).await {
            self.note("produce acknowledged again".to_owned());
        } else {
            self.note(format!(
                "no produce acknowledged within {} s of a node coming back",
                ONE_BACK_PATIENCE.as_secs()
            ));
        }
    }
}

/// A running `probe_isolated_leader`.
struct LeaderProbe {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<IsolationProbe>,
}

/// `1->2, 1->3`.
fn describe_links(links: &[Link]) -> String {
    links
        .iter()
        .map(|(from, to)| format!("{from}->{to}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Produces acks=all to partition 0 through node `id` alone (a client that knows only its
/// address and the leader it names) until `stop`; counts the acknowledgements of produces
/// sent after `isolated_from` + the in-flight grace.
async fn probe_isolated_leader(
    kafka: std::net::SocketAddr,
    id: u16,
    topic: String,
    started: Instant,
    isolated_from: f64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> IsolationProbe {
    let mut probe = IsolationProbe {
        node: id,
        ..IsolationProbe::default()
    };
    let mut n = 0u64;
    while !*stop.borrow() {
        let sent_at = started.elapsed().as_secs_f64();
        let value = format!("isolation-probe:{n}");
        n += 1;
        let attempt = async {
            // A new client each time: its only metadata is what the isolated node says.
            let mut client = workload::connect(&kafka.to_string()).await?;
            let named = client.topic_metadata(&topic).await?;
            if named.partitions.first().map(|p| p.leader) != Some(i32::from(id)) {
                return anyhow::Ok(false);
            }
            let record = [ProducerRecord::value(value)];
            client
                .produce_attempt(&topic, 0, &record, acks::ALL, Compression::None)
                .await?;
            anyhow::Ok(true)
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            // It no longer names itself leader: nothing was sent.
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                probe.sent += 1;
                if sent_at >= isolated_from + IN_FLIGHT_GRACE {
                    probe.acked += 1;
                }
            }
            Ok(Err(e)) => {
                probe.sent += 1;
                probe.last_error = Some(format!("{e:#}"));
            }
            Err(_) => {
                probe.sent += 1;
                probe.last_error = Some("no answer in time".to_owned());
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), stop.changed()).await;
    }
    probe
}
