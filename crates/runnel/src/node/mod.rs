//! `runnel node`: runs a node — the Raft controller (a voter, or a learner on broker-only
//! nodes), the broker with its Kafka gateway, one gRPC server for both, and the HTTP endpoint.
//!
//! Start-up order: take the data dir, start the controller (its log replays the metadata
//! image this node last applied), open the partition logs of that image, then register with
//! the active controller. Kafka clients are served once the controller has unfenced this
//! broker, that is once it has caught up with the metadata log.

mod http;
mod identity;
mod lifecycle;
mod listeners;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::FutureExt as _;
use runnel_broker::metadata::{MetadataWriter, Written};
use runnel_broker::replication::service::{ManagerSlot, ReplicaGrpcService};
use runnel_broker::{
    BrokerConfig, BrokerError, GroupCoordinator, ProducerIdManager, ReplicaManager,
};
use runnel_controller::client::ControllerClient;
use runnel_controller::command::ControllerCommand;
use runnel_controller::liveness::{BrokerLiveness, LivenessSettings};
use runnel_controller::raft::Controller;
use runnel_controller::rpc_server::RpcServer;
use runnel_controller::service::ControllerGrpcService;
use runnel_controller::store::RaftNode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use identity::DataDir;
use lifecycle::{BrokerState, Lifecycle, Registration};
use listeners::ListenerSpec;

/// How long a metadata command sent for a Kafka client may wait for the active controller.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// How long SIGTERM waits for leadership to move away before stopping anyway.
const CONTROLLED_SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

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
    roles: Vec<Role>,
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
enum Role {
    Controller,
    Broker,
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

/// `--voters` as Raft nodes; `1@host:port` each.
fn parse_voters(voters: &[String]) -> anyhow::Result<BTreeMap<u64, RaftNode>> {
    let mut parsed = BTreeMap::new();
    for voter in voters.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let (id, addr) = voter
            .split_once('@')
            .with_context(|| format!("--voters entry '{voter}' is not id@host:port"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--voters entry '{voter}' has an invalid node id"))?;
        if !addr.contains(':') {
            bail!("--voters entry '{voter}' is not id@host:port");
        }
        let node = RaftNode {
            rpc_addr: addr.to_string(),
        };
        if parsed.insert(id, node).is_some() {
            bail!("--voters lists node {id} twice");
        }
    }
    Ok(parsed)
}

/// Resolves the voter set and checks the roles against it.
fn quorum(args: &NodeArgs, advertised_rpc: &str) -> anyhow::Result<BTreeMap<u64, RaftNode>> {
    let id = u64::try_from(args.node_id).context("--node-id must not be negative")?;
    let mut voters = parse_voters(&args.voters)?;
    let controller = args.roles.contains(&Role::Controller);
    if voters.is_empty() {
        if !controller {
            bail!("a broker-only node needs --voters naming the controller quorum");
        }
        voters.insert(
            id,
            RaftNode {
                rpc_addr: advertised_rpc.to_string(),
            },
        );
    }
    match (controller, voters.get(&id)) {
        (true, None) => bail!(
            "node {id} has the controller role but is not in --voters; add {id}@{advertised_rpc} to --voters or run it with --roles broker"
        ),
        (false, Some(_)) => bail!(
            "node {id} is in --voters but does not have the controller role; add it with --roles controller,broker or remove it from --voters"
        ),
        (true, Some(me)) if me.rpc_addr != advertised_rpc => bail!(
            "--voters says node {id} is at {}, but it advertises {advertised_rpc}; set --advertised-rpc {}",
            me.rpc_addr,
            me.rpc_addr
        ),
        _ => {}
    }
    if args.roles.is_empty() {
        bail!("--roles needs controller, broker or both");
    }
    Ok(voters)
}

/// Sends a broker's metadata commands to the active controller.
struct ControllerWriter {
    client: ControllerClient,
}

impl MetadataWriter for ControllerWriter {
    fn write(
        &self,
        cmd: ControllerCommand,
    ) -> futures::future::BoxFuture<'_, Result<Written, BrokerError>> {
        async move {
            match self.client.write(&cmd, WRITE_DEADLINE).await {
                Ok(c) => Ok(Written {
                    result: c.result,
                    offset: c.offset,
                }),
                Err(e) => Err(BrokerError::ControllerUnavailable(e.to_string())),
            }
        }
        .boxed()
    }
}

fn liveness_settings(config: &BrokerConfig) -> LivenessSettings {
    LivenessSettings {
        session_timeout: Duration::from_millis(config.broker_session_timeout_ms()),
        heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms()),
        auto_rebalance: config.auto_leader_rebalance_enable(),
        imbalance_check_interval: Duration::from_secs(
            config.leader_imbalance_check_interval_seconds(),
        ),
    }
}

