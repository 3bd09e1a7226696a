//! runnel-bench: throughput, latency and memory of a Runnel node, measured with librdkafka.
//!
//! Starts a `runnel node` on free loopback ports (or uses `--bootstrap`), runs bounded
//! scenarios, prints a table and writes `results.md` and `results.json`. Exits non-zero only
//! on errors (delivery failures, lost or out-of-order records, a node that did not start or
//! died), never because a number is slow.

mod cluster;
mod node;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;

use scenarios::{Outcome, ProduceSpec};

/// The cluster of the replicated scenarios (`*-rf3-*`) and their topics' settings.
const CLUSTER_NODES: usize = 3;
const REPLICATED_RF: u16 = 3;
const REPLICATED_MIN_ISR: u16 = 2;

const SCENARIOS: &[&str] = &[
    "produce-100b-acks1",
    "produce-100b-acksall",
    "produce-100b-idempotent",
    "produce-1k-acks1",
    "produce-1k-acksall",
    "produce-100b-rf3-acksall",
    "produce-1k-rf3-acksall",
    "consume-100b",
    "consume-1k",
    "latency",
];

#[derive(Parser, Debug)]
#[command(
    name = "runnel-bench",
    about = "Benchmark a Runnel node with librdkafka"
)]
struct Args {
    /// The runnel binary to start. Relative paths are taken from the repository root
    /// (then from the current directory).
    #[arg(long, default_value = "target/release/runnel")]
    runnel_bin: PathBuf,
    /// Bench an already running cluster instead of starting a node (no RSS/CPU figures).
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Repository root (default: two levels above this crate's manifest).
    #[arg(long)]
    repo_root: Option<PathBuf>,
    /// Output directory for results.md, results.json and node.log; relative to the repo root.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Records per producer run with 100-byte values.
    #[arg(long, default_value_t = 2_000_000)]
    records_small: u64,
    /// Records per producer run with 1 KiB values.
    #[arg(long, default_value_t = 500_000)]
    records_large: u64,
    /// Time limit per throughput scenario, seconds (whichever of count and time comes first).
    #[arg(long, default_value_t = 20)]
    time_limit: u64,
    /// Records per second in the latency scenario.
    #[arg(long, default_value_t = 2_000)]
    latency_rate: u64,
    /// Duration of the latency scenario, seconds.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Value size in the latency scenario, bytes.
    #[arg(long, default_value_t = 100)]
    latency_value_bytes: usize,
    /// Partitions of the auto-created topics (passed as num.partitions to the started node).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Extra broker configs for the started node, KEY=VALUE (repeatable).
    #[arg(long = "node-config", value_name = "KEY=VALUE")]
    node_configs: Vec<String>,
    /// Parent directory of the node's temporary data dir (default: the system temp dir).
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// The consumers' group.id. They only use assign() and never commit, but librdkafka
    /// refuses assign() without a group.id ("Local: Unknown group").
    #[arg(long, default_value = "runnel-bench")]
    consumer_group: String,
    /// librdkafka debug contexts for every client (e.g. `fetch,protocol`, `cgrp`, `all`);
    /// librdkafka's log lines then go to stderr.
    #[arg(long, value_name = "CONTEXTS")]
    rdkafka_debug: Option<String>,
    /// Comma-separated subset of scenarios to run (default: all).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS))]
    only: Vec<String>,
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("runnel-bench: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn repo_root(args: &Args) -> Result<PathBuf> {
    let root = match &args.repo_root {
        Some(r) => r.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    };
    root.canonicalize()
        .with_context(|| format!("repository root {} does not exist", root.display()))
}

fn resolve_bin(root: &Path, bin: &Path) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = if bin.is_absolute() {
        vec![bin.to_path_buf()]
    } else {
        vec![root.join(bin), std::env::current_dir()?.join(bin)]
    };
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "runnel binary {} not found (build it with `cargo build --release --bin runnel`)",
        candidates[0].display()
    )
}

