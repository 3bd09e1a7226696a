//! `runnel experiment replication`: on a fresh local 3-node cluster (or the running
//! docker-compose cluster), for each replication factor and acks setting, measures a steady
//! producer load (throughput, per-request latency) and then the same load with the partition
//! leader killed (SIGKILL, docker kill) and started again mid-run, counting the acknowledged
//! records a read from the start of the partition no longer finds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

use super::load::{self, Acks, LoadLog, LoadSpec};
use super::report::{self, Clean, Fault, Report, Row, Settings};
use super::stats;
use crate::cluster_target::{Target, TargetArgs, TargetKind, RESTORE_TIMEOUT};
use crate::compose_cluster::ComposeCluster;
use crate::local_cluster::{plan, LocalCluster, NodeLogs};
use crate::outln;

const NODES: u16 = 3;
const PARTITIONS: i32 = 1;
/// Short liveness settings, so the killed leader is fenced and replaced within a run.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// Bounds on the cluster starting, a topic getting its leader, the cluster recovering after a
/// fault, and reading a partition back.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const RECOVER_TIMEOUT: Duration = Duration::from_secs(60);
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Where in a fault run the leader is killed and restarted, as fractions of --duration; the
/// restart waits at least a session timeout and a second more, so the controller notices the
/// death, and the load goes on for at least a second after the restart.
const KILL_AT: f64 = 0.25;
const RESTART_AT: f64 = 0.65;
/// Where ports are looked for when --base-port is not given: below Linux's ephemeral range
/// (32768 and up), so outgoing connections do not take them between our check and the bind.
const PORT_RANGE: std::ops::Range<u16> = 11_000..31_000;
const PORT_TRIES: usize = 20;

#[derive(clap::Args, Debug)]
pub struct ReplicationArgs {
    /// Replication factors to measure, comma-separated (1 to 3).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3",
          value_parser = clap::value_parser!(i16).range(1..=3))]
    rf: Vec<i16>,
    /// Acks settings to measure, comma-separated: 0, 1, all (or -1).
    #[arg(long, value_delimiter = ',', default_value = "0,1,all", value_enum)]
    acks: Vec<Acks>,
    /// Seconds each load runs; a fault run goes on until at least a second after the restart.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    /// At most this many records per load; a safety bound on disk use, since each cell's
    /// topics are deleted once it is done.
    #[arg(long, default_value_t = 3_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_records: u64,
    /// Bytes per record value (at least 20: each value carries its sequence number).
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(load::MIN_RECORD_SIZE as u64..=1_000_000))]
    record_size: u64,
    /// Records per produce request.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// Produce requests in flight at once, each on its own connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    in_flight: u16,
    /// Only the steady runs: no leader is killed.
    #[arg(long)]
    no_fault: bool,
    /// Node 1's Kafka port, laid out as for `runnel dev` (node i: BASE + 100*(i-1), RPC +1,
    /// HTTP +552). Default: a free block of ports.
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// Where replication.md and replication.csv are written.
    #[arg(long, default_value = "target/experiments")]
    out_dir: PathBuf,
    /// Print the results as one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the nodes' data and logs after a successful run (a failed run always keeps them).
    #[arg(long)]
    keep_data: bool,
    #[command(flatten)]
    on: TargetArgs,
}

/// One cell of the matrix.
#[derive(Debug, Clone, Copy)]
struct Cell {
    rf: i16,
    acks: Acks,
    min_insync: i16,
}

impl Cell {
    fn new(rf: i16, acks: Acks) -> Self {
        Self {
            rf,
            acks,
            min_insync: rf.min(2),
        }
    }

    fn name(self) -> String {
        format!("RF={} acks={}", self.rf, self.acks.label())
    }

    /// The topic of one run of this cell; `tag` tells runs on a long-lived cluster apart.
    fn topic(self, run: &str, tag: &str) -> String {
        format!("exp-rf{}-acks{}-{run}{tag}", self.rf, self.acks.label())
    }
}

