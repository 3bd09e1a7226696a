//! `runnel topic ...`: create, list, describe, delete and configure topics.

use anyhow::{bail, Context as _};
use runnel_client::{offset_spec, ConfigSource};

use super::table::{id_list, Table};
use super::{emit, explain, outln, parse_key_value, ConnectArgs};

#[derive(clap::Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics.
    List(ListArgs),
    /// Show a topic's partitions, leaders, replicas and offsets.
    Describe(DescribeArgs),
    /// Delete one or more topics.
    Delete(DeleteArgs),
    /// Set or remove topic-level config overrides.
    AlterConfig(AlterConfigArgs),
    /// Increase a topic's partition count.
    AddPartitions(AddPartitionsArgs),
}

#[derive(clap::Args)]
pub(crate) struct CreateArgs {
    /// Topic name.
    name: String,
    /// Number of partitions (default: the cluster default).
    #[arg(long, short = 'p', value_name = "N")]
    partitions: Option<i32>,
    /// Replication factor (default: the cluster default).
    #[arg(long, short = 'r', value_name = "N")]
    replication_factor: Option<i16>,
    /// Topic config override; repeat for several.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// Include internal topics (e.g. __consumer_offsets).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
pub(crate) struct DescribeArgs {
    /// Topic name.
    name: String,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
pub(crate) struct DeleteArgs {
    /// Topic names.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
pub(crate) struct AlterConfigArgs {
    /// Topic name.
    name: String,
    /// Set a config; repeat for several.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Remove a config override (revert to the default); repeat for several.
    #[arg(long = "delete", value_name = "KEY")]
    delete: Vec<String>,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
pub(crate) struct AddPartitionsArgs {
    /// Topic name.
    name: String,
    /// The new total number of partitions.
    #[arg(long, value_name = "N")]
    total: i32,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub(crate) async fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create(args) => create(args).await,
        TopicCommand::List(args) => list(args).await,
        TopicCommand::Describe(args) => describe(args).await,
        TopicCommand::Delete(args) => delete(args).await,
        TopicCommand::AlterConfig(args) => alter_config(args).await,
        TopicCommand::AddPartitions(args) => add_partitions(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    if args.partitions.is_some_and(|p| p < 1) {
        bail!("--partitions must be at least 1");
    }
    if args.replication_factor.is_some_and(|r| r < 1) {
        bail!("--replication-factor must be at least 1");
    }
    let mut client = args.conn.connect().await?;
    let created = client
        .create_topics(
            &args.name,
            args.partitions.unwrap_or(-1),
            args.replication_factor.unwrap_or(-1),
            &args.configs,
        )
        .await
        .map_err(explain)?;
    let mut details = Vec::new();
    if created.num_partitions > 0 {
        details.push(format!("{} partitions", created.num_partitions));
    }
    if created.replication_factor > 0 {
        details.push(format!("replication factor {}", created.replication_factor));
    }
    if details.is_empty() {
        outln!("created topic '{}'", args.name);
    } else {
        outln!("created topic '{}' ({})", args.name, details.join(", "));
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let metadata = client.metadata(None).await.map_err(explain)?;
    let mut table = Table::new(["NAME", "PARTITIONS", "REPLICAS"]).right(&[1, 2]);
    for t in &metadata.topics {
        if t.is_internal && !args.all {
            continue;
        }
        table.row([
            t.name.clone(),
            t.partitions.len().to_string(),
            t.replication_factor().to_string(),
        ]);
    }
    if table.is_empty() {
        eprintln!("no topics — create one with `runnel topic create NAME`");
        return Ok(());
    }
    emit(&table.render());
    Ok(())
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let topic = client.topic_metadata(&args.name).await.map_err(explain)?;

    let mut summary = Table::new(["", ""]);
    summary.row(["Topic:".to_owned(), topic.name.clone()]);
    if let Some(id) = topic.topic_id {
        summary.row(["ID:".to_owned(), id.to_string()]);
    }
    summary.row(["Partitions:".to_owned(), topic.partitions.len().to_string()]);
    summary.row([
        "Replication factor:".to_owned(),
        topic.replication_factor().to_string(),
    ]);
    if topic.is_internal {
        summary.row(["Internal:", "yes"]);
    }
    match client.describe_configs(&args.name).await {
        Ok(configs) => {
            let overrides: Vec<String> = configs
                .iter()
                .filter(|c| !c.is_default && c.source != ConfigSource::Unknown)
                .map(|c| {
                    let value = if c.is_sensitive {
                        "<sensitive>"
                    } else {
                        c.value.as_deref().unwrap_or("<null>")
                    };
                    format!("{}={} ({})", c.name, value, c.source)
                })
                .collect();
            if overrides.is_empty() {
                summary.row(["Configs:", "(all defaults)"]);
            }
            for (i, o) in overrides.into_iter().enumerate() {
                summary.row([if i == 0 { "Configs:" } else { "" }.to_owned(), o]);
            }
        }
        Err(e) => summary.row(["Configs:".to_owned(), format!("unavailable ({e})")]),
    }
    // The header row of the summary table is blank; skip it.
    let rendered = summary.render();
    emit(rendered.split_once('\n').map_or("", |(_, rest)| rest));
    outln!();

    let mut table = Table::new([
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "LOG-START",
        "LOG-END",
    ])
    .right(&[0, 1, 4, 5]);
    for p in &topic.partitions {
        let (start, end) = if p.leader >= 0 {
            let start = client
                .list_offsets(&args.name, p.partition, offset_spec::EARLIEST)
                .await;
            let end = client
                .list_offsets(&args.name, p.partition, offset_spec::LATEST)
                .await;
            (show_offset(start), show_offset(end))
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        let leader = if p.leader >= 0 {
            p.leader.to_string()
        } else {
            "none".to_owned()
        };
        table.row([
            p.partition.to_string(),
            leader,
            id_list(&p.replicas),
            id_list(&p.isr),
            start,
            end,
        ]);
    }
    emit(&table.render());
    Ok(())
}

fn show_offset(r: runnel_client::Result<i64>) -> String {
    match r {
        Ok(o) => o.to_string(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list offsets");
            "?".to_owned()
        }
    }
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let results = client.delete_topics(&args.names).await.map_err(explain)?;
    let mut failed = 0;
    for (name, result) in results {
        match result {
            Ok(()) => outln!("deleted topic '{name}'"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {:#}", explain(e));
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} topics could not be deleted",
            args.names.len()
        );
    }
    Ok(())
}

async fn alter_config(args: AlterConfigArgs) -> anyhow::Result<()> {
    if args.set.is_empty() && args.delete.is_empty() {
        bail!("nothing to change — pass --set KEY=VALUE and/or --delete KEY");
    }
    if let Some((k, _)) = args.set.iter().find(|(k, _)| args.delete.contains(k)) {
        bail!("config '{k}' is both set and deleted");
    }
    let mut client = args.conn.connect().await?;
    client
        .incremental_alter_configs(&args.name, &args.set, &args.delete)
        .await
        .map_err(explain)?;
    let mut changes: Vec<String> = args
        .set
        .iter()
        .map(|(k, v)| format!("set {k}={v}"))
        .collect();
    changes.extend(args.delete.iter().map(|k| format!("deleted {k}")));
    outln!("updated topic '{}': {}", args.name, changes.join(", "));
    Ok(())
}

async fn add_partitions(args: AddPartitionsArgs) -> anyhow::Result<()> {
    if args.total < 1 {
        bail!("--total must be at least 1");
    }
    let mut client = args.conn.connect().await?;
    let current = client
        .topic_metadata(&args.name)
        .await
        .map_err(explain)?
        .partitions
        .len();
    if i64::from(args.total) <= current as i64 {
        bail!(
            "topic '{}' already has {current} partitions; --total must be larger (partitions cannot be removed)",
            args.name
        );
    }
    client
        .create_partitions(&args.name, args.total)
        .await
        .map_err(explain)
        .with_context(|| format!("cannot add partitions to topic '{}'", args.name))?;
    outln!(
        "topic '{}' now has {} partitions (was {current})",
        args.name,
        args.total
    );
    Ok(())
}
