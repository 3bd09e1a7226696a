//! `runnel group ...` (placeholder until implemented).

#[derive(clap::Subcommand)]
pub(crate) enum GroupCommand {
    /// List consumer groups.
    List,
}

pub(crate) async fn run(_cmd: GroupCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
