//! `runnel chaos`: starts a local cluster (or takes a running docker-compose one), produces
//! to it with idempotent acks=all producers while a named fault schedule kills, pauses,
//! restarts and cuts off nodes, then reads everything back and reports whether every
//! acknowledged record survived, once and in order.

mod checker;
mod compacted;
mod consumer;
mod disk;
mod extras;
mod faults;
mod observer;
mod pipeline;
mod probe;
mod report;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinSet;

use self::faults::{FaultLog, Injector, InjectorSettings, Schedule};
use self::report::{PartitionRow, Report};
use self::workload::{Counters, ProducerLog, Stream};
use crate::cluster_target::{Target, TargetArgs, TargetKind, RESTORE_TIMEOUT};
use crate::compose_cluster::ComposeCluster;
use crate::local_cluster::{behind_link_proxy, plan, LocalCluster, NodeLogs};
use crate::outln;

/// The topic of a local run (its cluster is new); compose runs add the seed and the time,
/// since their cluster outlives them.
const TOPIC: &str = "chaos";
/// The liveness settings of the nodes: short, so faults are noticed within a run.
const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// Followers silent this long leave the ISR: a paused or killed broker is dropped by its
/// leaders' ISR expiration as well as by the controller's fencing. Shorter than the session
/// timeout, so pause-follower can pause a follower past one and short of the other.
const REPLICA_LAG_TIME_MAX: Duration = Duration::from_secs(2);
/// Bounds on starting the cluster and on it settling after the run.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the log cleaner looks for work: often, so the compacted topic is compacted
/// within a run.
const CLEANER_BACKOFF: Duration = Duration::from_secs(1);
/// How long producing goes on past the schedule and the duration while nothing succeeds.
const RECOVERY_PATIENCE: Duration = Duration::from_secs(15);

#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// The fault schedule to apply.
    #[arg(long, value_enum)]
    schedule: Schedule,
    /// Seed of the random choices (which node, how long); default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// How long to produce, in seconds (longer if the schedule needs it to finish, and then
    /// until a produce succeeds after the last fault, for up to 15 s more).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=64))]
    partitions: i32,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i16).range(1..=9))]
    replication_factor: i16,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=9))]
    min_insync_replicas: u16,
    /// A config of the chaos topic, KEY=VALUE (repeatable), e.g. flush.messages=1 so that
    /// lose-unflushed-quorum must lose nothing.
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    topic_configs: Vec<(String, String)>,
    /// How many nodes to run (1 to 9); every node is a controller and a broker.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Where the nodes keep their data and logs (node-i/, node-i.log); must be empty or
    /// absent. Default: a new directory under the system's temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node 1's Kafka port; ports are laid out as for `runnel dev`. Schedules that cut links
    /// put a proxy on each node's RPC port (Kafka port + 1), through which the other nodes
    /// reach it, and the node itself on its Kafka port + 2.
    #[arg(long, default_value_t = 19092, value_name = "PORT")]
    base_port: u16,
    /// Produce without idempotence (no producer id or sequence numbers): retries may then
    /// write records twice, which the report counts apart from real duplicates.
    #[arg(long)]
    no_idempotence: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Keep the data directory after a passing run (a failing run always keeps it).
    #[arg(long)]
    keep_data: bool,
    #[command(flatten)]
    on: TargetArgs,
}

