//! A running docker-compose cluster of Runnel containers (deploy/docker-compose.yml), driven
//! through the `docker` CLI for `runnel chaos --target compose` and the experiments: find the
//! containers and their published ports, kill, start, pause, restart, and cut one off the
//! cluster network and back.
//!
//! The compose file's contract: service `runnel-<id>` per node, container port 9094 the
//! EXTERNAL Kafka listener and 9644 HTTP, both published on the host; the network `cluster`
//! carries node-to-node traffic, and each node also sits alone on an `edge-<id>` network that
//! carries only its published ports, so a node cut off `cluster` still serves host clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;
use tokio::process::Command;

use crate::local_cluster::unhealthy_nodes;

/// Container ports of the compose file.
const KAFKA_EXTERNAL_PORT: &str = "9094/tcp";
const HTTP_PORT: &str = "9644/tcp";
/// Bound on one docker command; `docker restart` includes the node's graceful stop.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `docker restart` lets a node shut down (moving leadership away) before SIGKILL.
const RESTART_GRACE_S: u32 = 10;

/// One node's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComposeNode {
    pub(crate) id: u16,
    pub(crate) container: String,
    pub(crate) name: String,
    /// The EXTERNAL Kafka listener and HTTP endpoint as published on the host.
    pub(crate) kafka: SocketAddr,
    pub(crate) http: SocketAddr,
}

pub(crate) struct ComposeCluster {
    project: String,
    network: String,
    nodes: Vec<ComposeNode>,
    /// Nodes cut off the cluster network, with the DNS aliases to give back on reconnect.
    isolated: BTreeMap<u16, Vec<String>>,
    paused: Vec<u16>,
}

