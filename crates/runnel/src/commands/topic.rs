//! `runnel topic ...` (placeholder until the client lands).

#[derive(clap::Subcommand)]
pub(crate) enum TopicCommand {
    /// List topics.
    List,
}

pub(crate) async fn run(_cmd: TopicCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
