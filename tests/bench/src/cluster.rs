//! A local multi-node cluster for the replicated scenarios: `runnel node` processes that
//! form one Raft controller quorum through `--voters`, each a controller and a broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::node::{self, Node, StopInfo};

/// How long the nodes get, once healthy, to all register as live brokers.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on `runnel topic create`.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Running nodes; dropping the cluster stops them (each [`Node`] stops itself on drop).
pub struct Cluster {
    pub nodes: Vec<Node>,
    bin: PathBuf,
}

impl Cluster {
    /// Starts `nodes` nodes on free loopback ports, each with a fresh data dir under
    /// `tmp_parent` and its log at `<log_dir>/cluster-node-<id>.log`, and waits until every
    /// one answers /health and the cluster lists them all as live brokers.
    pub fn start(
        bin: &Path,
        nodes: usize,
        tmp_parent: Option<&Path>,
        log_dir: &Path,
        configs: &[String],
    ) -> Result<Cluster> {
        let ports = node::free_ports(nodes)?;
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@{}", i + 1, p.rpc))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(nodes),
            bin: bin.to_path_buf(),
        };
        for (i, p) in ports.iter().enumerate() {
            let id = i + 1;
            let args = [
                "--node-id".to_string(),
                id.to_string(),
                "--voters".to_string(),
                voters.clone(),
            ];
            cluster.nodes.push(Node::spawn(
                bin,
                node::temp_data_dir(tmp_parent)?,
                *p,
                &args,
                &log_dir.join(format!("cluster-node-{id}.log")),
                configs,
            )?);
        }
        for n in &mut cluster.nodes {
            n.wait_healthy()?;
        }
        cluster.wait_registered()?;
        Ok(cluster)
    }

    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until Metadata lists every node as a live broker.
    fn wait_registered(&mut self) -> Result<()> {
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        let bootstrap = self.bootstrap();
        loop {
            let brokers = crate::scenarios::live_brokers(&bootstrap).unwrap_or(0);
            if brokers == self.nodes.len() {
                return Ok(());
            }
            for n in &mut self.nodes {
                n.check_alive()?;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {brokers} of {} nodes registered as brokers within {}s",
                    self.nodes.len(),
                    REGISTER_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `topic` with the node binary's own admin command, so the replication factor and
    /// min.insync.replicas are set explicitly rather than left to auto-creation.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: u16,
        min_insync_replicas: u16,
    ) -> Result<()> {
        let mut child = Command::new(&self.bin)
            .args(["topic", "create", topic, "--partitions"])
            .arg(partitions.to_string())
            .arg("--replication-factor")
            .arg(replication_factor.to_string())
            .arg("--config")
            .arg(format!("min.insync.replicas={min_insync_replicas}"))
            .arg("--bootstrap-server")
            .arg(self.bootstrap())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run `runnel topic create`")?;
        let deadline = Instant::now() + CREATE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!(
                    "`runnel topic create {topic}` failed ({status}): {}",
                    err.trim()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`runnel topic create {topic}` did not finish within {}s",
                    CREATE_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every node (SIGTERM, then SIGKILL); one entry per node.
    pub fn stop(&mut self) -> Vec<Option<StopInfo>> {
        self.nodes.iter_mut().map(Node::stop).collect()
    }
}