/// The broker half of a node.
struct BrokerParts {
    broker: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    lifecycle: Arc<Lifecycle>,
    kafka: Vec<KafkaListener>,
    producer_ids: Arc<ProducerIdManager>,
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = parse_configs(&args.configs)?;
    let kafka_listeners = listeners::parse(&args.kafka_listen, &args.advertised_kafka)?;
    let rpc = TcpListener::bind(args.rpc_listen)
        .await
        .with_context(|| format!("cannot listen for node RPCs on {}", args.rpc_listen))?;
    let advertised_rpc = match &args.advertised_rpc {
        Some(a) => a.clone(),
        None => rpc.local_addr()?.to_string(),
    };
    let voters = quorum(&args, &advertised_rpc)?;
    let is_broker = args.roles.contains(&Role::Broker);
    let roles: Vec<&'static str> = [(Role::Controller, "controller"), (Role::Broker, "broker")]
        .into_iter()
        .filter(|(r, _)| args.roles.contains(r))
        .map(|(_, name)| name)
        .collect();
    let http = TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.http_listen))?;

    let data_dir_path = args.data_dir.clone();
    let node_id = args.node_id;
    let mut data_dir =
        tokio::task::spawn_blocking(move || DataDir::open(&data_dir_path, node_id)).await??;
    let controller_dir = data_dir.path().join("controller");
    if !controller_dir.exists() && runnel_broker::has_partition_logs(data_dir.path()) {
        bail!(
            "data dir {} holds partition logs but no controller state (controller/); refusing to start so no data is lost. Restore controller/ or move the data dir away",
            data_dir.path().display()
        );
    }
    let controller = Arc::new(
        Controller::start(node_id as u64, &controller_dir, voters.clone())
            .await
            .context("cannot start the controller")?,
    );
    data_dir.check_cluster(&controller.subscribe().borrow().data.cluster_id)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let liveness = BrokerLiveness::new(controller.clone(), liveness_settings(&config));
    let liveness_task = tokio::spawn(liveness.clone().run(shutdown_rx.clone()));
    // The replica service answers "unavailable" until the broker's logs are open.
    let replica_slot: ManagerSlot = Arc::default();
    let routes = tonic::service::Routes::new(controller.raft_service())
        .add_service(ControllerGrpcService::new(liveness).into_server())
        .add_service(ReplicaGrpcService::new(replica_slot.clone()).into_server());
    let rpc_server = RpcServer::start(rpc, routes);
    let client = ControllerClient::new(
        node_id,
        controller.clone(),
        voters.values().map(|n| n.rpc_addr.clone()).collect(),
    );

    let (ready_tx, ready_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(
        http,
        http::HttpState {
            node_id,
            roles: roles.clone(),
            controller: controller.clone(),
            ready: ready_rx,
        },
        shutdown_rx.clone(),
    ));

    let applied = Arc::new(AtomicU64::new(0));
    let broker = if is_broker {
        Some(
            start_broker(
                &args,
                &kafka_listeners,
                &config,
                &data_dir,
                &controller,
                &client,
                applied.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    let apply_task = tokio::spawn(apply_loop(
        controller.clone(),
        broker
            .as_ref()
            .map(|b| (b.broker.clone(), b.groups.clone())),
        applied.clone(),
        data_dir,
        shutdown_rx.clone(),
    ));
    let mut tasks = Vec::new();
    if let Some(parts) = &broker {
        let _ = replica_slot.set(parts.broker.clone());
        tasks.push(tokio::spawn(
            parts
                .broker
                .clone()
                .run_replica_fetchers(shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            parts.broker.clone().run_isr_updates(shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            parts.lifecycle.clone().run(shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            parts.broker.clone().run_maintenance(shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(parts.groups.clone().run(shutdown_rx.clone())));
    }
    tracing::info!(
        node_id,
        roles = ?roles,
        rpc = %advertised_rpc,
        http = %args.http_listen,
        data_dir = %args.data_dir.display(),
        "runnel node started; joining the cluster"
    );

    // Serve Kafka clients once unfenced (a broker), or report ready once a controller leader
    // is known (a controller-only node).
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let mut gateway = None;
    match broker {
        Some(parts) => {
            let mut state = parts.lifecycle.state();
            // `wait_for` hands back a read guard of the watch: turn it into a bool at once, or
            // the lifecycle could never publish another state.
            let unfenced = tokio::select! {
                _ = &mut signal => false,
                r = state.wait_for(|s| *s == BrokerState::Unfenced) => r.is_ok(),
            };
            if unfenced {
                let stray_broker = parts.broker.clone();
                tokio::task::spawn_blocking(move || stray_broker.remove_stray_dirs()).await?;
                let mut addresses = Vec::new();
                let limits = runnel_gateway::ConnectionLimits::from_config(parts.broker.config())?;
                let serving = parts.kafka.into_iter().map(|listener| {
                    addresses.push(format!(
                        "{}://{} ({}:{})",
                        listener.name,
                        listener
                            .socket
                            .local_addr()
                            .map_or_else(|e| e.to_string(), |a| a.to_string()),
                        listener.host,
                        listener.port
                    ));
                    runnel_gateway::serve(
                        listener.socket,
                        Arc::new(runnel_gateway::Context {
                            broker: parts.broker.clone(),
                            groups: parts.groups.clone(),
                            producer_ids: parts.producer_ids.clone(),
                            listener: listener.name.into(),
                            limits: limits.clone(),
                        }),
                        shutdown_rx.clone(),
                    )
                });
                gateway = Some(tokio::spawn(futures::future::join_all(
                    serving.collect::<Vec<_>>(),
                )));
                let _ = ready_tx.send(true);
                tracing::info!(node_id, kafka = %addresses.join(", "), "runnel node ready: serving Kafka clients");
                (&mut signal).await;
            }
            tracing::info!("shutting down");
            parts
                .lifecycle
                .controlled_shutdown(CONTROLLED_SHUTDOWN_LIMIT)
                .await;
            let _ = shutdown_tx.send(true);
            if let Some(g) = gateway.take() {
                let _ = g.await;
            }
            for t in tasks {
                let _ = t.await;
            }
            let flush = parts.broker.clone();
            tokio::task::spawn_blocking(move || flush.flush_all()).await?;
        }
        None => {
            let mut metrics = controller.metrics();
            let led = tokio::select! {
                _ = &mut signal => false,
                r = metrics.wait_for(|m| m.current_leader.is_some()) => r.is_ok(),
            };
            if led {
                let _ = ready_tx.send(true);
                tracing::info!(node_id, "runnel controller ready");
                (&mut signal).await;
            }
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
        }
    }
    let _ = apply_task.await;
    let _ = liveness_task.await;
    let _ = http_task.await;
    rpc_server.shutdown().await;
    controller.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn start_broker(
    args: &NodeArgs,
    kafka_listeners: &[ListenerSpec],
    config: &BrokerConfig,
    data_dir: &DataDir,
    controller: &Arc<Controller>,
    client: &ControllerClient,
    applied: Arc<AtomicU64>,
) -> anyhow::Result<BrokerParts> {
    let mut kafka = Vec::with_capacity(kafka_listeners.len());
    for spec in kafka_listeners {
        kafka.push(bind_kafka(spec).await?);
    }
    let writer: Arc<dyn MetadataWriter> = Arc::new(ControllerWriter {
        client: client.clone(),
    });
    let (offset, image) = {
        let state = controller.subscribe().borrow().clone();
        (state.last_applied.map_or(0, |l| l.index), state.data)
    };
    let path = data_dir.path().to_path_buf();
    let node_id = args.node_id;
    let broker_config = config.clone();
    let open_writer = writer.clone();
    let incarnation = uuid::Uuid::new_v4();
    let broker = tokio::task::spawn_blocking(move || {
        ReplicaManager::open(
            &path,
            node_id,
            broker_config,
            open_writer,
            offset,
            image,
            Some(incarnation),
        )
    })
    .await?
    .with_context(|| format!("cannot open data dir {}", args.data_dir.display()))?;
    let broker = Arc::new(broker);
    applied.store(offset, Ordering::Release);
    let groups = Arc::new(GroupCoordinator::open(broker.clone()));
    let producer_ids = Arc::new(ProducerIdManager::from_controller(writer, broker.clone()));
    let lifecycle = Lifecycle::new(
        client.clone(),
        Registration {
            node_id,
            listeners: kafka
                .iter()
                .map(|l| (l.name.clone(), l.host.clone(), l.port))
                .collect(),
            rpc_address: args
                .advertised_rpc
                .clone()
                .unwrap_or_else(|| args.rpc_listen.to_string()),
            rack: config.broker_rack(),
        },
        incarnation,
        Duration::from_millis(config.broker_heartbeat_interval_ms()),
        applied,
    );
    Ok(BrokerParts {
        broker,
        groups,
        lifecycle,
        kafka,
        producer_ids,
    })
}

/// A bound Kafka listener and the address its clients are told.
struct KafkaListener {
    name: String,
    socket: TcpListener,
    host: String,
    port: i32,
}

async fn bind_kafka(spec: &ListenerSpec) -> anyhow::Result<KafkaListener> {
    let socket = TcpListener::bind(spec.bind).await.with_context(|| {
        format!(
            "cannot listen for Kafka clients on {} (listener {})",
            spec.bind, spec.name
        )
    })?;
    let bound = socket.local_addr()?;
    let (host, port) = match &spec.advertised {
        Some(advertised) => advertised.clone(),
        None if bound.ip().is_unspecified() => {
            tracing::warn!(
                listener = %spec.name,
                "listening on {bound}; advertising localhost — set --advertised-kafka so remote clients can connect"
            );
            ("localhost".to_string(), i32::from(bound.port()))
        }
        None => (bound.ip().to_string(), i32::from(bound.port())),
    };
    Ok(KafkaListener {
        name: spec.name.clone(),
        socket,
        host,
        port,
    })
}

/// Applies every new metadata image to the broker (logs to open or delete, group
/// partitions to load or unload), in log order, and keeps the active controller id current.
async fn apply_loop(
    controller: Arc<Controller>,
    broker: Option<(Arc<ReplicaManager>, Arc<GroupCoordinator>)>,
    applied: Arc<AtomicU64>,
    mut data_dir: DataDir,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut images = controller.subscribe();
    let mut metrics = controller.metrics();
    images.mark_changed();
    loop {
        tokio::select! {
            r = images.changed() => if r.is_err() { return },
            r = metrics.changed() => {
                if r.is_err() { return }
                if let Some((broker, _)) = &broker {
                    let leader = metrics.borrow().current_leader.and_then(|l| i32::try_from(l).ok());
                    broker.set_active_controller(leader);
                }
                continue;
            }
            _ = shutdown.changed() => return,
        }
        let state = images.borrow_and_update().clone();
        if let Err(e) = data_dir.check_cluster(&state.data.cluster_id) {
            tracing::error!("{e:#}");
        }
        let offset = state.last_applied.map_or(0, |l| l.index);
        let Some((broker, groups)) = &broker else {
            applied.store(offset, Ordering::Release);
            continue;
        };
        let (broker, groups, image) = (broker.clone(), groups.clone(), state.data.clone());
        let result = tokio::task::spawn_blocking(move || {
            broker.apply_image(offset, image.clone())?;
            groups.on_image(&image)
        })
        .await;
        match result {
            Ok(Ok(())) => applied.store(offset, Ordering::Release),
            Ok(Err(e)) => tracing::error!(offset, error = %e, "cannot apply the metadata image"),
            Err(e) => tracing::error!(offset, error = %e, "applying the metadata image panicked"),
        }
    }
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

    #[test]
    fn voters_parse_and_reject_mistakes() {
        let v = parse_voters(&["1@a:1".into(), " 2@b:2".into()]).unwrap();
        assert_eq!(v[&1].rpc_addr, "a:1");
        assert_eq!(v[&2].rpc_addr, "b:2");
        assert!(parse_voters(&["1@a:1".into(), "1@b:2".into()]).is_err());
        assert!(parse_voters(&["x@a:1".into()]).is_err());
        assert!(parse_voters(&["1a:1".into()]).is_err());
        assert!(parse_voters(&["1@a".into()]).is_err());
    }

    fn args(flags: &[&str]) -> NodeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            node: NodeArgs,
        }
        let argv = std::iter::once("runnel").chain(flags.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().node
    }

    #[test]
    fn roles_must_match_the_voters() {
        let me = "127.0.0.1:9093";
        // No flags: a one-node cluster of this node.
        let voters = quorum(&args(&[]), me).unwrap();
        assert_eq!(voters.len(), 1);
        assert_eq!(voters[&1].rpc_addr, me);
        let three = "1@127.0.0.1:9093,2@h2:9093,3@h3:9093";
        assert_eq!(quorum(&args(&["--voters", three]), me).unwrap().len(), 3);
        // A controller missing from the voters, a broker-only node among them, a voter
        // advertising another address, a broker-only node without voters.
        let err = |flags: &[&str], addr: &str| quorum(&args(flags), addr).unwrap_err().to_string();
        assert!(err(&["--node-id", "4", "--voters", three], me).contains("not in --voters"));
        assert!(err(&["--roles", "broker", "--voters", three], me).contains("controller role"));
        assert!(err(&["--voters", three], "127.0.0.1:9999").contains("--advertised-rpc"));
        assert!(err(&["--roles", "broker"], me).contains("needs --voters"));
        let learner = ["--node-id", "4", "--roles", "broker", "--voters", three];
        assert_eq!(quorum(&args(&learner), me).unwrap().len(), 3);
    }

    #[test]
    fn configs_parse_and_reject_typos() {
        assert!(parse_configs(&["num.partitions=3".into()]).is_ok());
        assert!(parse_configs(&["num.partitions".into()]).is_err());
        assert!(parse_configs(&["num.partitons=3".into()]).is_err());
    }
}
