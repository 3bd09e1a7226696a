//! The node's HTTP endpoint: `GET /health` (200 once the node serves clients, 503 before) and
//! `GET /v1/cluster` (this node's view of the quorum, the brokers and unhealthy partitions;
//! what `runnel cluster status` shows).
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
use serde_json::{json, Value};
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
                async move { axum::Json(cluster_view(&state)) }
            }),
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
    (
        code,
        axum::Json(json!({ "status": status, "node_id": state.node_id })),
    )
        .into_response()
}

fn cluster_view(state: &HttpState) -> Value {
    let metrics = state.controller.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let node = |id: u64| {
        json!({
            "id": id,
            "rpc_address": membership.get_node(&id).map(|n| n.rpc_addr.clone()).unwrap_or_default(),
        })
    };
    let voters: Vec<Value> = membership.voter_ids().map(node).collect();
    let learners: Vec<Value> = membership.learner_ids().map(node).collect();
    let applied = state.controller.subscribe().borrow().clone();
    let image = applied.data;
    let brokers: Vec<Value> = image
        .brokers
        .values()
        .map(|b| {
            json!({
                "id": b.id, "host": b.host, "port": b.port, "rpc_address": b.rpc_address,
                "rack": b.rack, "fenced": b.fenced, "epoch": b.epoch,
                "listeners": b.listeners,
            })
        })
        .collect();
    let mut offline = Vec::new();
    let mut under_replicated = Vec::new();
    let mut partitions = 0;
    for topic in image.topics.values() {
        for p in &topic.partitions {
            partitions += 1;
            let entry = || {
                json!({
                    "topic": topic.name, "partition": p.index, "leader": p.leader,
                    "replicas": p.replicas, "isr": p.isr,
                })
            };
            if !p.has_leader() {
                offline.push(entry());
            } else if p.is_under_replicated() {
                under_replicated.push(entry());
            }
        }
    }
    json!({
        "node_id": state.node_id,
        "roles": state.roles,
        "cluster_id": image.cluster_id,
        "controller": {
            "raft_state": format!("{:?}", metrics.state),
            "term": metrics.current_term,
            "leader_id": metrics.current_leader,
            "last_applied": metrics.last_applied.map(|l| l.index),
            "voters": voters,
            "learners": learners,
        },
        "brokers": brokers,
        "topics": image.topics.len(),
        "partitions": partitions,
        "offline_partitions": offline,
        "under_replicated_partitions": under_replicated,
    })
}
