//! `runnel node`: runs a node — the broker with its Kafka gateway and the HTTP health endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use runnel_broker::{
    BrokerConfig, BrokerInfo, GroupCoordinator, ProducerIdManager, ReplicaManager,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(clap::Args, Debug)]
pub(crate) struct NodeArgs {
    /// This node's id; must stay the same for a data dir.
    #[arg(long, env = "RUNNEL_NODE_ID", default_value_t = 1)]
    node_id: i32,
    /// Where partition logs and metadata live.
    #[arg(long, env = "RUNNEL_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Address the Kafka protocol listener binds to.
    #[arg(long, env = "RUNNEL_KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    kafka_listen: SocketAddr,
    /// host:port that clients are told to connect to (default: the listen address).
    #[arg(long, env = "RUNNEL_ADVERTISED_KAFKA")]
    advertised_kafka: Option<String>,
    /// Address for node-to-node gRPC (used once nodes form a cluster).
    #[arg(long, env = "RUNNEL_RPC_LISTEN", default_value = "127.0.0.1:9093")]
    rpc_listen: SocketAddr,
    /// Address of the HTTP endpoint serving /health.
    #[arg(long, env = "RUNNEL_HTTP_LISTEN", default_value = "127.0.0.1:9644")]
    http_listen: SocketAddr,
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

fn parse_configs(pairs: &[String]) -> anyhow::Result<BrokerConfig> {
    let mut parsed = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--config '{pair}' is not KEY=VALUE"))?;
        parsed.push((k.trim(), v.trim()));
    }
    Ok(BrokerConfig::from_pairs(parsed)?)
}

/// Splits `host:port` (IPv6 hosts in brackets) for what Metadata advertises.
fn parse_advertised(addr: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("--advertised-kafka '{addr}' is not host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--advertised-kafka '{addr}' has an invalid port"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port as i32))
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = parse_configs(&args.configs)?;
    let kafka = TcpListener::bind(args.kafka_listen)
        .await
        .with_context(|| format!("cannot listen for Kafka clients on {}", args.kafka_listen))?;
    let bound = kafka.local_addr()?;
    let (host, port) = match &args.advertised_kafka {
        Some(addr) => parse_advertised(addr)?,
        None if bound.ip().is_unspecified() => {
            tracing::warn!("listening on {bound}; advertising localhost — set --advertised-kafka so remote clients can connect");
            ("localhost".to_string(), bound.port() as i32)
        }
        None => (bound.ip().to_string(), bound.port() as i32),
    };
    let http = TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.http_listen))?;

    let this_broker = BrokerInfo {
        id: args.node_id,
        host,
        port,
        rack: None,
    };
    let data_dir = args.data_dir.clone();
    let broker =
        tokio::task::spawn_blocking(move || ReplicaManager::open(&data_dir, this_broker, config))
            .await?
            .with_context(|| format!("cannot open data dir {}", args.data_dir.display()))?;
    let broker = Arc::new(broker);

    let producer_ids = Arc::new(
        ProducerIdManager::open(&args.data_dir)
            .with_context(|| format!("cannot open data dir {}", args.data_dir.display()))?,
    );
    let groups_broker = broker.clone();
    let groups = Arc::new(
        tokio::task::spawn_blocking(move || GroupCoordinator::open(groups_broker))
            .await?
            .context("cannot load consumer groups from __consumer_offsets")?,
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let maintenance = tokio::spawn(broker.clone().run_maintenance(shutdown_rx.clone()));
    let group_timers = tokio::spawn(groups.clone().run(shutdown_rx.clone()));
    let gateway = tokio::spawn(runnel_gateway::serve(
        kafka,
        Arc::new(runnel_gateway::Context {
            broker: broker.clone(),
            groups,
            producer_ids,
        }),
        shutdown_rx.clone(),
    ));
    let health = tokio::spawn(serve_http(http, args.node_id, shutdown_rx.clone()));
    tracing::info!(
        node_id = args.node_id,
        kafka = %bound,
        http = %args.http_listen,
        data_dir = %args.data_dir.display(),
        "runnel node ready"
    );

    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = shutdown_tx.send(true);
    let _ = gateway.await;
    let _ = maintenance.await;
    let _ = group_timers.await;
    let _ = health.await;
    let broker_for_flush = broker.clone();
    tokio::task::spawn_blocking(move || broker_for_flush.flush_all()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
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

async fn serve_http(listener: TcpListener, node_id: i32, mut shutdown: watch::Receiver<bool>) {
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || async move {
            axum::Json(serde_json::json!({ "status": "ok", "node_id": node_id }))
        }),
    );
    let graceful = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .await
    {
        tracing::warn!(error = %e, "HTTP endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_parse() {
        assert_eq!(
            parse_advertised("kafka-1:19092").unwrap(),
            ("kafka-1".into(), 19092)
        );
        assert_eq!(
            parse_advertised("[::1]:9092").unwrap(),
            ("::1".into(), 9092)
        );
        assert!(parse_advertised("nohost").is_err());
        assert!(parse_advertised("h:99999").is_err());
    }

    #[test]
    fn configs_parse_and_reject_typos() {
        assert!(parse_configs(&["num.partitions=3".into()]).is_ok());
        assert!(parse_configs(&["num.partitions".into()]).is_err());
        assert!(parse_configs(&["num.partitons=3".into()]).is_err());
    }
}