/// Records the nodes' RSS and CPU after a scenario (summed over a cluster's nodes), checks
/// they still run, prints a line. `cpu_mark` holds the nodes' cumulative CPU at the start of
/// the scenario and is moved on.
fn after(o: &mut Outcome, nodes: &mut [node::Node], cpu_mark: &mut f64) -> Result<()> {
    let stats: Vec<node::ProcStats> = nodes
        .iter()
        .filter_map(|n| node::proc_stats(n.pid))
        .collect();
    if !stats.is_empty() {
        let cpu: f64 = stats.iter().map(|s| s.cpu_seconds).sum();
        o.node_rss_mib = Some(stats.iter().map(|s| s.rss_mib).sum());
        o.node_cpu_seconds = Some(((cpu - *cpu_mark) * 100.0).round() / 100.0);
        *cpu_mark = cpu;
    }
    for n in nodes {
        n.check_alive()?;
    }
    report::print_line(o);
    Ok(())
}

/// An error text for a node that did not stop cleanly, if it did not.
fn stop_problem(s: &node::StopInfo, what: &str) -> Option<String> {
    if s.died_early {
        Some(format!("{what} had exited before the bench stopped it"))
    } else if s.killed {
        Some(format!(
            "{what} did not stop within {:.0}s of SIGTERM and was killed",
            s.stop_seconds
        ))
    } else if s.exit_code != Some(0) {
        Some(format!(
            "{what} exited with {:?} after SIGTERM",
            s.exit_code
        ))
    } else {
        None
    }
}

/// Produce throughput on a fresh cluster with replicated topics, with the same producer
/// settings as the single-node runs. Stops the cluster before returning.
fn replicated_runs(
    args: &Args,
    root: &Path,
    out_dir: &Path,
    runs: &[(&str, usize, u64)],
    topic: &dyn Fn(&str) -> String,
    extra_errors: &mut Vec<String>,
) -> Result<Vec<Outcome>> {
    let bin = resolve_bin(root, &args.runnel_bin)?;
    let nodes = CLUSTER_NODES;
    eprintln!("starting a {nodes}-node cluster of {} ...", bin.display());
    let t0 = Instant::now();
    let mut cluster = cluster::Cluster::start(
        &bin,
        nodes,
        args.data_parent.as_deref(),
        out_dir,
        &args.node_configs,
    )?;
    eprintln!(
        "cluster up on {} in {:.2}s",
        cluster.bootstrap(),
        t0.elapsed().as_secs_f64()
    );
    let bootstrap = cluster.bootstrap();
    let mut cpu_mark: f64 = cluster
        .nodes
        .iter()
        .filter_map(|n| node::proc_stats(n.pid))
        .map(|s| s.cpu_seconds)
        .sum();
    let mut outcomes = Vec::new();
    for &(name, size, records) in runs {
        let t = topic(name);
        cluster.create_topic(&t, args.partitions, REPLICATED_RF, REPLICATED_MIN_ISR)?;
        let spec = ProduceSpec {
            scenario: format!("produce {size} B, acks=all, RF={REPLICATED_RF} ({nodes} nodes)"),
            idempotent: false,
            bootstrap: &bootstrap,
            topic: t,
            value_bytes: size,
            acks: "all",
            replication_factor: REPLICATED_RF,
            records,
            time_limit: Duration::from_secs(args.time_limit),
        };
        let mut o = scenarios::produce_throughput(&spec)?;
        o.note.push_str(&format!(
            ", min.insync.replicas={REPLICATED_MIN_ISR}, node RSS and CPU summed over {nodes} nodes"
        ));
        after(&mut o, &mut cluster.nodes, &mut cpu_mark)?;
        outcomes.push(o);
    }
    for (i, s) in cluster.stop().iter().enumerate() {
        if let Some(p) = s
            .as_ref()
            .and_then(|s| stop_problem(s, &format!("cluster node {}", i + 1)))
        {
            extra_errors.push(p);
        }
    }
    Ok(outcomes)
}

