//! `runnel produce TOPIC` (placeholder until the client lands).

#[derive(clap::Args)]
pub(crate) struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
}

pub(crate) async fn run(_args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