/// The matrix in a stable order, each cell once.
fn cells(rfs: &[i16], acks: &[Acks]) -> Vec<Cell> {
    let mut rfs = rfs.to_vec();
    rfs.sort_unstable();
    rfs.dedup();
    let mut acks = acks.to_vec();
    acks.sort_unstable();
    acks.dedup();
    rfs.iter()
        .flat_map(|&rf| acks.iter().map(move |&a| Cell::new(rf, a)))
        .collect()
}

/// When a fault run kills the leader, restarts it, and stops its load, from the load's start.
fn fault_schedule(duration: Duration, session_timeout: Duration) -> (Duration, Duration, Duration) {
    let kill = duration.mul_f64(KILL_AT);
    let restart = duration
        .mul_f64(RESTART_AT)
        .max(kill + session_timeout + Duration::from_secs(1));
    let end = duration.max(restart + Duration::from_secs(1));
    (kill, restart, end)
}

/// The cluster of a run and what depends on it.
struct Bench {
    cluster: Target,
    session_timeout: Duration,
    /// Appended to topic names: empty on a fresh local cluster, unique on a compose cluster
    /// that outlives the run.
    tag: String,
    /// Where the local nodes keep data and logs.
    data_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: ReplicationArgs, runnel_bin: PathBuf) -> anyhow::Result<()> {
    let cells = cells(&args.rf, &args.acks);
    let mut bench = match args.on.target {
        TargetKind::Local => {
            let data_dir =
                std::env::temp_dir().join(format!("runnel-experiment-{}", std::process::id()));
            if std::fs::read_dir(&data_dir).is_ok_and(|mut d| d.next().is_some()) {
                bail!("{} is not empty; remove it and retry", data_dir.display());
            }
            let cluster = new_cluster(&runnel_bin, args.base_port, &data_dir)?;
            eprintln!(
                "runnel experiment: {} cell(s) on {NODES} local nodes; data and node logs under {}",
                cells.len(),
                data_dir.display()
            );
            Bench {
                cluster: Target::Local(cluster),
                session_timeout: SESSION_TIMEOUT,
                tag: String::new(),
                data_dir: Some(data_dir),
            }
        }
        TargetKind::Compose => {
            let cluster = ComposeCluster::discover(&args.on.compose_project).await?;
            eprintln!(
                "runnel experiment: {} cell(s) on the {} containers of compose project '{}' ({})",
                cells.len(),
                cluster.ids().len(),
                cluster.project(),
                cluster.bootstrap()
            );
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            Bench {
                cluster: Target::Compose(cluster),
                session_timeout: Duration::from_millis(args.on.session_timeout_ms),
                tag: format!("-{unix_ms}"),
                data_dir: None,
            }
        }
    };
    let nodes = u16::try_from(bench.cluster.ids().len()).unwrap_or(u16::MAX);
    if let Some(&rf) = cells.iter().map(|c| &c.rf).max() {
        if i32::from(rf) > i32::from(nodes) {
            bail!("--rf {rf} needs at least {rf} nodes; the cluster has {nodes}");
        }
    }

    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut rows = Vec::new();
    // Ctrl-C or SIGTERM drops the run and its producers; the nodes are killed below.
    let outcome = tokio::select! {
        r = execute(&args, &cells, &mut bench, &mut rows) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow!("terminated")),
    };
    // Local nodes are killed; containers are left running.
    if tokio::time::timeout(RESTORE_TIMEOUT, bench.cluster.finish())
        .await
        .is_err()
    {
        eprintln!("runnel experiment: cleaning up took over {RESTORE_TIMEOUT:?}; check the nodes");
    }
    let kept = bench.data_dir.as_ref().map_or_else(String::new, |d| {
        format!("; data and node logs kept in {}", d.display())
    });

    let report = Report {
        settings: Settings {
            target: args.on.target,
            nodes,
            record_size: args.record_size as usize,
            batch: args.batch,
            in_flight: usize::from(args.in_flight),
            duration_s: args.duration,
            max_records: args.max_records,
            partitions: PARTITIONS,
            fault_runs: !args.no_fault,
        },
        rows,
    };
    if !report.rows.is_empty() {
        let (md, csv) = write_files(&args.out_dir, &report)?;
        eprintln!(
            "runnel experiment: wrote {} and {}",
            md.display(),
            csv.display()
        );
    }
    if let Err(e) = outcome {
        return Err(e.context(format!(
            "the experiment did not finish ({} of {} cell(s) done){kept}",
            report.rows.len(),
            cells.len(),
        )));
    }
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        crate::cli::emit(&report::render(&report));
    }
    if let Some(data_dir) = &bench.data_dir {
        if args.keep_data {
            eprintln!("runnel experiment: data kept in {}", data_dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(data_dir) {
            eprintln!(
                "runnel experiment: cannot remove {}: {e}",
                data_dir.display()
            );
        }
    }
    Ok(())
}

/// A cluster on `base_port`, or on the first free block of ports found.
fn new_cluster(
    runnel_bin: &Path,
    base_port: Option<u16>,
    data_dir: &Path,
) -> anyhow::Result<LocalCluster> {
    let configs = vec![
        format!("broker.session.timeout.ms={}", SESSION_TIMEOUT.as_millis()),
        format!(
            "broker.heartbeat.interval.ms={}",
            HEARTBEAT_INTERVAL.as_millis()
        ),
    ];
    let create = |port: u16| {
        LocalCluster::new(
            "runnel experiment",
            runnel_bin.to_path_buf(),
            plan(NODES, port, data_dir)?,
            configs.clone(),
            NodeLogs::Files,
        )
    };
    if let Some(port) = base_port {
        return create(port);
    }
    let mut last = None;
    for _ in 0..PORT_TRIES {
        match create(rand::random_range(PORT_RANGE)) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow!("no port tried"))
        .context("found no free block of ports; choose one with --base-port"))
}

