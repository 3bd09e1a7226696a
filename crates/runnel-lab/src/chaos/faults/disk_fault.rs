//! `disk-fault`: one node's disk fails or slows down, through the failpoints of the
//! `runnel-faulty` binary (docs/robustness.md, "Disk errors"). A seeded draw picks the node
//! (partition 0's leader or one of its followers) and the fault:
//!
//! - EIO on a write step or on an fsync: the broker takes its data dir offline, its heartbeats
//!   say so and the controller fences it and moves its leaderships. Once it has, the failpoint
//!   is removed and the node restarted gracefully (SIGTERM, then start), as an operator does
//!   after repairing the disk: `systemctl restart` sends SIGTERM, and a broker with an offline
//!   dir must still stop in time without fsyncing its logs (a SIGKILL after STOP_TIMEOUT is
//!   noted if it does not).
//! - a full disk (ENOSPC on every write step) or a slow disk (every data write, or every
//!   fsync, sleeps) for a few seconds, then removed: the broker must ride it out without going
//!   offline.
//!
//! An fsync fault fires only when the log fsyncs: on every append with the topic config
//! flush.messages=1, otherwise only at a segment roll or a shutdown, which a short run does not
//! reach; the fault log then says that it never fired.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::Rng as _;
use runnel_storage::failpoints as fp;

use super::Injector;
use crate::chaos::probe;
use crate::cli::{http_agent, url};

/// How long a failing write step gets to take the data dir offline: records are written all
/// the time, the high-watermark checkpoint once a second.
const FIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the controller gets to fence the broker, move its leaderships and drop it from
/// the ISRs once its data dir is offline.
const FENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a full or slow disk lasts, in milliseconds.
const TRANSIENT_MS: std::ops::RangeInclusive<u64> = 2_000..=6_000;
/// The delay a slow disk adds to each write and to each fsync, in milliseconds.
const SLOW_WRITE_MS: std::ops::RangeInclusive<u64> = 20..=300;
const SLOW_FSYNC_MS: std::ops::RangeInclusive<u64> = 100..=1_000;
/// What a broker logs when it takes its data dir offline (runnel_broker::log_dir).
const OFFLINE_LINE: &str = "disk error: taking the data dir offline";
/// Bound on one failpoint request. Generous: a node whose disk sleeps does its file work on
/// its async workers, so it may answer HTTP late.
const FAILPOINT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The failpoint the check for `runnel-faulty` removes (a no-op: none is set then).
const PROBE_FAILPOINT: &str = fp::SEGMENT_WRITE;

/// Write steps that run on every append (or every second, the high-watermark checkpoint), so
/// an error on one fires at once.
const BUSY_WRITES: &[&str] = &[
    fp::SEGMENT_WRITE,
    fp::OFFSET_INDEX_WRITE,
    fp::TIME_INDEX_WRITE,
    fp::HW_CHECKPOINT_WRITE,
];
/// The data writes of an append, which a slow disk slows down.
const DATA_WRITES: &[&str] = &[
    fp::SEGMENT_WRITE,
    fp::OFFSET_INDEX_WRITE,
    fp::TIME_INDEX_WRITE,
];
/// Every write step: a full disk fails them all.
const ALL_WRITES: &[&str] = &[
    fp::SEGMENT_WRITE,
    fp::OFFSET_INDEX_WRITE,
    fp::TIME_INDEX_WRITE,
    fp::SEGMENT_CREATE,
    fp::CHECKPOINT_WRITE,
    fp::PRODUCER_SNAPSHOT_WRITE,
    fp::HW_CHECKPOINT_WRITE,
];
const FSYNCS: &[&str] = &[fp::SEGMENT_FSYNC, fp::INDEX_FSYNC, fp::DIR_FSYNC];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    WriteError,
    FsyncError,
    DiskFull,
    SlowWrites,
    SlowFsync,
}

const KINDS: &[Kind] = &[
    Kind::WriteError,
    Kind::FsyncError,
    Kind::DiskFull,
    Kind::SlowWrites,
    Kind::SlowFsync,
];

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::WriteError => "EIO on a write",
            Kind::FsyncError => "EIO on an fsync",
            Kind::DiskFull => "a full disk",
            Kind::SlowWrites => "slow writes",
            Kind::SlowFsync => "slow fsyncs",
        }
    }

    fn needs_fsyncs(self) -> bool {
        matches!(self, Kind::FsyncError | Kind::SlowFsync)
    }
}

