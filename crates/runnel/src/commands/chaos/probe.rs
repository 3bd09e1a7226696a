//! What chaos asks the nodes over HTTP: the parts of `GET /v1/cluster` it acts on.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::commands::cluster::{http_agent, url};

/// One node's view of the cluster; fields it lacks default to empty.
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ClusterView {
    controller: ControllerPart,
    brokers: Vec<BrokerPart>,
    offline_partitions: Vec<serde_json::Value>,
}

#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(default)]
struct ControllerPart {
    leader_id: Option<i32>,
}

#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(default)]
struct BrokerPart {
    id: i32,
    fenced: bool,
}

impl ClusterView {
    /// The active controller, if this node knows one.
    pub(crate) fn controller(&self) -> Option<i32> {
        self.controller.leader_id
    }

    /// Whether all `nodes` brokers are registered and unfenced, a controller is known and
    /// every partition has a leader.
    pub(crate) fn is_settled(&self, nodes: usize) -> bool {
        self.controller.leader_id.is_some()
            && self.brokers.len() == nodes
            && self.brokers.iter().all(|b| !b.fenced)
            && self.offline_partitions.is_empty()
    }
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
        assert!(ok.is_settled(2));
        assert!(!ok.is_settled(3));
        assert_eq!(ok.controller(), Some(1));
        let fenced =
            view(serde_json::json!({"controller": {"leader_id": 1}, "brokers": brokers(true)}));
        assert!(!fenced.is_settled(2));
        let offline = view(serde_json::json!({
            "controller": {"leader_id": 1}, "brokers": brokers(false),
            "offline_partitions": [{"topic": "t", "partition": 0}],
        }));
        assert!(!offline.is_settled(2));
        let leaderless = view(serde_json::json!({"brokers": brokers(false)}));
        assert!(!leaderless.is_settled(2));
        assert_eq!(leaderless.controller(), None);
    }
}