/// What a run works on, whichever the target.
struct Setup {
    seed: u64,
    topic: String,
    nodes: u16,
    session_timeout: Duration,
    lag_time_max: Duration,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

impl ChaosArgs {
    /// Whether the topic fsyncs every append.
    fn durable(&self) -> bool {
        self.topic_configs
            .iter()
            .any(|(k, v)| k == "flush.messages" && v.trim() == "1")
    }
}

/// Runs the schedule; `runnel_bin` is the binary a local cluster's nodes run.
pub async fn run(args: ChaosArgs, runnel_bin: PathBuf) -> anyhow::Result<()> {
    if let Some(why) = args.schedule.unsupported_on(args.on.target) {
        bail!("--schedule {}: {why}", args.schedule.name());
    }
    let seed = args.seed.unwrap_or_else(clock_seed);
    match args.on.target {
        TargetKind::Local => run_local(args, seed, runnel_bin).await,
        TargetKind::Compose => run_compose(args, seed).await,
    }
}

async fn run_local(args: ChaosArgs, seed: u64, runnel_bin: PathBuf) -> anyhow::Result<()> {
    if i32::from(args.replication_factor) > i32::from(args.nodes) {
        bail!(
            "--replication-factor {} needs at least that many --nodes (got {})",
            args.replication_factor,
            args.nodes
        );
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("runnel-chaos-{}", std::process::id())),
    };
    if std::fs::read_dir(&data_dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "--data-dir {} is not empty; chaos starts from a fresh cluster",
            data_dir.display()
        );
    }
    let configs = vec![
        format!("broker.session.timeout.ms={}", SESSION_TIMEOUT.as_millis()),
        format!(
            "broker.heartbeat.interval.ms={}",
            HEARTBEAT_INTERVAL.as_millis()
        ),
        format!(
            "replica.lag.time.max.ms={}",
            REPLICA_LAG_TIME_MAX.as_millis()
        ),
        format!("log.cleaner.backoff.ms={}", CLEANER_BACKOFF.as_millis()),
    ];
    let mut plan = plan(args.nodes, args.base_port, &data_dir)?;
    if args.schedule.cuts_links() {
        plan = behind_link_proxy(plan);
    }
    let mut cluster =
        LocalCluster::new("runnel chaos", runnel_bin, plan, configs, NodeLogs::Files)?;
    if args.schedule.cuts_links() {
        cluster.start_link_proxy()?;
    }
    eprintln!(
        "runnel chaos: target local, schedule {}, seed {seed}, {} node(s), data and node logs under {}",
        args.schedule.name(),
        args.nodes,
        data_dir.display()
    );
    let setup = Setup {
        seed,
        topic: TOPIC.to_owned(),
        nodes: args.nodes,
        session_timeout: SESSION_TIMEOUT,
        lag_time_max: REPLICA_LAG_TIME_MAX,
    };
    let report = drive(&args, &setup, Target::Local(cluster)).await?;
    if !report.passed {
        bail!(
            "chaos run failed its checks; data and node logs kept in {}",
            data_dir.display()
        );
    }
    if args.keep_data {
        eprintln!("runnel chaos: data kept in {}", data_dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&data_dir) {
        eprintln!("runnel chaos: cannot remove {}: {e}", data_dir.display());
    }
    Ok(())
}

async fn run_compose(args: ChaosArgs, seed: u64) -> anyhow::Result<()> {
    let cluster = ComposeCluster::discover(&args.on.compose_project).await?;
    let nodes = u16::try_from(cluster.ids().len()).unwrap_or(u16::MAX);
    if i32::from(args.replication_factor) > i32::from(nodes) {
        bail!(
            "--replication-factor {} needs at least that many nodes; compose project '{}' has {nodes}",
            args.replication_factor,
            args.on.compose_project
        );
    }
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let setup = Setup {
        seed,
        // The cluster outlives the run: every run writes a topic of its own.
        topic: format!("{TOPIC}-{seed}-{unix_ms}"),
        nodes,
        session_timeout: Duration::from_millis(args.on.session_timeout_ms),
        // Unknown for a compose cluster: pause-follower then pauses past the session timeout.
        lag_time_max: Duration::from_millis(args.on.session_timeout_ms),
    };
    eprintln!(
        "runnel chaos: target compose (project {}), schedule {}, seed {seed}, {nodes} node(s), topic {}",
        cluster.project(),
        args.schedule.name(),
        setup.topic
    );
    let report = drive(&args, &setup, Target::Compose(cluster)).await?;
    if !report.passed {
        bail!(
            "chaos run failed its checks; the records are in topic {} of compose project '{}'",
            setup.topic,
            args.on.compose_project
        );
    }
    Ok(())
}

