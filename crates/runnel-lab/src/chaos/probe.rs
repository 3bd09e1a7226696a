//! What chaos asks the nodes over HTTP: `GET /v1/cluster`, and whether the cluster has settled.

use std::net::SocketAddr;
use std::time::Duration;

use runnel_node::http::ClusterView;

use crate::cli::{http_agent, url};

/// Whether all `nodes` brokers are registered and unfenced, a controller is known and every
/// partition has a leader.
pub(crate) fn is_settled(view: &ClusterView, nodes: usize) -> bool {
    view.controller.leader_id.is_some()
        && view.brokers.len() == nodes
        && view.brokers.iter().all(|b| !b.fenced)
        && view.offline_partitions.is_empty()
}

/// `GET /v1/cluster` of one node; `None` when it does not answer in time or not with JSON.
pub(crate) async fn cluster_view(http: SocketAddr) -> Option<ClusterView> {
    tokio::task::spawn_blocking(move || {
        let response = http_agent(Duration::from_secs(2))
            .get(&url(&http.to_string(), "/v1/cluster"))
            .call()
            .ok()?;
        if response.status().as_u16() != 200 {
            return None;
        }
        response.into_body().read_json::<ClusterView>().ok()
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: serde_json::Value) -> ClusterView {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn settled_needs_every_broker_unfenced_a_controller_and_leaders() {
        let brokers = |fenced: bool| serde_json::json!([{"id": 1, "fenced": false}, {"id": 2, "fenced": fenced}]);
        let ok = view(serde_json::json!({
            "controller": {"leader_id": 1}, "brokers": brokers(false), "offline_partitions": [],
        }));
        assert!(is_settled(&ok, 2));
        assert!(!is_settled(&ok, 3));
        assert_eq!(ok.controller.leader_id, Some(1));
        let fenced =
            view(serde_json::json!({"controller": {"leader_id": 1}, "brokers": brokers(true)}));
        assert!(!is_settled(&fenced, 2));
        let offline = view(serde_json::json!({
            "controller": {"leader_id": 1}, "brokers": brokers(false),
            "offline_partitions": [{"topic": "t", "partition": 0}],
        }));
        assert!(!is_settled(&offline, 2));
        let leaderless = view(serde_json::json!({"brokers": brokers(false)}));
        assert!(!is_settled(&leaderless, 2));
        assert_eq!(leaderless.controller.leader_id, None);
    }
}
