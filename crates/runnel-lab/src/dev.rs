//! `runnel dev`: a local cluster for development — N `runnel node` processes of this very
//! binary on consecutive ports, their logs interleaved on stderr with a `[node-i]` prefix,
//! all stopped together on Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use tokio::signal::unix::{signal, SignalKind};

use crate::local_cluster::{bootstrap, describe_exit, plan, LocalCluster, NodeLogs};

/// How long the nodes get to report healthy after they were started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the children are checked.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A node that dies this many times within `RESTART_WINDOW` is not restarted again.
const MAX_RESTARTS: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// How many nodes to run (1 to 9); every node is a controller and a broker.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Base directory; node i keeps its data in <DATA_DIR>/node-i.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Node 1's Kafka port. Node i listens for Kafka on BASE + 100*(i-1), for node-to-node
    /// RPC on that + 1 and for HTTP (/health, /v1/cluster) on that + 552.
    #[arg(long, default_value_t = 9092, value_name = "PORT")]
    base_port: u16,
    /// Broker config passed to every node, e.g. `--config num.partitions=3`. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
}

enum Outcome {
    /// Ctrl-C or SIGTERM.
    Stopped,
    /// A node exited by itself.
    NodeExited(u16, ExitStatus),
    /// Not every node became healthy in time.
    NotHealthy(Vec<u16>),
}

/// Runs the cluster until Ctrl-C or SIGTERM; `runnel_bin` is the binary the nodes run.
pub async fn run(args: DevArgs, runnel_bin: PathBuf) -> anyhow::Result<()> {
    let plan = plan(args.nodes, args.base_port, &args.data_dir)?;
    // Fewer nodes than Kafka's offsets.topic.replication.factor (3) could never create
    // __consumer_offsets: they get one replica per node. A --config given later wins.
    let mut configs = vec![format!(
        "offsets.topic.replication.factor={}",
        args.nodes.min(3)
    )];
    configs.extend(args.configs);
    let mut cluster = LocalCluster::new(
        "runnel dev",
        runnel_bin,
        plan.clone(),
        configs,
        NodeLogs::Relay,
    )?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    eprintln!(
        "runnel dev: starting {} node(s), data under {}",
        plan.len(),
        args.data_dir.display()
    );
    cluster.start_all().await?;

    let started = Instant::now();
    let mut pending: Vec<u16> = plan.iter().map(|n| n.id).collect();
    let mut restarts: Vec<(u16, Instant)> = Vec::new();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = term.recv() => break Outcome::Stopped,
            _ = &mut ctrl_c => break Outcome::Stopped,
            _ = tick.tick() => {
                if let Some((id, status)) = cluster.exited() {
                    // Once the cluster is up, a node that dies (killed to watch a failover,
                    // say) is restarted from its data dir, as a supervisor would; one that
                    // keeps dying, or dies while starting, stops the whole cluster.
                    restarts.retain(|(_, at): &(u16, Instant)| at.elapsed() < RESTART_WINDOW);
                    let recent = restarts.iter().filter(|(n, _)| *n == id).count();
                    if !pending.is_empty() || recent >= MAX_RESTARTS {
                        break Outcome::NodeExited(id, status);
                    }
                    eprintln!(
                        "runnel dev: node {id} exited ({}); restarting it with its data dir",
                        describe_exit(status)
                    );
                    if let Err(e) = cluster.start(id) {
                        eprintln!("runnel dev: cannot restart node {id}: {e:#}");
                        break Outcome::NodeExited(id, status);
                    }
                    restarts.push((id, Instant::now()));
                }
                if pending.is_empty() {
                    continue;
                }
                pending = cluster.unhealthy(&pending).await;
                if pending.is_empty() {
                    crate::outln!("bootstrap servers: {}", bootstrap(&plan));
                    let http: Vec<String> = plan.iter().map(|n| n.http.to_string()).collect();
                    crate::outln!(
                        "all {} node(s) healthy; see the cluster with `runnel cluster status --http {}`; Ctrl-C stops them",
                        plan.len(),
                        http.join(",")
                    );
                } else if started.elapsed() > START_TIMEOUT {
                    break Outcome::NotHealthy(pending);
                }
            }
        }
    };

    match &outcome {
        Outcome::Stopped => eprintln!("runnel dev: stopping the nodes"),
        Outcome::NodeExited(id, status) => eprintln!(
            "runnel dev: node {id} exited ({}) and is not restarted again; stopping the others",
            describe_exit(*status)
        ),
        Outcome::NotHealthy(ids) => eprintln!(
            "runnel dev: node(s) {} not healthy within {} s; stopping all",
            ids.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            START_TIMEOUT.as_secs()
        ),
    }
    cluster.stop_all().await;
    match outcome {
        Outcome::Stopped => {
            eprintln!("runnel dev: all nodes stopped");
            Ok(())
        }
        Outcome::NodeExited(id, status) => Err(anyhow!(
            "node {id} exited unexpectedly ({}); its log lines above start with [node-{id}]",
            describe_exit(status)
        )),
        Outcome::NotHealthy(ids) => Err(anyhow!(
            "node(s) {} did not answer GET /health with 200 within {} s; see their log lines above",
            ids.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            START_TIMEOUT.as_secs()
        )),
    }
}
