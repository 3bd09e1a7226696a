//! `runnel node`: the flags of a node, and running one until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use runnel_node::{Node, NodeConfig, Role};

#[derive(clap::Args, Debug)]
pub(crate) struct NodeArgs {
    /// This node's id; must stay the same for a data dir.
    #[arg(long, env = "RUNNEL_NODE_ID", default_value_t = 1)]
    node_id: i32,
    /// Where partition logs and the controller's Raft state live.
    #[arg(long, env = "RUNNEL_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Kafka listeners to bind: `host:port`, or named `NAME://host:port` entries,
    /// comma-separated (e.g. `INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094`).
    #[arg(
        long,
        env = "RUNNEL_KAFKA_LISTEN",
        default_value = "127.0.0.1:9092",
        value_delimiter = ','
    )]
    kafka_listen: Vec<String>,
    /// What clients of each listener are told to connect to: `host:port` for a single
    /// listener, else `NAME://host:port` entries (default: each listener's bind address).
    #[arg(long, env = "RUNNEL_ADVERTISED_KAFKA", value_delimiter = ',')]
    advertised_kafka: Vec<String>,
    /// Address of the node-to-node gRPC listener (Raft, controller requests).
    #[arg(long, env = "RUNNEL_RPC_LISTEN", default_value = "127.0.0.1:9093")]
    rpc_listen: SocketAddr,
    /// host:port other nodes reach this node's gRPC listener at (default: the listen
    /// address; must match this node's entry in --voters).
    #[arg(long, env = "RUNNEL_ADVERTISED_RPC")]
    advertised_rpc: Option<String>,
    /// Address of the HTTP endpoint serving /health and /v1/cluster.
    #[arg(long, env = "RUNNEL_HTTP_LISTEN", default_value = "127.0.0.1:9644")]
    http_listen: SocketAddr,
    /// The controller quorum: `id@host:port` of every voter's gRPC listener, the same on every
    /// node, e.g. `1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093`. Default: this node alone.
    #[arg(long, env = "RUNNEL_VOTERS", value_delimiter = ',')]
    voters: Vec<String>,
    /// What this node does: `controller`, `broker` or both. A broker that is not a controller
    /// follows the metadata log as a non-voting learner and must not be in --voters.
    #[arg(
        long,
        env = "RUNNEL_ROLES",
        value_delimiter = ',',
        default_value = "controller,broker"
    )]
    roles: Vec<RoleArg>,
    /// Broker config with Kafka's names, e.g. `--config num.partitions=3`. Repeatable; the
    /// environment variable takes a comma-separated list.
    #[arg(
        long = "config",
        env = "RUNNEL_CONFIG",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    configs: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    Controller,
    Broker,
}

impl From<NodeArgs> for NodeConfig {
    fn from(args: NodeArgs) -> Self {
        NodeConfig {
            node_id: args.node_id,
            data_dir: args.data_dir,
            kafka_listen: args.kafka_listen,
            advertised_kafka: args.advertised_kafka,
            rpc_listen: args.rpc_listen,
            advertised_rpc: args.advertised_rpc,
            http_listen: args.http_listen,
            voters: args.voters,
            roles: args
                .roles
                .into_iter()
                .map(|r| match r {
                    RoleArg::Controller => Role::Controller,
                    RoleArg::Broker => Role::Broker,
                })
                .collect(),
            configs: args.configs,
        }
    }
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    Node::start(args.into())
        .await?
        .run_until(wait_for_signal())
        .await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> NodeConfig {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            node: NodeArgs,
        }
        let argv = std::iter::once("runnel").chain(flags.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv)
            .unwrap()
            .node
            .into()
    }

    #[test]
    fn flags_default_to_the_library_defaults() {
        // The library's tests start from `NodeConfig::default()`; they hold for the flags.
        for var in [
            "RUNNEL_NODE_ID",
            "RUNNEL_DATA_DIR",
            "RUNNEL_KAFKA_LISTEN",
            "RUNNEL_ADVERTISED_KAFKA",
            "RUNNEL_RPC_LISTEN",
            "RUNNEL_ADVERTISED_RPC",
            "RUNNEL_HTTP_LISTEN",
            "RUNNEL_VOTERS",
            "RUNNEL_ROLES",
            "RUNNEL_CONFIG",
        ] {
            if std::env::var_os(var).is_some() {
                return; // the environment sets a flag; nothing to compare
            }
        }
        assert_eq!(config(&[]), NodeConfig::default());
    }

    #[test]
    fn flags_become_the_config() {
        let c = config(&[
            "--node-id",
            "4",
            "--roles",
            "broker",
            "--voters",
            "1@h1:9093,2@h2:9093",
            "--kafka-listen",
            "A://0.0.0.0:9092,B://0.0.0.0:9094",
            "--config",
            "num.partitions=3",
        ]);
        assert_eq!(c.node_id, 4);
        assert_eq!(c.roles, [Role::Broker]);
        assert_eq!(c.voters, ["1@h1:9093", "2@h2:9093"]);
        assert_eq!(c.kafka_listen, ["A://0.0.0.0:9092", "B://0.0.0.0:9094"]);
        assert_eq!(c.configs, ["num.partitions=3"]);
    }
}