/// Runs the workload and the schedule against `target`, leaves the target as the run found
/// it (local nodes killed, containers running and connected) on every path, and prints the
/// report.
async fn drive(args: &ChaosArgs, setup: &Setup, target: Target) -> anyhow::Result<Report> {
    let cluster = Arc::new(Mutex::new(target));
    // Ctrl-C drops the run (and with it the producers); the teardown below cleans up.
    let outcome = tokio::select! {
        r = execute(args, setup, &cluster) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let finished = tokio::time::timeout(RESTORE_TIMEOUT, async {
        cluster.lock().await.finish().await;
    })
    .await;
    if finished.is_err() {
        eprintln!("runnel chaos: cleaning up took over {RESTORE_TIMEOUT:?}; check the nodes");
    }

    let report = outcome?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        crate::cli::emit(&report::render(&report));
    }
    Ok(report)
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Starts the cluster, runs the workload under the schedule, lets the cluster settle, reads
/// everything back and judges it.
async fn execute(
    args: &ChaosArgs,
    setup: &Setup,
    cluster: &Arc<Mutex<Target>>,
) -> anyhow::Result<Report> {
    let topic = setup.topic.as_str();
    let (bootstrap, ids) = {
        let mut c = cluster.lock().await;
        c.start_all().await?;
        (c.bootstrap(), c.ids())
    };
    wait_settled(cluster, START_TIMEOUT)
        .await
        .with_context(|| format!("the cluster did not start within {START_TIMEOUT:?}"))?;
    if args.schedule == Schedule::DiskFault {
        let nodes = {
            let c = cluster.lock().await;
            c.ids().into_iter().zip(c.https()).collect()
        };
        faults::disk_fault::require_failpoints(nodes).await?;
    }
    let mut admin = workload::connect(&bootstrap).await?;
    let mut topic_configs = vec![(
        "min.insync.replicas".to_owned(),
        args.min_insync_replicas.to_string(),
    )];
    topic_configs.extend(args.topic_configs.iter().cloned());
    admin
        .create_topics(
            topic,
            args.partitions,
            args.replication_factor,
            &topic_configs,
        )
        .await
        .context("cannot create the chaos topic")?;
    extras::create_topics(&mut admin, topic, args.replication_factor, &topic_configs).await?;
    // A broker may answer before it has applied the new topic (a node just restarted by an
    // earlier run lags behind): ask again until every partition has a leader.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match admin.topic_metadata(topic).await {
            Ok(t) if t.partitions.iter().all(|p| p.leader >= 0) => break,
            Ok(_) => {}
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("topic {topic} did not become ready"));
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            bail!("topic {topic} has partitions without a leader after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let duration = Duration::from_secs(args.duration);
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut producers = JoinSet::new();
    for partition in 0..args.partitions {
        let log = workload::produce_partition(
            bootstrap.clone(),
            Stream {
                topic: topic.to_owned(),
                partition,
                record: |partition, seq| {
                    runnel_client::ProducerRecord::value(workload::record_value(partition, seq))
                },
            },
            !args.no_idempotence,
            started,
            stop_rx.clone(),
            Arc::clone(&counters),
        );
        producers.spawn(async move { (partition, log.await) });
    }
    let side = extras::start(&bootstrap, topic, args.partitions, started, &stop_rx);
    let injector = Injector::new(
        Arc::clone(cluster),
        started,
        bootstrap.clone(),
        topic.to_owned(),
        InjectorSettings {
            seed: setup.seed,
            session_timeout: setup.session_timeout,
            lag_time_max: setup.lag_time_max,
            durable: args.durable(),
        },
        Arc::clone(&counters),
    );
    // Production lasts the duration and at least until the schedule has restored every node,
    // then until a produce succeeds after the last fault (bounded), so recovery is measured.
    let faults_then_stop = async {
        let (faults, ()) = tokio::join!(
            injector.run(args.schedule, duration),
            tokio::time::sleep(duration)
        );
        counters.wait_for_an_ack(RECOVERY_PATIENCE).await;
        let _ = stop_tx.send(true);
        faults
    };
    let (faults, ()) = tokio::join!(
        faults_then_stop,
        show_progress(cluster, &counters, started, stop_rx.clone(), ids.len())
    );
    let produced_for = started.elapsed().as_secs_f64();

    let mut logs: Vec<(i32, ProducerLog)> = Vec::new();
    let drain = async {
        while let Some(joined) = producers.join_next().await {
            logs.push(joined.context("a producer task failed")?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(crate::bounded_client::ATTEMPT_TIMEOUT * 3, drain)
        .await
        .map_err(|_| anyhow!("the producers did not stop in time"))??;
    logs.sort_by_key(|(p, _)| *p);
    let side_logs = side
        .join(crate::bounded_client::ATTEMPT_TIMEOUT * 3)
        .await?;

    let settle_started = Instant::now();
    cluster.lock().await.restart_exited().await;
    let settled_after = wait_settled(cluster, SETTLE_TIMEOUT)
        .await
        .ok()
        .map(|()| settle_started.elapsed().as_secs_f64());
    let ack_times: Vec<f64> = logs.iter().flat_map(|(_, log)| log.ack_times()).collect();
    let (mut rows, reads) =
        read_back(&bootstrap, topic, logs, produced_for, &faults.quorum_loss).await;
    let side = extras::judge(side_logs, &bootstrap, topic, &reads).await;
    let data_dirs: Vec<(u16, PathBuf)> = {
        let c = cluster.lock().await;
        ids.iter()
            .filter_map(|&id| c.data_dir_of(id).map(|d| (id, d)))
            .collect()
    };
    compare_replicas(&bootstrap, topic, &data_dirs, &mut rows).await;
    Ok(Report::judge(
        args,
        setup,
        rows,
        side,
        &ack_times,
        faults,
        Durations {
            produced_for,
            settled_after,
        },
    ))
}

/// How long the run produced, and how long the cluster took to settle after it (`None`:
/// not within the limit), in seconds.
struct Durations {
    produced_for: f64,
    settled_after: Option<f64>,
}

/// Prints the progress line once a second until `stop` turns true.
async fn show_progress(
    cluster: &Mutex<Target>,
    counters: &Counters,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    nodes: usize,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let up = {
            let mut c = cluster.lock().await;
            let mut up = 0;
            for id in c.ids() {
                up += usize::from(c.is_running(id).await);
            }
            up
        };
        eprintln!(
            "{}",
            report::progress(
                started.elapsed().as_secs_f64(),
                counters.acked.load(Ordering::Relaxed),
                counters.errors.load(Ordering::Relaxed),
                up,
                nodes
            )
        );
    }
}

/// Waits until every node answers /health and one of them sees every broker unfenced, a
/// controller, and a leader for every partition.
async fn wait_settled(cluster: &Mutex<Target>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (ids, https) = {
            let c = cluster.lock().await;
            (c.ids(), c.https())
        };
        let unhealthy = cluster.lock().await.unhealthy(&ids).await;
        if unhealthy.is_empty() {
            for http in https {
                if probe::cluster_view(http)
                    .await
                    .is_some_and(|v| probe::is_settled(&v, ids.len()))
                {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("nodes not healthy: {unhealthy:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Compares every replica's log files below the high watermark (local nodes only: their
/// data dirs are at hand) and notes, per partition, where they differ.
async fn compare_replicas(
    bootstrap: &str,
    topic: &str,
    data_dirs: &[(u16, PathBuf)],
    rows: &mut [PartitionRow],
) {
    if data_dirs.is_empty() {
        return;
    }
    let mut client = workload::connect(bootstrap).await.ok();
    for row in rows.iter_mut() {
        let partition = row.partition;
        let hw = match client.as_mut() {
            Some(c) => tokio::time::timeout(
                crate::bounded_client::REQUEST_TIMEOUT,
                c.list_offsets(topic, partition, runnel_client::offset_spec::LATEST),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        let Some(hw) = hw else {
            row.replica_divergence
                .push("cannot compare the replicas: the high watermark is unknown".to_owned());
            continue;
        };
        row.high_watermark = Some(hw);
        let mut replicas = Vec::new();
        for (id, dir) in data_dirs {
            match disk::batches_below(&dir.join(format!("{topic}-{partition}")), hw) {
                Ok(batches) if !batches.is_empty() => replicas.push((*id, batches)),
                Ok(_) => {}
                Err(e) => row
                    .replica_divergence
                    .push(format!("cannot read node {id}'s replica: {e:#}")),
            }
        }
        row.replicas_compared = replicas.len();
        row.replica_divergence
            .extend(checker::replica_divergence(&replicas));
    }
}

/// Reads every partition back and judges it against what its producer saw; `quorum_loss` are
/// the stretches in which a majority of the nodes was down. Also returns what was read of
/// each partition that could be read: (offset, sequence number).
async fn read_back(
    bootstrap: &str,
    topic: &str,
    logs: Vec<(i32, ProducerLog)>,
    produced_for: f64,
    quorum_loss: &[(f64, f64)],
) -> (Vec<PartitionRow>, HashMap<i32, Vec<(i64, u64)>>) {
    let mut client = workload::connect(bootstrap).await;
    let mut rows = Vec::with_capacity(logs.len());
    let mut reads = HashMap::new();
    for (partition, log) in logs {
        let read = match client.as_mut() {
            Ok(c) => workload::read_partition(c, topic, partition)
                .await
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        };
        let (read, read_error) = match read {
            Ok(records) => {
                let seqs = records.iter().map(|&(_, seq)| seq).collect();
                reads.insert(partition, records);
                (seqs, None)
            }
            Err(e) => (Vec::new(), Some(e)),
        };
        let (errors, abandoned, last_error) = (log.errors, log.abandoned, log.last_error.clone());
        let longest_unavailable_s = checker::longest_gap(&log.ack_times(), 0.0, produced_for);
        let lost_acked_during_quorum_loss =
            checker::lost_acked_within(&log.acks, &read, quorum_loss);
        let verdict = checker::check_partition(&log.into_history(read));
        rows.push(PartitionRow {
            partition,
            verdict,
            produce_errors: errors,
            abandoned_batches: abandoned,
            last_produce_error: last_error,
            read_error,
            longest_unavailable_s,
            lost_acked_during_quorum_loss,
            high_watermark: None,
            replicas_compared: 0,
            replica_divergence: Vec::new(),
        });
    }
    (rows, reads)
}

impl Report {
    fn judge(
        args: &ChaosArgs,
        setup: &Setup,
        per_partition: Vec<PartitionRow>,
        side: extras::Verdicts,
        ack_times: &[f64],
        faults: FaultLog,
        Durations {
            produced_for,
            settled_after,
        }: Durations,
    ) -> Self {
        let totals = report::totals(&per_partition);
        let acks_during_quorum_loss = checker::acks_within(ack_times, &faults.quorum_loss);
        // The first of the stretches with one node back after a quorum loss (kill-two has one).
        let recovered_with_one_node_back_s = faults
            .one_back
            .first()
            .and_then(|&w| checker::first_ack_within(ack_times, w));
        let isolated_leader_acked = faults.isolation_probe.as_ref().map_or(0, |p| p.acked);
        // Losses a power loss of a majority may cause without fsync are reported, not failed.
        let violated = |v: &checker::PartitionVerdict| {
            if faults.loss_allowed.is_some() {
                v.duplicated > 0 || v.reordered > 0
            } else {
                v.violated()
            }
        };
        let diverged = per_partition
            .iter()
            .any(|r| !r.replica_divergence.is_empty());
        let passed = !per_partition.iter().any(|r| violated(&r.verdict))
            && !diverged
            && acks_during_quorum_loss == 0
            && isolated_leader_acked == 0
            && !side.violated(
                faults.loss_allowed.is_some(),
                args.schedule == Schedule::LoseUnflushedQuorum,
            );
        Report {
            target: args.on.target,
            topic: setup.topic.clone(),
            schedule: args.schedule,
            seed: setup.seed,
            nodes: setup.nodes,
            partitions: args.partitions,
            replication_factor: args.replication_factor,
            min_insync_replicas: args.min_insync_replicas,
            idempotent: !args.no_idempotence,
            note: if args.no_idempotence {
                report::NO_IDEMPOTENCE
            } else {
                report::IDEMPOTENCE
            },
            produced_for_s: produced_for,
            produce_errors: per_partition.iter().map(|r| r.produce_errors).sum(),
            totals,
            longest_unavailable_s: checker::longest_gap(ack_times, 0.0, produced_for),
            time_to_recover_s: faults
                .events
                .last()
                .and_then(|e| checker::time_to_recover(ack_times, e.at)),
            acks_during_quorum_loss,
            lost_acked_during_quorum_loss: per_partition
                .iter()
                .map(|r| r.lost_acked_during_quorum_loss)
                .sum(),
            quorum_loss: faults.quorum_loss.clone(),
            isolated_leader: faults.isolation_probe.clone(),
            recovered_with_one_node_back_s,
            settled_after_s: settled_after,
            loss_allowed: faults.loss_allowed.clone(),
            topic_configs: args
                .topic_configs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            faults: faults.events,
            per_partition,
            side,
            passed,
        }
    }
}