fn write_files(dir: &Path, report: &Report) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let md = dir.join("replication.md");
    let csv = dir.join("replication.csv");
    std::fs::write(&md, report::render_markdown(report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    std::fs::write(&csv, report::render_csv(&report.rows))
        .with_context(|| format!("cannot write {}", csv.display()))?;
    Ok((md, csv))
}

/// Starts the cluster and runs every cell, pushing each finished row to `rows`.
async fn execute(
    args: &ReplicationArgs,
    cells: &[Cell],
    bench: &mut Bench,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let cluster = &mut bench.cluster;
    cluster.start_all().await?;
    let bootstrap = cluster.bootstrap();
    wait_brokers(cluster, &bootstrap, START_TIMEOUT)
        .await
        .with_context(|| format!("the cluster did not start within {START_TIMEOUT:?}"))?;
    let duration = Duration::from_secs(args.duration);
    for (i, &cell) in cells.iter().enumerate() {
        let step = format!("[{}/{}] {}", i + 1, cells.len(), cell.name());
        let spec = |topic: String, run_for: Duration| LoadSpec {
            bootstrap: bootstrap.clone(),
            topic,
            acks: cell.acks,
            record_size: args.record_size as usize,
            batch: args.batch,
            in_flight: usize::from(args.in_flight),
            max_records: args.max_records,
            run_for,
        };

        let topic = cell.topic("steady", &bench.tag);
        create_topic(&bootstrap, &topic, cell).await?;
        let log = load::run(spec(topic.clone(), duration)).await;
        let clean = summarize(cell.acks, args.record_size, &log);
        eprintln!("{step}: steady: {}", describe_clean(&clean));

        let mut topics = vec![topic];
        let fault = if args.no_fault {
            None
        } else {
            let topic = cell.topic("fault", &bench.tag);
            create_topic(&bootstrap, &topic, cell).await?;
            topics.push(topic.clone());
            let schedule = fault_schedule(duration, bench.session_timeout);
            let fault = fault_run(cluster, spec(topic, duration), schedule).await?;
            eprintln!("{step}: fault: {}", describe_fault(&fault));
            Some(fault)
        };
        delete_topics(&bootstrap, &topics).await;
        rows.push(Row {
            rf: cell.rf,
            acks: cell.acks,
            min_insync_replicas: cell.min_insync,
            clean,
            fault,
        });
    }
    Ok(())
}

fn summarize(acks: Acks, record_size: u64, log: &LoadLog) -> Clean {
    let records = if acks == Acks::None {
        log.sent
    } else {
        log.acked.len() as u64
    };
    let ms = |p: f64| stats::percentile(&log.latencies_us, p).map(|us| us as f64 / 1000.0);
    Clean {
        records,
        seconds: log.seconds,
        records_per_s: stats::rate(records as f64, log.seconds),
        mb_per_s: stats::rate((records * record_size) as f64, log.seconds) / 1e6,
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        errors: log.errors,
        last_error: log.last_error.clone(),
    }
}

fn describe_clean(c: &Clean) -> String {
    let latency = match (c.p50_ms, c.p99_ms) {
        (Some(p50), Some(p99)) => format!(", p50 {p50:.2} ms, p99 {p99:.2} ms"),
        _ => String::new(),
    };
    format!(
        "{} records in {:.1} s, {:.0} rec/s, {:.1} MB/s{latency}, {} error(s)",
        c.records, c.seconds, c.records_per_s, c.mb_per_s, c.errors
    )
}

fn describe_fault(f: &Fault) -> String {
    let killed = f.killed_node.map_or_else(
        || "no leader found to kill".to_owned(),
        |n| format!("killed node {n}"),
    );
    let outcome = match (f.acked, f.found, f.lost_acked) {
        (_, None, _) => format!(
            "read-back failed: {}",
            f.read_error.as_deref().unwrap_or("?")
        ),
        (Some(acked), Some(found), Some(lost)) => {
            format!("{acked} acknowledged, {found} found, {lost} acknowledged lost")
        }
        (_, Some(found), _) => format!("{} sent, {found} found", f.sent),
    };
    format!("{killed}; {outcome}; {} failed request(s)", f.errors)
}

/// Creates a one-partition topic for `cell` and waits until it has a leader.
async fn create_topic(bootstrap: &str, topic: &str, cell: Cell) -> anyhow::Result<()> {
    let mut admin = load::connect(bootstrap).await?;
    admin
        .create_topics(
            topic,
            PARTITIONS,
            cell.rf,
            &[(
                "min.insync.replicas".to_owned(),
                cell.min_insync.to_string(),
            )],
        )
        .await
        .map_err(crate::cli::explain)
        .with_context(|| format!("cannot create topic {topic}"))?;
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while Instant::now() < deadline {
        if leader(bootstrap, topic).await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("topic {topic} got no leader within {LEADER_TIMEOUT:?}")
}

/// Deletes a finished cell's topics, so a long matrix does not fill the disk; a failure only
/// costs space, so it is reported and the run goes on.
async fn delete_topics(bootstrap: &str, topics: &[String]) {
    let deleted = async {
        let mut admin = load::connect(bootstrap).await?;
        for (topic, result) in admin.delete_topics(topics).await? {
            result.with_context(|| format!("cannot delete topic {topic}"))?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(LEADER_TIMEOUT, deleted).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("runnel experiment: {e:#}"),
        Err(_) => eprintln!("runnel experiment: deleting {topics:?} took over {LEADER_TIMEOUT:?}"),
    }
}

/// The leader of partition 0 of `topic`, if the cluster names one.
async fn leader(bootstrap: &str, topic: &str) -> Option<i32> {
    let mut client = load::connect(bootstrap).await.ok()?;
    let md = tokio::time::timeout(LEADER_TIMEOUT, client.topic_metadata(topic))
        .await
        .ok()?
        .ok()?;
    md.partitions.first().map(|p| p.leader).filter(|&l| l >= 0)
}

/// Waits until every node runs and the cluster lists all of them as live brokers.
async fn wait_brokers(
    cluster: &mut Target,
    bootstrap: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let nodes = cluster.ids().len();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((id, why)) = cluster.exited() {
            bail!("node {id} exited ({why}); see its log node-{id}.log");
        }
        if let Ok(mut c) = load::connect(bootstrap).await {
            if let Ok(Ok(md)) =
                tokio::time::timeout(Duration::from_secs(5), c.metadata(Some(&[]))).await
            {
                if md.brokers.len() == nodes {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("not every node registered as a live broker");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs the load on `spec.topic` while the partition leader is SIGKILLed and later restarted,
/// waits for the cluster to recover, then reads the partition back and counts the losses.
async fn fault_run(
    cluster: &mut Target,
    mut spec: LoadSpec,
    (kill_at, restart_at, end): (Duration, Duration, Duration),
) -> anyhow::Result<Fault> {
    spec.run_for = end;
    let (bootstrap, topic, acks) = (spec.bootstrap.clone(), spec.topic.clone(), spec.acks);
    let started = Instant::now();
    // A JoinSet, so that dropping this run (Ctrl-C) also stops its producers.
    let mut load = JoinSet::new();
    load.spawn(load::run(spec));

    tokio::time::sleep_until((started + kill_at).into()).await;
    let killed = leader(&bootstrap, &topic).await;
    let killed_id = killed.and_then(|id| u16::try_from(id).ok());
    if let Some(id) = killed_id {
        cluster.kill(id).await?;
    }
    tokio::time::sleep_until((started + restart_at).into()).await;
    if let Some(id) = killed_id {
        cluster.start(id).await?;
    }
    let log = load
        .join_next()
        .await
        .context("the load did not run")?
        .context("the load failed")?;

    let recovered = wait_brokers(cluster, &bootstrap, RECOVER_TIMEOUT).await;
    let read = match recovered {
        Ok(()) => tokio::time::timeout(READ_TIMEOUT, load::read_back(&bootstrap, &topic))
            .await
            .unwrap_or_else(|_| Err(anyhow!("took over {READ_TIMEOUT:?}"))),
        Err(e) => Err(e.context("the cluster did not recover")),
    };
    let (found, lost_acked, read_error) = match read {
        Ok(seqs) => {
            let loss = stats::count_loss(&log.acked, &seqs);
            let lost = (acks != Acks::None).then_some(loss.lost);
            (Some(loss.found), lost, None)
        }
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    Ok(Fault {
        killed_node: killed,
        sent: log.sent,
        acked: (acks != Acks::None).then_some(log.acked.len() as u64),
        found,
        lost_acked,
        errors: log.errors,
        read_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_is_ordered_and_deduplicated() {
        let got: Vec<String> = cells(&[3, 1, 3], &[Acks::All, Acks::Leader, Acks::All])
            .into_iter()
            .map(Cell::name)
            .collect();
        assert_eq!(
            got,
            [
                "RF=1 acks=1",
                "RF=1 acks=all",
                "RF=3 acks=1",
                "RF=3 acks=all"
            ]
        );
        let c = Cell::new(1, Acks::None);
        assert_eq!(
            (c.min_insync, c.topic("fault", "")),
            (1, "exp-rf1-acks0-fault".to_owned())
        );
        assert_eq!(c.topic("steady", "-17"), "exp-rf1-acks0-steady-17");
        assert_eq!(Cell::new(3, Acks::All).min_insync, 2);
    }

    #[test]
    fn fault_schedule_leaves_time_to_notice_the_death() {
        let s = |secs| fault_schedule(Duration::from_secs(secs), SESSION_TIMEOUT);
        // Long runs: a quarter in, two thirds in, the full duration.
        assert_eq!(
            s(20),
            (
                Duration::from_secs(5),
                Duration::from_secs(13),
                Duration::from_secs(20)
            )
        );
        // Short runs stretch to a session timeout plus a second of downtime, then a second more.
        let (kill, restart, end) = s(2);
        assert_eq!(kill, Duration::from_millis(500));
        assert_eq!(restart, kill + SESSION_TIMEOUT + Duration::from_secs(1));
        assert_eq!(end, restart + Duration::from_secs(1));
    }
}
