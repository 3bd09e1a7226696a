//! `runnel experiment ...`: measurements on a fresh local cluster that each answer one
//! question and write their results under target/experiments/.

use std::path::PathBuf;

mod load;
mod replication;
mod report;
mod stats;

#[derive(clap::Subcommand, Debug)]
pub enum ExperimentCommand {
    /// Measure what the replication factor and acks cost in throughput and latency, and how
    /// many acknowledged records each keeps when the partition leader is killed.
    Replication(replication::ReplicationArgs),
}

/// Runs the experiment; `runnel_bin` is the binary a local cluster's nodes run.
pub async fn run(cmd: ExperimentCommand, runnel_bin: PathBuf) -> anyhow::Result<()> {
    match cmd {
        ExperimentCommand::Replication(args) => replication::run(args, runnel_bin).await,
    }
}
