//! Three controllers in one process over the real gRPC transport on 127.0.0.1: the lowest id
//! initializes the cluster, a leader is elected, commands written through it are applied
//! alike everywhere, a new leader takes over when the leader stops, and the stopped node
//! catches up after a restart from its data directory. Every node also serves
//! ControllerService, so a [`ControllerClient`] on a follower reaches the active controller,
//! and brokers registered through it are unfenced by heartbeats and fenced when those stop.
//! Every wait is bounded; every controller is shut down at the end, also when an assertion
//! fails.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use runnel_controller::command::CommandResult;
use runnel_controller::command::ControllerCommand;
use std::sync::Arc;

use runnel_controller::client::ControllerClient;
use runnel_controller::liveness::{BrokerLiveness, LivenessSettings};
use runnel_controller::raft::Controller;
use runnel_controller::raft::WriteError;
use runnel_controller::rpc_server::RpcServer;
use runnel_controller::service::ControllerGrpcService;
use runnel_controller::store::RaftNode;
use runnel_rpc::controller::v1 as pb;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::time::Instant;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    voters: BTreeMap<u64, RaftNode>,
    dirs: BTreeMap<u64, TempDir>,
    nodes: BTreeMap<u64, Arc<Controller>>,
    servers: BTreeMap<u64, (RpcServer, tokio::sync::watch::Sender<bool>)>,
}

/// Short sessions so the fencing part of the scenario takes seconds.
fn settings() -> LivenessSettings {
    LivenessSettings {
        session_timeout: Duration::from_millis(1500),
        heartbeat_interval: Duration::from_millis(200),
        auto_rebalance: true,
        imbalance_check_interval: Duration::from_millis(500),
        min_insync_replicas: 1,
    }
}

