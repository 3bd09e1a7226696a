//! `runnel consume TOPIC` (placeholder until the client lands).

#[derive(clap::Args)]
pub(crate) struct ConsumeArgs {
    /// Topic to consume from.
    topic: String,
}

pub(crate) async fn run(_args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