/// RF=3 acks=all over RF=1 acks=1 records/s, per value size both ran at.
fn replication_ratios(outcomes: &[Outcome]) -> Vec<report::Ratio> {
    let rate = |size: usize, rf: u16, acks: &str| {
        outcomes
            .iter()
            .find(|o| {
                o.value_bytes == size
                    && o.replication_factor == rf
                    && o.acks == acks
                    && o.scenario.starts_with("produce")
                    && !o.scenario.ends_with("idempotent")
            })
            .map(|o| o.records_per_sec)
    };
    [1024, 100]
        .into_iter()
        .filter_map(|size| {
            let rf1 = rate(size, 1, "1")?;
            let rf3 = rate(size, REPLICATED_RF, "all")?;
            Some(report::Ratio {
                value_bytes: size,
                rf1_acks1_records_per_sec: rf1,
                rf3_acksall_records_per_sec: rf3,
                ratio: if rf1 > 0.0 { rf3 / rf1 } else { 0.0 },
            })
        })
        .collect()
}

/// Returns Ok(true) when the run had no errors.
fn run() -> Result<bool> {
    let args = Args::parse();
    let root = repo_root(&args)?;
    scenarios::set_debug_contexts(args.rdkafka_debug.clone());
    let out_dir = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let wanted = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let limit = Duration::from_secs(args.time_limit);

    let mut node = None;
    let mut idle = None;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            let bin = resolve_bin(&root, &args.runnel_bin)?;
            let mut configs = vec![format!("num.partitions={}", args.partitions)];
            configs.extend(args.node_configs.iter().cloned());
            eprintln!("starting {} ...", bin.display());
            let t0 = Instant::now();
            let n = node::Node::start(
                &bin,
                args.data_parent.as_deref(),
                &out_dir.join("node.log"),
                &configs,
            )?;
            eprintln!(
                "node pid {} up on {} in {:.2}s",
                n.pid,
                n.kafka,
                t0.elapsed().as_secs_f64()
            );
            // Let the node settle for a moment before taking its idle RSS.
            std::thread::sleep(Duration::from_millis(500));
            idle = node::proc_stats(n.pid);
            let addr = n.kafka.to_string();
            node = Some(n);
            addr
        }
    };
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let topic = |name: &str| format!("bench-{name}-{run_id}");

    let mut cpu_mark = idle.map_or(0.0, |s| s.cpu_seconds);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut extra_errors: Vec<String> = Vec::new();
    // (scenario, topic, value bytes, acks, records)
    let produce_runs: [(&str, &str, usize, &'static str, u64); 5] = [
        (
            "produce-100b-acks1",
            "p100-acks1",
            100,
            "1",
            args.records_small,
        ),
        (
            "produce-100b-acksall",
            "p100-acksall",
            100,
            "all",
            args.records_small,
        ),
        (
            "produce-100b-idempotent",
            "p100-idem",
            100,
            "all",
            args.records_small,
        ),
        (
            "produce-1k-acks1",
            "p1k-acks1",
            1024,
            "1",
            args.records_large,
        ),
        (
            "produce-1k-acksall",
            "p1k-acksall",
            1024,
            "all",
            args.records_large,
        ),
    ];
    for (id, t, size, acks, records) in produce_runs {
        if !wanted(id) {
            continue;
        }
        let idempotent = id.ends_with("idempotent");
        let spec = ProduceSpec {
            scenario: if idempotent {
                format!("produce {size} B, acks={acks}, idempotent")
            } else {
                format!("produce {size} B, acks={acks}")
            },
            idempotent,
            bootstrap: &bootstrap,
            topic: topic(t),
            value_bytes: size,
            acks,
            replication_factor: 1,
            records,
            time_limit: limit,
        };
        let mut o = scenarios::produce_throughput(&spec)?;
        after(&mut o, node.as_mut_slice(), &mut cpu_mark)?;
        outcomes.push(o);
    }

    for (id, producer_id, size) in [
        ("consume-100b", "produce-100b-acks1", 100),
        ("consume-1k", "produce-1k-acks1", 1024),
    ] {
        if !wanted(id) {
            continue;
        }
        let Some(produced) = outcomes
            .iter()
            .find(|o| o.value_bytes == size && o.acks == "1")
            .cloned()
        else {
            eprintln!("skipping {id}: it reads what {producer_id} wrote, which did not run");
            continue;
        };
        let mut o = scenarios::consume_throughput(
            &format!("consume {size} B"),
            &bootstrap,
            &produced.topic,
            size,
            &args.consumer_group,
            limit,
        )?;
        // Every acknowledged record must be in the log.
        if o.target_records < produced.records {
            o.errors += 1;
            o.error_samples.push(format!(
                "the topic holds {} records but {} were acknowledged to the producer",
                o.target_records, produced.records
            ));
        } else if o.target_records > produced.records {
            o.note.push_str(&format!(
                "; log holds {} more records than were acknowledged",
                o.target_records - produced.records
            ));
        }
        after(&mut o, node.as_mut_slice(), &mut cpu_mark)?;
        outcomes.push(o);
    }

    if wanted("latency") {
        let mut o = scenarios::produce_latency(
            &bootstrap,
            &topic("latency"),
            args.latency_value_bytes,
            args.latency_rate,
            args.latency_secs,
        )?;
        after(&mut o, node.as_mut_slice(), &mut cpu_mark)?;
        outcomes.push(o);
    }

    let mut memory = None;
    let mut stop = None;
    let mut node_log = None;
    if let Some(mut n) = node.take() {
        let end = node::proc_stats(n.pid);
        memory = Some(report::Memory {
            idle_rss_mib: idle.map(|s| s.rss_mib),
            final_rss_mib: end.map(|s| s.rss_mib),
            peak_rss_mib: end.map(|s| s.hwm_mib),
            cpu_seconds: end.map(|s| s.cpu_seconds),
        });
        let s = n.stop();
        if let Some(p) = s.as_ref().and_then(|s| stop_problem(s, "the node")) {
            extra_errors.push(p);
        }
        stop = s;
        node_log = Some(node::summarize_log(&n.log_path));
    }

    // The replicated runs come once the single node is gone, so the cluster has the machine
    // to itself. (topic, value bytes, records)
    let replicated: Vec<(&str, usize, u64)> = [
        (
            "produce-1k-rf3-acksall",
            "p1k-rf3-acksall",
            1024,
            args.records_large,
        ),
        (
            "produce-100b-rf3-acksall",
            "p100-rf3-acksall",
            100,
            args.records_small,
        ),
    ]
    .into_iter()
    .filter(|(id, ..)| wanted(id))
    .map(|(_, t, size, records)| (t, size, records))
    .collect();
    if !replicated.is_empty() {
        if args.bootstrap.is_some() {
            eprintln!(
                "skipping the rf3 scenarios: they start their own cluster, not with --bootstrap"
            );
        } else {
            outcomes.extend(replicated_runs(
                &args,
                &root,
                &out_dir,
                &replicated,
                &topic,
                &mut extra_errors,
            )?);
        }
    }

    let replication_ratios = replication_ratios(&outcomes);
    let results = report::Results {
        started_unix: run_id,
        bootstrap: if args.bootstrap.is_some() {
            bootstrap.clone()
        } else {
            "started by the bench".into()
        },
        librdkafka: rdkafka::util::get_rdkafka_version().1,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        git_commit: report::git_commit(&root),
        time_limit_seconds: args.time_limit,
        outcomes,
        memory,
        node_stop: stop,
        node_log,
        other_errors: extra_errors,
        replication_ratios,
    };
    report::print_table(&results);
    report::write(&results, &out_dir)?;
    eprintln!(
        "wrote {} and {}",
        out_dir.join("results.md").display(),
        out_dir.join("results.json").display()
    );
    let errors = results.total_errors();
    if errors > 0 {
        eprintln!("runnel-bench: {errors} error(s); see the error notes above");
        return Ok(false);
    }
    Ok(true)
}
