//! A single node started in process on ephemeral loopback ports: it serves `/health`,
//! `/v1/cluster` and Kafka clients, and shuts down cleanly.

use std::net::SocketAddr;
use std::time::Duration;

use runnel_node::http::{ClusterView, HealthView};
use runnel_node::{Node, NodeConfig, Role};

/// Bounds every wait, so a broken node fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `GET path` of the node's HTTP endpoint: status code and body.
async fn get(http: SocketAddr, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .proxy(None)
                .http_status_as_error(false)
                .build(),
        );
        let mut response = agent
            .get(&format!("http://{http}{path}"))
            .call()
            .expect("the HTTP endpoint answers");
        let code = response.status().as_u16();
        (code, response.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_serves_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        node_id: 1,
        data_dir: dir.path().join("node-1"),
        kafka_listen: vec!["127.0.0.1:0".to_owned()],
        rpc_listen: loopback(),
        http_listen: loopback(),
        roles: vec![Role::Controller, Role::Broker],
        ..NodeConfig::default()
    };
    let mut node = Node::start(config).await.expect("the node starts");
    let addresses = node.addresses().clone();
    assert_ne!(
        addresses.http.port(),
        0,
        "the bound port, not the configured 0"
    );
    let [(name, kafka)] = addresses.kafka.as_slice() else {
        panic!("one Kafka listener: {:?}", addresses.kafka);
    };
    assert_eq!(name, "PLAINTEXT");
    assert_eq!(node.roles(), ["controller", "broker"]);

    // Not serving yet: /health says so.
    if !node.is_ready() {
        let (code, body) = get(addresses.http, "/health").await;
        let health: HealthView = serde_json::from_str(&body).unwrap();
        assert_eq!((code, health.status.as_str()), (503, "starting"));
    }

    tokio::time::timeout(PATIENCE, node.serve())
        .await
        .expect("the node is admitted within the patience")
        .expect("the node serves");
    assert!(node.is_ready());

    let (code, body) = get(addresses.http, "/health").await;
    assert_eq!(code, 200, "{body}");
    let health: HealthView = serde_json::from_str(&body).unwrap();
    assert_eq!(health.node_id, 1);

    let (code, body) = get(addresses.http, "/v1/cluster").await;
    assert_eq!(code, 200, "{body}");
    let view: ClusterView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.node_id, Some(1));
    assert_eq!(view.controller.leader_id, Some(1));
    assert_eq!(view.controller.voters.len(), 1);
    assert_eq!(
        view.controller.voters[0].rpc_address,
        addresses.rpc.to_string()
    );
    assert_eq!(view.brokers.len(), 1);
    assert!(!view.brokers[0].fenced);
    assert_eq!(view.brokers[0].port, i32::from(kafka.port()));
    assert!(!view.cluster_id.is_empty());

    // A Kafka client sees the node as the cluster's only broker.
    let client = tokio::time::timeout(PATIENCE, runnel_client::Client::connect(&kafka.to_string()))
        .await
        .expect("Metadata answers within the patience")
        .expect("a Kafka client connects");
    let brokers: Vec<_> = client.brokers().map(|b| (b.node_id, b.addr())).collect();
    assert_eq!(brokers, [(1, kafka.to_string())]);
    assert_eq!(client.cluster_id(), Some(view.cluster_id.as_str()));
    drop(client);

    tokio::time::timeout(PATIENCE, node.shutdown())
        .await
        .expect("the node stops within the patience")
        .expect("the node stops cleanly");
    // Stopped: nothing listens any more, and the data dir holds the node's identity.
    assert!(tokio::net::TcpStream::connect(addresses.http)
        .await
        .is_err());
    assert!(dir.path().join("node-1").join("meta.properties").exists());
}