impl Cluster {
    async fn start(n: u64) -> Cluster {
        let mut listeners = BTreeMap::new();
        let mut voters = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let rpc_addr = listener.local_addr().unwrap().to_string();
            voters.insert(id, RaftNode { rpc_addr });
            listeners.insert(id, listener);
        }
        let mut cluster = Cluster {
            voters,
            dirs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            servers: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            let dir = tempfile::tempdir().expect("tempdir");
            cluster.dirs.insert(id, dir);
            cluster.start_node(id, listener).await;
        }
        cluster
    }

    async fn start_node(&mut self, id: u64, listener: TcpListener) {
        let dir = self.dirs[&id].path().join("controller");
        let controller = Controller::start(id, &dir, self.voters.clone())
            .await
            .unwrap_or_else(|e| panic!("start controller {id}: {e}"));
        let controller = Arc::new(controller);
        let liveness = BrokerLiveness::new(controller.clone(), settings());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(liveness.clone().run(stopped));
        let routes = tonic::service::Routes::new(controller.raft_service())
            .add_service(ControllerGrpcService::new(liveness).into_server());
        let server = RpcServer::start(listener, routes);
        self.servers.insert(id, (server, stop));
        self.nodes.insert(id, controller);
    }

    /// Restarts a stopped node on its old address (peers know it from the membership).
    async fn restart(&mut self, id: u64) {
        let addr = self.voters[&id].rpc_addr.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(&addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebind {addr}: {e}"),
            }
        };
        self.start_node(id, listener).await;
    }

    async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("node running");
        if let Some((server, stop)) = self.servers.remove(&id) {
            let _ = stop.send(true);
            server.shutdown().await;
        }
        tokio::time::timeout(WAIT, node.shutdown())
            .await
            .expect("shutdown within bound");
    }

    async fn shutdown_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    /// A client on node `id`, as a broker there uses it.
    fn client(&self, id: u64) -> ControllerClient {
        let voters = self.voters.values().map(|n| n.rpc_addr.clone()).collect();
        ControllerClient::new(id as i32, self.nodes[&id].clone(), voters)
    }

    /// Waits until every running node names the same running leader, which knows it leads.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders: Vec<_> = self
                .nodes
                .values()
                .map(|n| n.current_leader().map(|(id, _)| id))
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader))
                    && self.nodes.get(leader).is_some_and(|n| n.is_leader())
                {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {WAIT:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes through the leader, retrying while leadership moves.
    async fn write(&self, cmd: ControllerCommand) -> CommandResult {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader().await;
            match self.nodes[&leader].write(cmd.clone()).await {
                Ok(committed) => {
                    return committed
                        .result
                        .unwrap_or_else(|e| panic!("{cmd:?} refused: {e}"))
                }
                Err(e @ WriteError::NotLeader { .. }) if Instant::now() < deadline => {
                    eprintln!("write {cmd:?}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("write {cmd:?}: {e}"),
            }
        }
    }

    /// Waits until every running node has applied what the leader has, and checks that
    /// they all hold the same image.
    async fn converged(&self) {
        let leader = self.leader().await;
        let target = self.nodes[&leader].subscribe().borrow().clone();
        for (id, node) in &self.nodes {
            let mut rx = node.subscribe();
            tokio::time::timeout(WAIT, rx.wait_for(|s| s.last_applied >= target.last_applied))
                .await
                .unwrap_or_else(|_| panic!("node {id} did not catch up within {WAIT:?}"))
                .expect("state machine alive");
            let applied = rx.borrow().clone();
            assert_eq!(applied.last_applied, target.last_applied, "node {id}");
            assert_eq!(applied.data, target.data, "node {id}'s image differs");
        }
    }
}

fn register(id: i32) -> ControllerCommand {
    ControllerCommand::RegisterBroker {
        id,
        incarnation: Uuid::from_u128(0x1000 + id as u128),
        host: "127.0.0.1".to_owned(),
        port: 9092 + id,
        listeners: Vec::new(),
        rpc_address: format!("127.0.0.1:{}", 9192 + id),
        rack: None,
        directory_id: None,
        previous_broker_epoch: None,
    }
}

fn create_topic(name: &str, id: u128) -> ControllerCommand {
    ControllerCommand::CreateTopic {
        name: name.to_owned(),
        id: Uuid::from_u128(id),
        partitions: 1,
        replication_factor: 1,
        assignment: None,
        configs: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_controllers_elect_replicate_fail_over_and_catch_up() {
    let mut cluster = Cluster::start(3).await;
    // Run the scenario, then shut every node down whether it passed, panicked or hung.
    let outcome = AssertUnwindSafe(tokio::time::timeout(
        Duration::from_secs(90),
        scenario(&mut cluster),
    ))
    .catch_unwind()
    .await;
    cluster.shutdown_all().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("scenario did not finish within 90 s"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn scenario(cluster: &mut Cluster) {
    let first = cluster.leader().await;

    let r = cluster
        .write(ControllerCommand::InitCluster {
            cluster_id: "runnel-test-cluster-01".to_owned(),
        })
        .await;
    assert!(
        matches!(r, CommandResult::ClusterInitialized { .. }),
        "{r:?}"
    );
    let r = cluster.write(register(1)).await;
    assert!(
        matches!(r, CommandResult::BrokerRegistered { broker_id: 1, .. }),
        "{r:?}"
    );
    let r = cluster
        .write(ControllerCommand::UnfenceBroker { id: 1 })
        .await;
    assert!(
        matches!(r, CommandResult::BrokerUnfenced { broker_id: 1, .. }),
        "{r:?}"
    );
    let r = cluster.write(create_topic("events", 1)).await;
    assert!(matches!(r, CommandResult::TopicCreated(_)), "{r:?}");
    cluster.converged().await;
    {
        let image = cluster.nodes[&first].subscribe().borrow().data.clone();
        assert_eq!(image.cluster_id, "runnel-test-cluster-01");
        assert!(image.brokers.contains_key(&1));
        assert!(image.topics.contains_key("events"));
    }

    // A refused command is committed (a no-op everywhere) and answered with the refusal.
    let leader = cluster.leader().await;
    let committed = cluster.nodes[&leader]
        .write(create_topic("events", 2))
        .await
        .expect("committed");
    assert!(committed.result.is_err(), "{:?}", committed.result);

    // A follower refuses writes and names the leader.
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    match cluster.nodes[&follower].write(register(9)).await {
        Err(WriteError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr, Some(cluster.voters[&leader].rpc_addr.clone()));
        }
        other => panic!("follower write: {other:?}"),
    }

    // A client on a follower reaches the leader through ControllerService.
    let via_follower = cluster
        .client(follower)
        .write(&create_topic("forwarded", 4), WAIT)
        .await
        .expect("write through a follower");
    assert!(
        matches!(via_follower.result, Ok(CommandResult::TopicCreated(_))),
        "{:?}",
        via_follower.result
    );
    let mut applied = cluster.nodes[&follower].subscribe();
    tokio::time::timeout(
        WAIT,
        applied.wait_for(|s| {
            s.last_applied
                .is_some_and(|l| l.index >= via_follower.offset)
        }),
    )
    .await
    .expect("the follower applies its own write")
    .unwrap();
    assert!(applied.borrow().data.topics.contains_key("forwarded"));

    // Broker 5 registers through the follower and is unfenced by its heartbeats, then fenced
    // once they stop.
    broker_session(cluster, follower).await;

    // The leader stops; the other two elect a new one and keep accepting commands.
    cluster.stop(leader).await;
    let second = cluster.leader().await;
    assert_ne!(second, leader);
    let r = cluster.write(register(2)).await;
    assert!(
        matches!(r, CommandResult::BrokerRegistered { broker_id: 2, .. }),
        "{r:?}"
    );
    // (Brokers without heartbeats are fenced by now, so change a topic instead of creating one.)
    let r = cluster
        .write(ControllerCommand::AlterConfigs {
            topic: "events".to_owned(),
            configs: BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
        })
        .await;
    assert!(matches!(r, CommandResult::ConfigsAltered { .. }), "{r:?}");
    cluster.converged().await;

    // The old leader restarts from its data directory and catches up.
    cluster.restart(leader).await;
    cluster.converged().await;
    let image = cluster.nodes[&leader].subscribe().borrow().data.clone();
    assert!(image.brokers.contains_key(&2));
    assert_eq!(image.topics["events"].configs["retention.ms"], "1000");
    assert_eq!(cluster.nodes.len(), 3);
}

async fn broker_session(cluster: &Cluster, via: u64) {
    let client = cluster.client(via);
    let registered = client
        .register(
            pb::RegisterBrokerRequest {
                node_id: 5,
                incarnation_id: Uuid::from_u128(55).as_bytes().to_vec().into(),
                kafka_host: "127.0.0.1".into(),
                kafka_port: 9599,
                // Nothing listens there: the leader adds it as a learner it cannot reach.
                rpc_address: "127.0.0.1:1".into(),
                rack: None,
                cluster_id: String::new(),
                listeners: Vec::new(),
                directory_id: None,
                previous_broker_epoch: None,
            },
            WAIT,
        )
        .await
        .expect("register");
    assert_eq!(registered.error_code, 0, "{}", registered.error_message);
    let epoch = registered.broker_epoch;
    let deadline = Instant::now() + WAIT;
    loop {
        let applied = cluster.nodes[&via]
            .subscribe()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        let beat = client
            .heartbeat(
                pb::BrokerHeartbeatRequest {
                    node_id: 5,
                    broker_epoch: epoch,
                    current_metadata_offset: applied as i64,
                    wants_fence: false,
                    wants_shutdown: false,
                    log_dir_offline: false,
                },
                WAIT,
            )
            .await
            .expect("heartbeat");
        assert_eq!(beat.error_code, 0);
        if !beat.is_fenced {
            break;
        }
        assert!(Instant::now() < deadline, "broker 5 never unfenced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = cluster.leader().await;
    let mut image = cluster.nodes[&leader].subscribe();
    tokio::time::timeout(
        WAIT,
        image.wait_for(|s| s.data.brokers.get(&5).is_some_and(|b| !b.fenced)),
    )
    .await
    .expect("broker 5 unfenced in the image")
    .unwrap();
    // No more heartbeats: fenced after the session timeout.
    tokio::time::timeout(
        WAIT,
        image.wait_for(|s| s.data.brokers.get(&5).is_some_and(|b| b.fenced)),
    )
    .await
    .expect("broker 5 fenced once its heartbeats stopped")
    .unwrap();
    // A heartbeat with a stale epoch is told to register again.
    let stale = client
        .heartbeat(
            pb::BrokerHeartbeatRequest {
                node_id: 5,
                broker_epoch: epoch + 100,
                current_metadata_offset: 0,
                wants_fence: false,
                wants_shutdown: false,
                log_dir_offline: false,
            },
            WAIT,
        )
        .await
        .expect("heartbeat");
    assert_eq!(stale.error_code, 77);
}
