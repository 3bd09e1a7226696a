//! `runnel node`: placeholder until the broker lands.

#[derive(clap::Args)]
pub(crate) struct NodeArgs {}

pub(crate) async fn run(_args: NodeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