impl ComposeCluster {
    /// Finds the containers of compose project `project`.
    pub(crate) async fn discover(project: &str) -> anyhow::Result<Self> {
        let filter = format!("label=com.docker.compose.project={project}");
        let ids = docker(&["ps", "-aq", "--filter", &filter]).await?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            bail!(
                "compose project '{project}' has no containers; start it with `make cluster-up` \
                 (or docker-compose -p {project} -f deploy/docker-compose.yml up -d)"
            );
        }
        let mut args = vec!["inspect"];
        args.extend(&ids);
        let inspected = docker(&args).await?;
        let network = format!("{project}_cluster");
        let nodes = parse_nodes(&inspected, &network)
            .with_context(|| format!("unexpected containers in compose project '{project}'"))?;
        Ok(Self {
            project: project.to_owned(),
            network,
            nodes,
            isolated: BTreeMap::new(),
            paused: Vec::new(),
        })
    }

    pub(crate) fn project(&self) -> &str {
        &self.project
    }

    pub(crate) fn nodes(&self) -> &[ComposeNode] {
        &self.nodes
    }

    pub(crate) fn ids(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The host's bootstrap list: every node's published Kafka port.
    pub(crate) fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.kafka.to_string()).collect();
        addrs.join(",")
    }

    fn node(&self, id: u16) -> anyhow::Result<&ComposeNode> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("compose project '{}' has no node {id}", self.project))
    }

    /// Whether node `id`'s container runs and is not paused.
    pub(crate) async fn is_running(&self, id: u16) -> bool {
        let Ok(node) = self.node(id) else {
            return false;
        };
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.Paused}}",
            &node.container,
        ])
        .await
        .is_ok_and(|s| s.trim() == "true false")
    }

    /// Starts every stopped container (a cluster left half-down by an earlier run).
    pub(crate) async fn start_stopped(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            let container = self.node(id)?.container.clone();
            let running = docker(&["inspect", "-f", "{{.State.Running}}", &container]).await?;
            if running.trim() != "true" {
                eprintln!("runnel: compose node {id} was not running; starting it");
                self.start(id).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn kill(&mut self, id: u16) -> anyhow::Result<()> {
        let c = self.node(id)?.container.clone();
        docker(&["kill", "--signal", "KILL", &c]).await.map(drop)
    }

    pub(crate) async fn start(&mut self, id: u16) -> anyhow::Result<()> {
        let c = self.node(id)?.container.clone();
        docker(&["start", &c]).await.map(drop)
    }

    /// `docker restart`: SIGTERM (the node moves its leaderships away), SIGKILL after the
    /// grace period, then start.
    pub(crate) async fn restart(&mut self, id: u16) -> anyhow::Result<()> {
        let c = self.node(id)?.container.clone();
        let grace = RESTART_GRACE_S.to_string();
        docker(&["restart", "-t", &grace, &c]).await.map(drop)
    }

    pub(crate) async fn pause(&mut self, id: u16) -> anyhow::Result<()> {
        let c = self.node(id)?.container.clone();
        docker(&["pause", &c]).await?;
        self.paused.push(id);
        Ok(())
    }

    pub(crate) async fn unpause(&mut self, id: u16) -> anyhow::Result<()> {
        let c = self.node(id)?.container.clone();
        docker(&["unpause", &c]).await?;
        self.paused.retain(|&p| p != id);
        Ok(())
    }

    /// Cuts node `id` off the cluster network: it no longer reaches the other nodes (nor they
    /// it), while host clients still reach it through its published ports.
    pub(crate) async fn isolate(&mut self, id: u16) -> anyhow::Result<()> {
        let c = self.node(id)?.container.clone();
        let inspected = docker(&["inspect", &c]).await?;
        let aliases = parse_aliases(&inspected, &self.network)?;
        docker(&["network", "disconnect", &self.network, &c]).await?;
        self.isolated.insert(id, aliases);
        Ok(())
    }

    /// Connects node `id` to the cluster network again, under its old DNS names (its
    /// address may change; the other nodes resolve the name again).
    pub(crate) async fn heal(&mut self, id: u16) -> anyhow::Result<()> {
        let Some(aliases) = self.isolated.get(&id) else {
            return Ok(());
        };
        let c = self.node(id)?.container.clone();
        let mut args = vec!["network", "connect"];
        for alias in aliases {
            args.extend(["--alias", alias.as_str()]);
        }
        args.extend([self.network.as_str(), c.as_str()]);
        docker(&args).await?;
        self.isolated.remove(&id);
        Ok(())
    }

    /// Undoes every fault still in place and starts stopped containers, so a run leaves the
    /// cluster as it found it whatever happened. Problems are printed, not returned.
    pub(crate) async fn restore(&mut self) {
        for id in self.paused.clone() {
            if let Err(e) = self.unpause(id).await {
                eprintln!("runnel: cannot unpause compose node {id}: {e:#}");
            }
        }
        for id in self.isolated.keys().copied().collect::<Vec<_>>() {
            if let Err(e) = self.heal(id).await {
                eprintln!("runnel: cannot reconnect compose node {id}: {e:#}");
            }
        }
        if let Err(e) = self.start_stopped().await {
            eprintln!("runnel: {e:#}");
        }
    }

    /// Of `ids`, the nodes whose GET /health does not answer 200.
    pub(crate) async fn unhealthy(&self, ids: &[u16]) -> Vec<u16> {
        let nodes = ids
            .iter()
            .map(|&id| (id, self.node(id).ok().map(|n| n.http)))
            .collect();
        unhealthy_nodes(nodes).await
    }
}

/// Runs `docker args`, bounded; stdout, or an error carrying docker's stderr.
async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(DOCKER_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("docker {} took over {DOCKER_TIMEOUT:?}", args.join(" ")))?
        .with_context(|| "cannot run docker; is the Docker CLI installed?".to_owned())?;
    if !output.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

// --- docker inspect ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    id: String,
    name: String,
    config: InspectedConfig,
    network_settings: InspectedNetworks,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedConfig {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedNetworks {
    #[serde(default)]
    ports: BTreeMap<String, Option<Vec<PortBinding>>>,
    #[serde(default)]
    networks: BTreeMap<String, InspectedNetwork>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortBinding {
    host_ip: String,
    host_port: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedNetwork {
    #[serde(default)]
    aliases: Option<Vec<String>>,
}

/// The nodes described by `docker inspect` output, by id.
fn parse_nodes(json: &str, network: &str) -> anyhow::Result<Vec<ComposeNode>> {
    let containers: Vec<Inspected> =
        serde_json::from_str(json).context("docker inspect gave JSON of an unexpected shape")?;
    let mut nodes = Vec::with_capacity(containers.len());
    for c in containers {
        let name = c.name.trim_start_matches('/').to_owned();
        let service = c
            .config
            .labels
            .get("com.docker.compose.service")
            .with_context(|| format!("container {name} has no compose service label"))?;
        let id: u16 = service
            .strip_prefix("runnel-")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("service '{service}' is not named runnel-<node id>"))?;
        let published = |port: &str| -> anyhow::Result<SocketAddr> {
            let binding = c
                .network_settings
                .ports
                .get(port)
                .and_then(|b| b.as_ref()?.first())
                .with_context(|| {
                    format!("container {name} does not publish port {port} (is it running?)")
                })?;
            let ip = match binding.host_ip.as_str() {
                "" | "0.0.0.0" => "127.0.0.1",
                "::" => "::1",
                ip => ip,
            };
            format!("{ip}:{}", binding.host_port)
                .parse()
                .or_else(|_| format!("[{ip}]:{}", binding.host_port).parse())
                .with_context(|| format!("container {name} publishes {port} at an odd address"))
        };
        if !c.network_settings.networks.contains_key(network) {
            eprintln!(
                "runnel: container {name} is not on network {network} (cut off by an earlier run?)"
            );
        }
        nodes.push(ComposeNode {
            id,
            container: c.id,
            kafka: published(KAFKA_EXTERNAL_PORT)?,
            http: published(HTTP_PORT)?,
            name,
        });
    }
    nodes.sort_by_key(|n| n.id);
    if nodes.windows(2).any(|w| w[0].id == w[1].id) {
        bail!("two containers run the same node id");
    }
    Ok(nodes)
}

/// The DNS aliases one container has on `network`.
fn parse_aliases(json: &str, network: &str) -> anyhow::Result<Vec<String>> {
    let containers: Vec<Inspected> =
        serde_json::from_str(json).context("docker inspect gave JSON of an unexpected shape")?;
    let c = containers
        .first()
        .context("docker inspect described no container")?;
    let net = c.network_settings.networks.get(network).with_context(|| {
        format!(
            "container {} is not on network {network}",
            c.name.trim_start_matches('/')
        )
    })?;
    Ok(net.aliases.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(service: &str, kafka: &str, http: &str) -> serde_json::Value {
        serde_json::json!({
            "Id": format!("id-{service}"),
            "Name": format!("/p_{service}_1"),
            "Config": {"Labels": {"com.docker.compose.project": "p", "com.docker.compose.service": service}},
            "NetworkSettings": {
                "Ports": {
                    "9092/tcp": null,
                    "9094/tcp": [{"HostIp": "127.0.0.1", "HostPort": kafka}],
                    "9644/tcp": [{"HostIp": "127.0.0.1", "HostPort": http}],
                },
                "Networks": {"p_cluster": {"Aliases": [service, "abc123"]}, "p_edge-1": {"Aliases": null}},
            },
        })
    }

    #[test]
    fn nodes_come_from_service_labels_and_published_ports() {
        let json = serde_json::json!([
            container("runnel-2", "29092", "29644"),
            container("runnel-1", "19092", "19644"),
        ])
        .to_string();
        let nodes = parse_nodes(&json, "p_cluster").unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].id, 1);
        assert_eq!(nodes[0].name, "p_runnel-1_1");
        assert_eq!(nodes[0].container, "id-runnel-1");
        assert_eq!(nodes[0].kafka, "127.0.0.1:19092".parse().unwrap());
        assert_eq!(nodes[1].http, "127.0.0.1:29644".parse().unwrap());
        assert_eq!(
            parse_aliases(&json, "p_cluster").unwrap(),
            ["runnel-2", "abc123"]
        );
        assert!(parse_aliases(&json, "other").is_err());
    }

    #[test]
    fn unexpected_containers_are_explained() {
        let stopped = serde_json::json!([{
            "Id": "x", "Name": "/p_runnel-1_1",
            "Config": {"Labels": {"com.docker.compose.service": "runnel-1"}},
            "NetworkSettings": {"Ports": {}, "Networks": {}},
        }])
        .to_string();
        let err = parse_nodes(&stopped, "p_cluster").unwrap_err().to_string();
        assert!(err.contains("does not publish port 9094/tcp"), "{err}");
        let foreign = serde_json::json!([container("db", "1", "2")]).to_string();
        let err = parse_nodes(&foreign, "p_cluster").unwrap_err().to_string();
        assert!(err.contains("runnel-<node id>"), "{err}");
        let twice = serde_json::json!([
            container("runnel-1", "1", "2"),
            container("runnel-01", "3", "4")
        ])
        .to_string();
        assert!(parse_nodes(&twice, "p_cluster").is_err());
        assert!(parse_nodes("not json", "p_cluster").is_err());
    }
}
