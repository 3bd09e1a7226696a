//! The node's HTTP endpoint: `GET /health` (200 once the node serves clients, 503 before) and
//! `GET /v1/cluster` (this node's view of the quorum, the brokers and unhealthy partitions;
//! what `runnel cluster status` shows). The answers' types are public: clients parse them.
//!
//! Connections are served with hyper directly rather than `axum::serve`, for their limits: at
//! most [`MAX_CONNECTIONS`] at once, request headers within [`MAX_HEADER_BYTES`] and read in
//! full within [`HEADER_READ_TIMEOUT`] (also the idle time between keep-alive requests), and
//! request bodies, which no route reads, capped at [`MAX_BODY_BYTES`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use runnel_controller::raft::Controller;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// HTTP connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// A request's headers must arrive in full within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The largest request body a route may read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long shutdown waits for a connection's request in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// What the endpoint reads.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) node_id: i32,
    pub(crate) roles: Vec<&'static str>,
    pub(crate) controller: Arc<Controller>,
    /// True once the node does its job: a broker registered and unfenced, a controller-only
    /// node part of a quorum with a leader.
    pub(crate) ready: watch::Receiver<bool>,
}

/// `PUT /debug/failpoints/<name>` with the action as the body (`return(eio)`, `sleep(200)`,
/// `off`, ...): only in `runnel-faulty` (docs/robustness.md).
#[cfg(feature = "failpoints")]
async fn set_failpoint(
    axum::extract::Path(name): axum::extract::Path<String>,
    action: String,
) -> impl IntoResponse {
    match fail::cfg(name.clone(), action.trim()) {
        Ok(()) => {
            tracing::warn!(failpoint = name, action = action.trim(), "failpoint set");
            (StatusCode::OK, String::new())
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

#[cfg(feature = "failpoints")]
async fn remove_failpoint(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> impl IntoResponse {
    fail::remove(&name);
    tracing::warn!(failpoint = name, "failpoint removed");
    StatusCode::OK
}

pub(crate) async fn serve(
    listener: TcpListener,
    state: HttpState,
    mut shutdown: watch::Receiver<bool>,
) {
    let health_state = state.clone();
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(move || {
                let state = health_state.clone();
                async move { health(&state) }
            }),
        )
        .route(
            "/v1/cluster",
            axum::routing::get(move || {
                let state = state.clone();
                async move { axum::Json(ClusterView::of(&state)) }
            }),
        );
    #[cfg(feature = "failpoints")]
    let app = app.route(
        "/debug/failpoints/{name}",
        axum::routing::put(set_failpoint).delete(remove_failpoint),
    );
    let app = app.layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = shutdown.changed() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
                }
            }
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

fn health(state: &HttpState) -> axum::response::Response {
    let ready = *state.ready.borrow();
    let (code, status) = if ready {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    };
    let body = HealthView {
        status: status.to_owned(),
        node_id: state.node_id,
    };
    (code, axum::Json(body)).into_response()
}

/// The body of `GET /health`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthView {
    /// `ok` (HTTP 200) or `starting` (HTTP 503).
    pub status: String,
    pub node_id: i32,
}

// The types of `GET /v1/cluster`. Every field has a default so a client still reads the
// answer of a node with fewer fields (an older or newer version).

/// The body of `GET /v1/cluster`: one node's view of the cluster.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct ClusterView {
    /// Always set by a node; optional for answers that lack it.
    pub node_id: Option<i32>,
    /// `controller`, `broker` or both.
    pub roles: Vec<String>,
    /// Empty until the cluster is initialized.
    pub cluster_id: String,
    pub controller: ControllerView,
    /// Every registered broker, as this node's metadata image has them.
    pub brokers: Vec<BrokerView>,
    pub topics: u64,
    pub partitions: u64,
    /// Partitions without a leader.
    pub offline_partitions: Vec<PartitionView>,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated_partitions: Vec<PartitionView>,
}

/// The Raft side of a node's view.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct ControllerView {
    /// openraft's state name: `Leader`, `Follower`, `Candidate`, `Learner`, ...
    pub raft_state: String,
    pub term: u64,
    pub leader_id: Option<i32>,
    /// Index of the last metadata log entry applied.
    pub last_applied: Option<u64>,
    pub voters: Vec<Member>,
    pub learners: Vec<Member>,
}

/// A member of the Raft group.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct Member {
    pub id: i32,
    pub rpc_address: String,
}

/// A registered broker.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct BrokerView {
    pub id: i32,
    /// The first listener's advertised address.
    pub host: String,
    pub port: i32,
    pub rpc_address: String,
    pub rack: Option<String>,
    pub fenced: bool,
    pub epoch: i64,
    /// Every named listener; empty for a broker registered before they existed.
    pub listeners: Vec<ListenerView>,
}

/// One advertised Kafka listener of a broker.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct ListenerView {
    pub name: String,
    pub host: String,
    pub port: i32,
}

