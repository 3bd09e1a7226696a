//! The fault schedules: which node gets which signal when. Every action is logged with its
//! time; every schedule ends with all nodes started again, and every wait is bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio::sync::Mutex;

use super::probe;
use super::workload::{self, Counters};
use crate::commands::local_cluster::{LocalCluster, STOP_TIMEOUT};

/// How long a restarted node gets to answer /health with 200.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed or paused node stays down.
const DOWN_FOR: Duration = Duration::from_secs(5);
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
    /// SIGKILL partition 0's leader at a third of the run, restart it 5 s later.
    KillLeader,
    /// Every few seconds SIGKILL a random node, restarting it before the next kill.
    KillRandom,
    /// SIGSTOP partition 0's leader past the session and replica lag timeouts, then SIGCONT.
    PauseLeader,
    /// SIGKILL the active controller, restart it 5 s later.
    KillController,
    /// SIGTERM each node in turn, restarting it and waiting until it is healthy.
    RollingRestart,
    /// SIGKILL two of three nodes (not partition 0's leader); restart one, wait until
    /// produce succeeds again, then restart the other.
    KillTwo,
}

impl Schedule {
    /// The name given on the command line.
    pub(crate) fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }
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
}

pub(crate) struct Injector {
    cluster: Arc<Mutex<LocalCluster>>,
    started: Instant,
    bootstrap: String,
    topic: String,
    rng: StdRng,
    /// The broker session timeout the nodes run with.
    session_timeout: Duration,
    /// The workload's totals, to see when produce succeeds again.
    counters: Arc<Counters>,
    log: FaultLog,
}

impl Injector {
    pub(crate) fn new(
        cluster: Arc<Mutex<LocalCluster>>,
        started: Instant,
        bootstrap: String,
        topic: String,
        seed: u64,
        session_timeout: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            cluster,
            started,
            bootstrap,
            topic,
            rng: StdRng::seed_from_u64(seed),
            session_timeout,
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

    async fn signal(&mut self, id: u16, signal: &str, why: &str) {
        let result = self.cluster.lock().await.signal(id, signal).await;
        match result {
            Ok(()) => self.note(format!("SIG{signal} node {id}{why}")),
            Err(e) => self.note(format!("SIG{signal} node {id} failed: {e:#}")),
        }
    }

    async fn kill(&mut self, id: u16, why: &str) {
        self.cluster.lock().await.kill(id).await;
        self.note(format!("SIGKILL node {id}{why}"));
    }

    /// Starts node `id` again and waits (bounded) until it answers /health.
    async fn restart(&mut self, id: u16) {
        let result = self.cluster.lock().await.start(id);
        match result {
            Ok(()) => self.note(format!("restart node {id}")),
            Err(e) => {
                self.note(format!("restart node {id} failed: {e:#}"));
                return;
            }
        }
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

    /// Partition 0's leader from the Kafka metadata, else a random node.
    async fn leader_of_partition_0(&mut self) -> (u16, &'static str) {
        let leader = async {
            let mut client = workload::connect(&self.bootstrap).await.ok()?;
            let topic = tokio::time::timeout(
                crate::commands::bounded_client::ATTEMPT_TIMEOUT,
                client.topic_metadata(&self.topic),
            )
            .await
            .ok()?
            .ok()?;
            let leader = topic.partitions.first()?.leader;
            u16::try_from(leader).ok()
        }
        .await;
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
        let nodes: Vec<_> = {
            let cluster = self.cluster.lock().await;
            cluster.plan().iter().map(|n| n.http).collect()
        };
        for http in nodes {
            if let Some(id) = probe::cluster_view(http)
                .await
                .and_then(|v| v.controller())
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
                self.signal(id, "STOP", why).await;
                tokio::time::sleep(self.session_timeout + Duration::from_secs(2)).await;
                self.signal(id, "CONT", "").await;
            }
            Schedule::KillRandom => self.kill_random(duration).await,
            Schedule::RollingRestart => self.rolling_restart().await,
            Schedule::KillTwo => self.kill_two(third).await,
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
            self.signal(id, "TERM", " (rolling restart)").await;
            let stopped = self.cluster.lock().await.wait_exit(id, STOP_TIMEOUT).await;
            if !stopped {
                self.kill(id, " (did not stop after SIGTERM)").await;
            }
            self.restart(id).await;
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