/// One seeded fault.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    kind: Kind,
    /// The failpoints to set, with their actions.
    failpoints: Vec<(&'static str, String)>,
    /// How long a full or slow disk lasts; `None` for an error that takes the dir offline,
    /// which lasts until the node is restarted.
    lasts: Option<Duration>,
}

impl Plan {
    fn draw(rng: &mut StdRng) -> Self {
        let kind = *KINDS.choose(rng).expect("kinds are listed");
        let every = |names: &[&'static str], action: &str| {
            names.iter().map(|&n| (n, action.to_owned())).collect()
        };
        let one = |names: &[&'static str], rng: &mut StdRng| {
            vec![(
                *names.choose(rng).expect("listed"),
                "return(eio)".to_owned(),
            )]
        };
        let (failpoints, lasts) = match kind {
            Kind::WriteError => (one(BUSY_WRITES, rng), None),
            Kind::FsyncError => (one(FSYNCS, rng), None),
            Kind::DiskFull => (every(ALL_WRITES, "return(enospc)"), Some(())),
            Kind::SlowWrites => {
                let ms = rng.random_range(SLOW_WRITE_MS);
                (every(DATA_WRITES, &format!("sleep({ms})")), Some(()))
            }
            Kind::SlowFsync => {
                let ms = rng.random_range(SLOW_FSYNC_MS);
                (every(FSYNCS, &format!("sleep({ms})")), Some(()))
            }
        };
        let lasts = lasts.map(|()| Duration::from_millis(rng.random_range(TRANSIENT_MS)));
        Plan {
            kind,
            failpoints,
            lasts,
        }
    }
}

/// Refuses a run whose nodes lack `/debug/failpoints` (a release `runnel`, not
/// `runnel-faulty`). `nodes` are (node id, HTTP address).
pub(in crate::chaos) async fn require_failpoints(
    nodes: Vec<(u16, SocketAddr)>,
) -> anyhow::Result<()> {
    for (id, http) in nodes {
        let answer = failpoint_request(http, PROBE_FAILPOINT, None).await;
        if let Err(e) = answer {
            bail!(
                "--schedule disk-fault injects disk errors through failpoints, which only the \
                 runnel-faulty binary has, and node {id} does not serve them ({e:#}). Build it \
                 with `make build-faulty` and run `target/release/runnel-faulty chaos --schedule \
                 disk-fault ...`"
            );
        }
    }
    Ok(())
}

/// `PUT /debug/failpoints/<name>` with `action`, or `DELETE` without one; fails unless the
/// node answers 200.
async fn failpoint_request(
    http: SocketAddr,
    name: &str,
    action: Option<&str>,
) -> anyhow::Result<()> {
    let target = url(&http.to_string(), &format!("/debug/failpoints/{name}"));
    let action = action.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let agent = http_agent(FAILPOINT_REQUEST_TIMEOUT);
        let (method, response) = match &action {
            Some(a) => ("PUT", agent.put(&target).send(a.as_str())),
            None => ("DELETE", agent.delete(&target).call()),
        };
        let response = response.with_context(|| format!("{method} {target}"))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.into_body().read_to_string().unwrap_or_default();
            let body = body.trim();
            let sep = if body.is_empty() { "" } else { ": " };
            bail!("{method} {target} answered {status}{sep}{body}");
        }
        Ok(())
    })
    .await
    .context("the failpoint request task failed")?
}

/// The first line of `log` past byte `from` that says the data dir went offline.
async fn offline_line(log: &Path, from: u64) -> Option<String> {
    let bytes = tokio::fs::read(log).await.ok()?;
    let tail = bytes.get(usize::try_from(from).ok()?..)?;
    String::from_utf8_lossy(tail)
        .lines()
        .find(|l| l.contains(OFFLINE_LINE))
        .map(str::to_owned)
}

