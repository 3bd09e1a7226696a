//! `runnel experiment ...`: measurements on a fresh local cluster that each answer one
//! question and write their results under target/experiments/.

mod load;
mod replication;
mod report;
mod stats;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ExperimentCommand {
    /// Measure what the replication factor and acks cost in throughput and latency, and how
    /// many acknowledged records each keeps when the partition leader is killed.
    Replication(replication::ReplicationArgs),
}

pub(crate) async fn run(cmd: ExperimentCommand) -> anyhow::Result<()> {
    match cmd {
        ExperimentCommand::Replication(args) => replication::run(args).await,
    }
}
