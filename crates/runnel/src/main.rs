//! The `runnel` binary: a thin clap front end that runs a node (`runnel-node`), speaks the
//! Kafka protocol as a CLI client, and drives the lab's clusters (`runnel-lab`).

mod commands;
mod node;

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: a replicated, Kafka-compatible event-streaming cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Runnel node (broker + Kafka gateway).
    Node(node::NodeArgs),
    /// Create, list, describe, delete and configure topics.
    #[command(subcommand)]
    Topic(commands::topic::TopicCommand),
    /// Produce lines from stdin as records.
    Produce(commands::produce::ProduceArgs),
    /// Consume records and print them to stdout.
    Consume(commands::consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(commands::group::GroupCommand),
    /// Run a local development cluster: N nodes of this binary on consecutive ports.
    Dev(runnel_lab::dev::DevArgs),
    /// Run a local cluster under a fault schedule and check that acknowledged records survive.
    Chaos(runnel_lab::chaos::ChaosArgs),
    /// Run a measurement on a fresh local cluster and write its results under target/experiments.
    #[command(subcommand)]
    Experiment(runnel_lab::experiment::ExperimentCommand),
    /// Inspect the cluster through the nodes' HTTP endpoints.
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
    /// Exit 0 when a node's /health says it serves clients (for container health checks).
    Health(commands::health::HealthArgs),
}

pub(crate) fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Node(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::Topic(cmd) => commands::topic::run(cmd).await,
            Command::Produce(args) => commands::produce::run(args).await,
            Command::Consume(args) => commands::consume::run(args).await,
            Command::Group(cmd) => commands::group::run(cmd).await,
            Command::Dev(args) => runnel_lab::dev::run(args, runnel_bin()?).await,
            Command::Cluster(cmd) => commands::cluster::run(cmd).await,
            Command::Chaos(args) => runnel_lab::chaos::run(args, runnel_bin()?).await,
            Command::Experiment(cmd) => runnel_lab::experiment::run(cmd, runnel_bin()?).await,
            Command::Health(args) => commands::health::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// This binary: the lab's local clusters run their nodes with it.
fn runnel_bin() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    std::env::current_exe().context("cannot find the runnel executable to start nodes")
}

/// Logs go to stderr through `tracing`; `RUST_LOG` sets the level. A node logs at info by
/// default, CLI commands only warnings so their stdout stays clean for pipes.
fn init_tracing(is_node: bool) {
    // openraft logs every election step at info; its warnings are what an operator needs.
    let default = if is_node {
        "info,openraft=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: container and file logs stay plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