impl Injector {
    pub(super) async fn disk_fault(&mut self, at: Duration) {
        self.sleep_until(at).await;
        let plan = Plan::draw(&mut self.rng);
        let (victim, why) = self.leader_or_follower_of_partition_0().await;
        let (http, node_log) = {
            let c = self.cluster.lock().await;
            let http = c
                .ids()
                .iter()
                .zip(c.https())
                .find_map(|(&id, http)| (id == victim).then_some(http));
            let log = c.data_dir_of(victim).map(|d| d.with_extension("log"));
            (http, log)
        };
        let (Some(http), Some(node_log)) = (http, node_log) else {
            self.note(format!(
                "disk fault on node {victim} failed: no HTTP port or data dir"
            ));
            return;
        };
        if plan.kind.needs_fsyncs() && !self.durable {
            self.note(format!(
                "{} on node {victim}: topic {} does not set flush.messages=1, so its logs fsync \
                 only at a segment roll or a shutdown and the fault may never fire",
                plan.kind.describe(),
                self.topic
            ));
        }
        let log_from = tokio::fs::metadata(&node_log).await.map_or(0, |m| m.len());
        let since = Instant::now();
        for (name, action) in &plan.failpoints {
            let result = failpoint_request(http, name, Some(action)).await;
            match result {
                Ok(()) => self.note(format!(
                    "failpoint {name}={action} on node {victim}{why} ({})",
                    plan.kind.describe()
                )),
                Err(e) => self.note(format!(
                    "setting failpoint {name}={action} on node {victim} failed: {e:#}"
                )),
            }
        }
        match plan.lasts {
            None => {
                let line = self.wait_offline(&node_log, log_from, FIRE_TIMEOUT).await;
                match line {
                    Some(line) => {
                        self.note(format!(
                            "node {victim} took its data dir offline after {:.1} s: {}",
                            since.elapsed().as_secs_f64(),
                            shorten(&line)
                        ));
                        self.wait_fenced(victim).await;
                        self.remove_failpoints(victim, http, &plan).await;
                        self.restart_after_disk_repair(victim).await;
                    }
                    None => {
                        let hint = if plan.kind.needs_fsyncs() && !self.durable {
                            " (no fsync happened)"
                        } else {
                            ""
                        };
                        self.note(format!(
                            "the fault never fired on node {victim} within {} s{hint}",
                            FIRE_TIMEOUT.as_secs()
                        ));
                        self.remove_failpoints(victim, http, &plan).await;
                    }
                }
            }
            Some(lasts) => {
                tokio::time::sleep(lasts).await;
                self.remove_failpoints(victim, http, &plan).await;
                // A full or slow disk must not take the dir offline; if it did, say so and
                // restart the node so the run still ends with every replica serving.
                if let Some(line) = offline_line(&node_log, log_from).await {
                    self.note(format!(
                        "node {victim} unexpectedly took its data dir offline during {}: {}",
                        plan.kind.describe(),
                        shorten(&line)
                    ));
                    self.restart_after_disk_repair(victim).await;
                }
            }
        }
        self.wait_in_sync(victim, since).await;
    }

    /// Partition 0's leader or, as the seed decides, one of its followers.
    async fn leader_or_follower_of_partition_0(&mut self) -> (u16, &'static str) {
        let follower = self.rng.random_bool(0.5);
        let partition_0 = self
            .partitions()
            .await
            .and_then(|p| p.into_iter().find(|p| p.partition == 0));
        let Some(p) = partition_0 else {
            return (self.random_node().await, " (partition 0 unknown; random)");
        };
        let followers: Vec<u16> = p
            .replicas
            .iter()
            .filter(|&&r| r != p.leader)
            .filter_map(|&r| u16::try_from(r).ok())
            .collect();
        match (follower, u16::try_from(p.leader)) {
            (false, Ok(leader)) => (leader, " (leader of partition 0)"),
            _ => match followers.choose(&mut self.rng) {
                Some(&id) => (id, " (follower of partition 0)"),
                None => (
                    self.random_node().await,
                    " (partition 0 has no follower; random)",
                ),
            },
        }
    }