/// An unhealthy partition.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// -1 when it has none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl BrokerView {
    /// The Kafka addresses clients are told: `host:port`, or `NAME=host:port, ...` for a
    /// broker with several named listeners.
    pub fn kafka(&self) -> String {
        match self.listeners.as_slice() {
            [] | [_] => format!("{}:{}", self.host, self.port),
            many => many
                .iter()
                .map(|l| format!("{}={}:{}", l.name, l.host, l.port))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Raft ids are node ids, which are `i32`s; -1 stands for one that is not (never written).
fn node_id(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(-1)
}

impl ClusterView {
    fn of(state: &HttpState) -> ClusterView {
        let metrics = state.controller.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let member = |id: u64| Member {
            id: node_id(id),
            rpc_address: membership
                .get_node(&id)
                .map(|n| n.rpc_addr.clone())
                .unwrap_or_default(),
        };
        let voters = membership.voter_ids().map(member).collect();
        let learners = membership.learner_ids().map(member).collect();
        let image = state.controller.subscribe().borrow().clone().data;
        let brokers = image
            .brokers
            .values()
            .map(|b| BrokerView {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                rpc_address: b.rpc_address.clone(),
                rack: b.rack.clone(),
                fenced: b.fenced,
                epoch: b.epoch,
                listeners: b
                    .listeners
                    .iter()
                    .map(|l| ListenerView {
                        name: l.name.clone(),
                        host: l.host.clone(),
                        port: l.port,
                    })
                    .collect(),
            })
            .collect();
        let mut offline = Vec::new();
        let mut under_replicated = Vec::new();
        let mut partitions = 0;
        for topic in image.topics.values() {
            for p in &topic.partitions {
                partitions += 1;
                let entry = || PartitionView {
                    topic: topic.name.clone(),
                    partition: p.index,
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                };
                if !p.has_leader() {
                    offline.push(entry());
                } else if p.is_under_replicated() {
                    under_replicated.push(entry());
                }
            }
        }
        ClusterView {
            node_id: Some(state.node_id),
            roles: state.roles.iter().map(|r| (*r).to_owned()).collect(),
            cluster_id: image.cluster_id.clone(),
            controller: ControllerView {
                raft_state: format!("{:?}", metrics.state),
                term: metrics.current_term,
                leader_id: metrics.current_leader.map(node_id),
                last_applied: metrics.last_applied.map(|l| l.index),
                voters,
                learners,
            },
            brokers,
            topics: image.topics.len() as u64,
            partitions,
            offline_partitions: offline,
            under_replicated_partitions: under_replicated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterView {
        let partition = PartitionView {
            topic: "orders".into(),
            partition: 1,
            leader: -1,
            replicas: vec![2, 1],
            isr: vec![],
        };
        ClusterView {
            node_id: Some(2),
            roles: vec!["controller".into(), "broker".into()],
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            controller: ControllerView {
                raft_state: "Leader".into(),
                term: 3,
                leader_id: Some(2),
                last_applied: Some(42),
                voters: vec![Member {
                    id: 2,
                    rpc_address: "127.0.0.1:9193".into(),
                }],
                learners: vec![],
            },
            brokers: vec![BrokerView {
                id: 2,
                host: "runnel-2".into(),
                port: 9092,
                rpc_address: "runnel-2:9093".into(),
                rack: Some("a".into()),
                fenced: false,
                epoch: 7,
                listeners: vec![ListenerView {
                    name: "PLAINTEXT".into(),
                    host: "runnel-2".into(),
                    port: 9092,
                }],
            }],
            topics: 1,
            partitions: 2,
            offline_partitions: vec![partition.clone()],
            under_replicated_partitions: vec![PartitionView {
                leader: 1,
                isr: vec![1],
                ..partition
            }],
        }
    }

    #[test]
    fn cluster_view_round_trips_through_json() {
        let view = sample();
        let json = serde_json::to_string(&view).unwrap();
        assert_eq!(serde_json::from_str::<ClusterView>(&json).unwrap(), view);
        // The field names clients (and the Python tests) read.
        let value = serde_json::to_value(&view).unwrap();
        assert_eq!(value["controller"]["leader_id"], 2);
        assert_eq!(
            value["controller"]["voters"][0]["rpc_address"],
            "127.0.0.1:9193"
        );
        assert_eq!(value["brokers"][0]["listeners"][0]["name"], "PLAINTEXT");
        assert_eq!(value["offline_partitions"][0]["leader"], -1);
        assert_eq!(value["under_replicated_partitions"][0]["isr"][0], 1);
        assert_eq!(value["roles"][1], "broker");
        let health = HealthView {
            status: "ok".into(),
            node_id: 2,
        };
        let json = serde_json::to_string(&health).unwrap();
        assert_eq!(json, r#"{"status":"ok","node_id":2}"#);
        assert_eq!(serde_json::from_str::<HealthView>(&json).unwrap(), health);
    }

    #[test]
    fn sparse_answers_parse_with_defaults() {
        let view: ClusterView = serde_json::from_str(
            r#"{"node_id": 7, "controller": {"raft_state": "Candidate", "term": 9, "leader_id": null}}"#,
        )
        .unwrap();
        assert_eq!(view.node_id, Some(7));
        assert_eq!(view.controller.term, 9);
        assert!(view.brokers.is_empty());
    }

    #[test]
    fn brokers_with_named_listeners_show_each_address() {
        let listener = |name: &str, host: &str, port| ListenerView {
            name: name.into(),
            host: host.into(),
            port,
        };
        let mut b = BrokerView {
            host: "runnel-1".into(),
            port: 9092,
            ..BrokerView::default()
        };
        assert_eq!(b.kafka(), "runnel-1:9092");
        b.listeners = vec![
            listener("INTERNAL", "runnel-1", 9092),
            listener("EXTERNAL", "127.0.0.1", 19092),
        ];
        assert_eq!(
            b.kafka(),
            "INTERNAL=runnel-1:9092, EXTERNAL=127.0.0.1:19092"
        );
    }
}
