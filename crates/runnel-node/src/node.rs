//! A node: the Raft controller (a voter, or a learner on broker-only nodes), the broker with
//! its Kafka gateway, one gRPC server for both, and the HTTP endpoint.
//!
//! Start-up order: take the data dir, start the controller (its log replays the metadata
//! image this node last applied), open the partition logs of that image, then register with
//! the active controller. Kafka clients are served once the controller has unfenced this
//! broker, that is once it has caught up with the metadata log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
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
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{parse_configs, quorum, NodeConfig, Role};
use crate::http;
use crate::identity::DataDir;
use crate::lifecycle::{BrokerState, Lifecycle, Registration};
use crate::listeners::{self, ListenerSpec};

/// How long a metadata command sent for a Kafka client may wait for the active controller.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// How long a shutdown waits for leadership to move away before stopping anyway.
const CONTROLLED_SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// The addresses a started node is bound to (with port 0 in the config, the ports picked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// Each Kafka listener's name and bound address; empty on a controller-only node.
    pub kafka: Vec<(String, SocketAddr)>,
    pub rpc: SocketAddr,
    pub http: SocketAddr,
}

/// A running node. [`Node::start`] brings it up, [`Node::serve`] lets it serve clients once
/// the cluster admits it, [`Node::shutdown`] stops it the controlled way;
/// [`Node::run_until`] does the last two around a stop signal, as `runnel node` does.
pub struct Node {
    node_id: i32,
    roles: Vec<&'static str>,
    addresses: Addresses,
    controller: Arc<Controller>,
    rpc_server: RpcServer,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    ready_tx: watch::Sender<bool>,
    broker: Option<BrokerParts>,
    /// The Kafka listeners' accept loops, once serving.
    gateway: Option<JoinHandle<()>>,
    /// The broker's background tasks.
    tasks: Vec<JoinHandle<()>>,
    apply_task: JoinHandle<()>,
    liveness_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
}

impl Node {
    /// Binds the listeners, takes the data dir, starts the controller and (on a broker) opens
    /// the partition logs and starts registering with the active controller. Kafka clients
    /// are not served yet: see [`Node::serve`].
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        let broker_config = parse_configs(&config.configs)?;
        let kafka_listeners = listeners::parse(&config.kafka_listen, &config.advertised_kafka)?;
        let rpc = TcpListener::bind(config.rpc_listen)
            .await
            .with_context(|| format!("cannot listen for node RPCs on {}", config.rpc_listen))?;
        let rpc_addr = rpc.local_addr()?;
        let advertised_rpc = match &config.advertised_rpc {
            Some(a) => a.clone(),
            None => rpc_addr.to_string(),
        };
        let voters = quorum(&config, &advertised_rpc)?;
        let is_broker = config.roles.contains(&Role::Broker);
        let roles: Vec<&'static str> = [Role::Controller, Role::Broker]
            .into_iter()
            .filter(|r| config.roles.contains(r))
            .map(Role::name)
            .collect();
        let http = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
        let http_addr = http.local_addr()?;