    /// Waits (at most `timeout`) until node's log says its data dir went offline.
    async fn wait_offline(&self, log: &Path, from: u64, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = offline_line(log, from).await {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until the other nodes see node `id` fenced, and the metadata has it
    /// leading no partition and in no ISR.
    async fn wait_fenced(&mut self, id: u16) {
        let started = Instant::now();
        let deadline = started + FENCE_TIMEOUT;
        let me = i32::from(id);
        loop {
            let fenced = self.fenced_as_others_see(id).await;
            let holding: Option<Vec<i32>> = self.partitions().await.map(|ps| {
                ps.iter()
                    .filter(|p| p.leader == me || p.isr.contains(&me))
                    .map(|p| p.partition)
                    .collect()
            });
            if fenced == Some(true) && holding.as_ref().is_some_and(Vec::is_empty) {
                self.note(format!(
                    "node {id} fenced, leading nothing and in no ISR after {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                return;
            }
            if Instant::now() >= deadline {
                self.note(format!(
                    "node {id} not fenced and out of the ISRs within {} s: fenced {fenced:?}, \
                     leader or in the ISR of partitions {:?}",
                    FENCE_TIMEOUT.as_secs(),
                    holding.unwrap_or_default()
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the first other node that answers sees broker `id` fenced.
    async fn fenced_as_others_see(&self, id: u16) -> Option<bool> {
        let others: Vec<SocketAddr> = {
            let c = self.cluster.lock().await;
            c.ids()
                .into_iter()
                .zip(c.https())
                .filter(|&(other, _)| other != id)
                .map(|(_, http)| http)
                .collect()
        };
        for http in others {
            if let Some(view) = probe::cluster_view(http).await {
                return view
                    .brokers
                    .iter()
                    .find(|b| b.id == i32::from(id))
                    .map(|b| b.fenced);
            }
        }
        None
    }

    async fn remove_failpoints(&mut self, id: u16, http: SocketAddr, plan: &Plan) {
        for (name, _) in &plan.failpoints {
            match failpoint_request(http, name, None).await {
                Ok(()) => self.note(format!("removed failpoint {name} on node {id}")),
                Err(e) => self.note(format!(
                    "removing failpoint {name} on node {id} failed: {e:#}"
                )),
            }
        }
    }

    /// Restarts node `id` gracefully, as an operator does once the disk is repaired, and waits
    /// until it is healthy.
    async fn restart_after_disk_repair(&mut self, id: u16) {
        let result = self.cluster.lock().await.restart_gracefully(id).await;
        match result {
            Ok(steps) => {
                for (i, step) in steps.into_iter().enumerate() {
                    let why = if i == 0 { " (disk repaired)" } else { "" };
                    self.note(format!("{step} node {id}{why}"));
                }
                self.wait_healthy(id).await;
            }
            Err(e) => self.note(format!("restart node {id} failed: {e:#}")),
        }
    }
}

/// A node's log line, cut to a length that fits the fault log.
fn shorten(line: &str) -> String {
    const MAX: usize = 300;
    match line.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn a_seed_draws_the_same_fault_and_every_kind_is_drawn() {
        let draw = |seed| Plan::draw(&mut StdRng::seed_from_u64(seed));
        assert_eq!(draw(7), draw(7));
        let plans: Vec<Plan> = (0..200).map(draw).collect();
        for kind in KINDS {
            assert!(
                plans.iter().any(|p| p.kind == *kind),
                "{kind:?} never drawn"
            );
        }
        for p in &plans {
            assert!(!p.failpoints.is_empty());
            assert!(
                p.failpoints.iter().all(|(n, _)| fp::ALL.contains(n)),
                "{p:?}"
            );
            let offline = matches!(p.kind, Kind::WriteError | Kind::FsyncError);
            assert_eq!(p.lasts.is_none(), offline, "{p:?}");
            if let Some(d) = p.lasts {
                assert!(TRANSIENT_MS.contains(&(d.as_millis() as u64)), "{p:?}");
            }
            let actions_ok = p.failpoints.iter().all(|(_, a)| match p.kind {
                Kind::WriteError | Kind::FsyncError => a == "return(eio)",
                Kind::DiskFull => a == "return(enospc)",
                Kind::SlowWrites | Kind::SlowFsync => a.starts_with("sleep("),
            });
            assert!(actions_ok, "{p:?}");
        }
    }

    #[test]
    fn the_offline_line_is_found_only_past_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node-1.log");
        let before = format!("old: {OFFLINE_LINE}\n");
        std::fs::write(&log, format!("{before}x\nERROR {OFFLINE_LINE} dir=/d\n")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let found = rt.block_on(offline_line(&log, before.len() as u64));
        assert_eq!(
            found.as_deref(),
            Some(&*format!("ERROR {OFFLINE_LINE} dir=/d"))
        );
        let past_end = rt.block_on(offline_line(&log, 10_000));
        assert_eq!(past_end, None);
    }
}