        let data_dir_path = config.data_dir.clone();
        let node_id = config.node_id;
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
        let liveness = BrokerLiveness::new(controller.clone(), liveness_settings(&broker_config));
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
                    &config,
                    &advertised_rpc,
                    &kafka_listeners,
                    &broker_config,
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
        let mut kafka_addrs = Vec::new();
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
                parts.broker.clone().run_role_retries(shutdown_rx.clone()),
            ));
            tasks.push(tokio::spawn(
                parts.lifecycle.clone().run(shutdown_rx.clone()),
            ));
            tasks.push(tokio::spawn(on_log_dir_failure(
                parts.broker.clone(),
                parts.lifecycle.clone(),
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(
                parts.broker.clone().run_maintenance(shutdown_rx.clone()),
            ));
            tasks.push(tokio::spawn(parts.groups.clone().run(shutdown_rx.clone())));
            for listener in &parts.kafka {
                kafka_addrs.push((listener.name.clone(), listener.socket.local_addr()?));
            }
        }
        tracing::info!(
            node_id,
            roles = ?roles,
            rpc = %advertised_rpc,
            http = %http_addr,
            data_dir = %config.data_dir.display(),
            "runnel node started; joining the cluster"
        );
        Ok(Node {
            node_id,
            roles,
            addresses: Addresses {
                kafka: kafka_addrs,
                rpc: rpc_addr,
                http: http_addr,
            },
            controller,
            rpc_server,
            shutdown_tx,
            shutdown_rx,
            ready_tx,
            broker,
            gateway: None,
            tasks,
            apply_task,
            liveness_task,
            http_task,
        })
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// `controller`, `broker` or both, in that order.
    pub fn roles(&self) -> &[&'static str] {
        &self.roles
    }

    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// Whether the node serves: what `/health` answers 200 for.
    pub fn is_ready(&self) -> bool {
        *self.ready_tx.borrow()
    }

    /// Waits until the cluster admits this node (a broker: the controller has unfenced it; a
    /// controller-only node: a Raft leader is known), then serves Kafka clients and reports
    /// ready. Bound it with a timeout: a node whose quorum never forms waits forever.
    pub async fn serve(&mut self) -> anyhow::Result<()> {
        self.admitted().await?;
        self.open().await
    }

    /// Waits until the cluster admits this node; cancel-safe.
    async fn admitted(&self) -> anyhow::Result<()> {
        match &self.broker {
            Some(parts) => {
                let mut state = parts.lifecycle.state();
                // `wait_for` hands back a read guard of the watch: drop it at once, or the
                // lifecycle could never publish another state.
                let unfenced = state
                    .wait_for(|s| *s == BrokerState::Unfenced)
                    .await
                    .is_ok();
                if !unfenced {
                    bail!("the broker stopped before the controller unfenced it");
                }
            }
            None => {
                let mut metrics = self.controller.metrics();
                let led = metrics
                    .wait_for(|m| m.current_leader.is_some())
                    .await
                    .is_ok();
                if !led {
                    bail!("the controller stopped before a leader was known");
                }
            }
        }
        Ok(())
    }

    /// Starts serving Kafka clients (a broker) and reports ready.
    async fn open(&mut self) -> anyhow::Result<()> {
        let node_id = self.node_id;
        let Some(parts) = &mut self.broker else {
            let _ = self.ready_tx.send(true);
            tracing::info!(node_id, "runnel controller ready");
            return Ok(());
        };
        if self.gateway.is_some() {
            return Err(anyhow!("node {node_id} serves already"));
        }
        let stray_broker = parts.broker.clone();
        tokio::task::spawn_blocking(move || stray_broker.remove_stray_dirs()).await?;
        let mut addresses = Vec::new();
        let limits = runnel_gateway::ConnectionLimits::from_config(parts.broker.config())?;
        let serving: Vec<_> = std::mem::take(&mut parts.kafka)
            .into_iter()
            .map(|listener| {
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
                    self.shutdown_rx.clone(),
                )
            })
            .collect();
        self.gateway = Some(tokio::spawn(async move {
            futures::future::join_all(serving).await;
        }));
        let _ = self.ready_tx.send(true);
        tracing::info!(node_id, kafka = %addresses.join(", "), "runnel node ready: serving Kafka clients");
        Ok(())
    }

    /// Serves once admitted, until `stop` completes, then shuts down. A stop before the node
    /// is admitted shuts it down at once.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let admitted = tokio::select! {
            _ = &mut stop => false,
            r = self.admitted() => r.is_ok(),
        };
        if admitted {
            self.open().await?;
            (&mut stop).await;
        }
        self.shutdown().await
    }

    /// Stops the node: a broker first hands its leaderships away (bounded by
    /// [`CONTROLLED_SHUTDOWN_LIMIT`]), then every task stops and the logs are flushed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        if let Some(parts) = &self.broker {
            parts
                .lifecycle
                .controlled_shutdown(CONTROLLED_SHUTDOWN_LIMIT)
                .await;
        }
        let _ = self.shutdown_tx.send(true);
        if let Some(g) = self.gateway {
            let _ = g.await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(parts) = self.broker {
            let flush = parts.broker;
            let epoch = parts.lifecycle.broker_epoch();
            let dir = parts.data_dir;
            // KIP-966: the marker tells the controller at the next registration that these
            // logs lost nothing; without it the broker leaves every ISR and ELR.
            tokio::task::spawn_blocking(move || {
                if !flush.flush_all() {
                    tracing::warn!("not every log was flushed: the next start counts as unclean");
                } else if epoch >= 0 {
                    if let Err(e) = DataDir::mark_clean_shutdown(&dir, epoch) {
                        tracing::warn!("{e:#}; the next start counts as unclean");
                    }
                }
            })
            .await?;
        }
        let _ = self.apply_task.await;
        let _ = self.liveness_task.await;
        let _ = self.http_task.await;
        self.rpc_server.shutdown().await;
        self.controller.shutdown().await;
        tracing::info!("stopped cleanly");
        Ok(())
    }
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
        min_insync_replicas: i32::try_from(config.min_insync_replicas(&Default::default()))
            .unwrap_or(i32::MAX),
    }
}

/// The broker half of a node.
struct BrokerParts {
    broker: Arc<ReplicaManager>,
    /// Where the clean-shutdown marker goes.
    data_dir: std::path::PathBuf,
    groups: Arc<GroupCoordinator>,
    lifecycle: Arc<Lifecycle>,
    kafka: Vec<KafkaListener>,
    producer_ids: Arc<ProducerIdManager>,
}

#[allow(clippy::too_many_arguments)] // the parts of a node started so far
async fn start_broker(
    config: &NodeConfig,
    advertised_rpc: &str,
    kafka_listeners: &[ListenerSpec],
    broker_config: &BrokerConfig,
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
    // Taken before the logs are opened: a crash from here on is an unclean shutdown.
    let previous_broker_epoch = data_dir.take_clean_shutdown()?;
    let node_id = config.node_id;
    let open_config = broker_config.clone();
    let open_writer = writer.clone();
    let incarnation = uuid::Uuid::new_v4();
    let broker = tokio::task::spawn_blocking(move || {
        ReplicaManager::open(
            &path,
            node_id,
            open_config,
            open_writer,
            offset,
            image,
            Some(incarnation),
        )
    })
    .await?
    .with_context(|| format!("cannot open data dir {}", config.data_dir.display()))?;
    let broker = Arc::new(broker);
    applied.store(offset, Ordering::Release);
    let groups = GroupCoordinator::open(broker.clone());
    let producer_ids = Arc::new(ProducerIdManager::from_controller(writer, broker.clone()));
    let lifecycle = Lifecycle::new(
        client.clone(),
        Registration {
            node_id,
            listeners: kafka
                .iter()
                .map(|l| (l.name.clone(), l.host.clone(), l.port))
                .collect(),
            rpc_address: advertised_rpc.to_owned(),
            rack: broker_config.broker_rack(),
            directory_id: data_dir.directory_id(),
            previous_broker_epoch,
        },
        incarnation,
        Duration::from_millis(broker_config.broker_heartbeat_interval_ms()),
        applied,
    );
    Ok(BrokerParts {
        broker,
        data_dir: data_dir.path().to_path_buf(),
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

/// When the data dir goes offline after a disk error: stop leading and following every
/// replica in it and report it in the heartbeats, so the controller fences this broker (its
/// leaderships move, it leaves the ISRs). Kafka shuts a broker down when its last log dir
/// fails; this one stays up, fenced (as `runnel cluster status` shows), answering
/// KAFKA_STORAGE_ERROR for its partitions, until an operator restarts it.
async fn on_log_dir_failure(
    broker: Arc<ReplicaManager>,
    lifecycle: Arc<Lifecycle>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut offline = broker.log_dir().watch();
    loop {
        if offline.borrow_and_update().is_some() {
            lifecycle.report_log_dir_offline();
            let stop = broker.clone();
            let _ = tokio::task::spawn_blocking(move || stop.stop_serving_offline_dir()).await;
            return;
        }
        tokio::select! {
            changed = offline.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
