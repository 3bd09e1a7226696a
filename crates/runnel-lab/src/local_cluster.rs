//! A local cluster of `runnel node` processes of this very binary on consecutive ports, shared
//! by `runnel dev` and `runnel chaos`: where each node listens, starting, signalling, health
//! checks and stopping.

use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{http_agent, url};
use crate::link_proxy::{self, LinkProxy, NodePids, Route};

/// How long the nodes get to stop after SIGTERM before they are killed.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Port offsets from a node's Kafka port, and between nodes.
const RPC_OFFSET: u16 = 1;
/// Where a node behind a link proxy really listens for RPC; the proxy takes its RPC port.
const PRIVATE_RPC_OFFSET: u16 = 2;
const HTTP_OFFSET: u16 = 552;
const NODE_STRIDE: u16 = 100;

/// The addresses of one node of the local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodePlan {
    pub(crate) id: u16,
    pub(crate) kafka: SocketAddr,
    /// The RPC address the other nodes know it by (`--voters`, `--advertised-rpc`).
    pub(crate) rpc: SocketAddr,
    /// Where it listens for RPC: `rpc` itself, or a private port behind a link proxy.
    pub(crate) rpc_listen: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) data_dir: PathBuf,
}

impl NodePlan {
    fn ports(&self) -> Vec<(u16, &'static str)> {
        let mut ports = vec![
            (self.kafka.port(), "Kafka"),
            (self.rpc.port(), "RPC"),
            (self.http.port(), "HTTP"),
        ];
        if self.rpc_listen != self.rpc {
            ports.push((self.rpc_listen.port(), "private RPC"));
        }
        ports
    }
}

/// Where each node listens and keeps its data.
pub(crate) fn plan(nodes: u16, base_port: u16, data_dir: &Path) -> anyhow::Result<Vec<NodePlan>> {
    let highest = u32::from(base_port)
        + u32::from(HTTP_OFFSET)
        + u32::from(NODE_STRIDE) * u32::from(nodes.saturating_sub(1));
    if highest > u32::from(u16::MAX) {
        bail!(
            "--base-port {base_port} is too high for {nodes} nodes: node {nodes}'s HTTP port would \
             be {highest}; use a base port of at most {}",
            u32::from(u16::MAX) - (highest - u32::from(base_port))
        );
    }
    if base_port == 0 {
        bail!("--base-port must be a fixed port, not 0");
    }
    let addr = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    Ok((1..=nodes)
        .map(|id| {
            let kafka = base_port + NODE_STRIDE * (id - 1);
            NodePlan {
                id,
                kafka: addr(kafka),
                rpc: addr(kafka + RPC_OFFSET),
                rpc_listen: addr(kafka + RPC_OFFSET),
                http: addr(kafka + HTTP_OFFSET),
                data_dir: data_dir.join(format!("node-{id}")),
            }
        })
        .collect())
}

/// The same nodes behind a link proxy: each listens for RPC on its Kafka port + 2, and the
/// proxy takes the RPC port (Kafka port + 1) the other nodes know it by.
pub(crate) fn behind_link_proxy(plan: Vec<NodePlan>) -> Vec<NodePlan> {
    plan.into_iter()
        .map(|n| NodePlan {
            rpc_listen: SocketAddr::new(n.kafka.ip(), n.kafka.port() + PRIVATE_RPC_OFFSET),
            ..n
        })
        .collect()
}

/// `1@127.0.0.1:9093,2@127.0.0.1:9193,...`, the same for every node.
pub(crate) fn voters(plan: &[NodePlan]) -> String {
    plan.iter()
        .map(|n| format!("{}@{}", n.id, n.rpc))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn bootstrap(plan: &[NodePlan]) -> String {
    plan.iter()
        .map(|n| n.kafka.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The `runnel node` arguments of one node.
fn node_args(node: &NodePlan, voters: &str, configs: &[String]) -> Vec<String> {
    let mut args = vec![
        "node".to_owned(),
        "--node-id".to_owned(),
        node.id.to_string(),
        "--data-dir".to_owned(),
        node.data_dir.display().to_string(),
        "--kafka-listen".to_owned(),
        node.kafka.to_string(),
        "--rpc-listen".to_owned(),
        node.rpc_listen.to_string(),
        "--http-listen".to_owned(),
        node.http.to_string(),
        "--voters".to_owned(),
        voters.to_owned(),
    ];
    if node.rpc_listen != node.rpc {
        args.push("--advertised-rpc".to_owned());
        args.push(node.rpc.to_string());
    }
    for c in configs {
        args.push("--config".to_owned());
        args.push(c.clone());
    }
    args
}

/// Fails with a sentence naming the first port another process holds.
pub(crate) fn check_ports_free(plan: &[NodePlan]) -> anyhow::Result<()> {
    for node in plan {
        for (port, what) in node.ports() {
            if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                    "is already in use".to_owned()
                } else {
                    format!("cannot be bound ({e})")
                };
                bail!(
                    "port {port} (node {}'s {what} port) on 127.0.0.1 {why} — is another \
                     runnel running? stop it, or choose other ports with --base-port",
                    node.id
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// Where the nodes' output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeLogs {
    /// Our stderr, each line prefixed with `[node-i]`.
    Relay,
    /// `<data-dir>/node-i.log` beside each node's data dir, appended across restarts.
    Files,
}

/// A started node process.
struct Running {
    child: Child,
    /// Set once the child was reaped, so it is never signalled again (its pid may be reused).
    exited: Option<ExitStatus>,
    /// Tasks copying the child's stdout and stderr to ours; they end at the child's exit.
    relays: Vec<JoinHandle<()>>,
}

/// The nodes of one local cluster; index `id - 1` holds node `id`'s latest process.
pub(crate) struct LocalCluster {
    /// Prefix of our own messages, e.g. "runnel dev".
    name: &'static str,
    exe: PathBuf,
    plan: Vec<NodePlan>,
    voters: String,
    configs: Vec<String>,
    logs: NodeLogs,
    nodes: Vec<Option<Running>>,
    /// The process id of each running node, for the link proxy to tell their connections apart.
    pids: watch::Sender<NodePids>,
    /// Started by `start_link_proxy`: the other nodes reach each node's RPC through it.
    link_proxy: Option<LinkProxy>,
}

impl LocalCluster {
    /// Checks the ports; starts nothing yet. The nodes run `exe`, a runnel binary.
    pub(crate) fn new(
        name: &'static str,
        exe: PathBuf,
        plan: Vec<NodePlan>,
        configs: Vec<String>,
        logs: NodeLogs,
    ) -> anyhow::Result<Self> {
        check_ports_free(&plan)?;
        let voters = voters(&plan);
        let nodes = plan.iter().map(|_| None).collect();
        Ok(Self {
            name,
            exe,
            plan,
            voters,
            configs,
            logs,
            nodes,
            pids: watch::channel(NodePids::new()).0,
            link_proxy: None,
        })
    }

    /// Puts a link proxy between the nodes (their plan must come from `behind_link_proxy`),
    /// so that links between them can be cut. Before the nodes start: they reach each other
    /// only through it.
    pub(crate) fn start_link_proxy(&mut self) -> anyhow::Result<()> {
        if !link_proxy::SUPPORTED {
            bail!("cutting links between local nodes needs Linux (the proxy reads /proc)");
        }
        let routes: Vec<Route> = self
            .plan
            .iter()
            .map(|n| Route {
                node: n.id,
                listen: n.rpc,
                upstream: n.rpc_listen,
            })
            .collect();
        if routes.iter().any(|r| r.listen == r.upstream) {
            bail!("the nodes listen on their RPC ports themselves; plan them behind_link_proxy");
        }
        self.link_proxy = Some(LinkProxy::start(&routes, self.pids.subscribe())?);
        Ok(())
    }

    /// The link proxy between the nodes, if this cluster has one.
    pub(crate) fn link_proxy(&self) -> anyhow::Result<&LinkProxy> {
        self.link_proxy
            .as_ref()
            .context("this cluster's nodes are not behind a link proxy")
    }

    pub(crate) fn plan(&self) -> &[NodePlan] {
        &self.plan
    }

    pub(crate) fn ids(&self) -> Vec<u16> {
        self.plan.iter().map(|n| n.id).collect()
    }

    fn node(&self, id: u16) -> anyhow::Result<&NodePlan> {
        self.plan
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("there is no node {id}"))
    }

    fn slot(&mut self, id: u16) -> Option<&mut Running> {
        self.nodes
            .get_mut(usize::from(id).checked_sub(1)?)
            .and_then(Option::as_mut)
    }

    /// Starts every node; on failure stops those already started.
    pub(crate) async fn start_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            if let Err(e) = self.start(id) {
                self.stop_all().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Starts (or restarts) node `id`; its previous process must have exited.
    pub(crate) fn start(&mut self, id: u16) -> anyhow::Result<()> {
        if self.is_running(id) {
            bail!("node {id} is still running");
        }
        let node = self.node(id)?.clone();
        let running = spawn(&self.exe, &node, &self.voters, &self.configs, self.logs)?;
        if let Some(pid) = running.child.id() {
            self.pids.send_modify(|pids| {
                pids.insert(id, pid);
            });
        }
        if let Some(slot) = self.nodes.get_mut(usize::from(id) - 1) {
            *slot = Some(running);
        }
        Ok(())
    }

    /// Whether node `id`'s process has been started and not yet exited.
    pub(crate) fn is_running(&mut self, id: u16) -> bool {
        let name = self.name;
        self.slot(id)
            .is_some_and(|r| poll_exit(name, id, r).is_none())
    }

    /// The first node found to have exited, with its status.
    pub(crate) fn exited(&mut self) -> Option<(u16, ExitStatus)> {
        let name = self.name;
        self.ids().into_iter().find_map(|id| {
            let r = self.slot(id)?;
            poll_exit(name, id, r).map(|s| (id, s))
        })
    }

    /// Sends `signal` (a `kill` name such as "KILL", "STOP", "CONT", "TERM") to node `id`.
    pub(crate) async fn signal(&mut self, id: u16, signal: &str) -> anyhow::Result<()> {
        if !self.is_running(id) {
            bail!("node {id} is not running");
        }
        let pid = self
            .slot(id)
            .and_then(|r| r.child.id())
            .with_context(|| format!("node {id} has no process id"))?;
        send_signal(pid, signal)
            .await
            .with_context(|| format!("cannot send SIG{signal} to node {id}"))
    }

    /// Waits up to `timeout` for node `id` to exit; true once it has.
    pub(crate) async fn wait_exit(&mut self, id: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_running(id) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// SIGKILLs node `id` and reaps it.
    pub(crate) async fn kill(&mut self, id: u16) {
        let name = self.name;
        let Some(r) = self.slot(id) else { return };
        if r.exited.is_some() {
            return;
        }
        let _ = r.child.start_kill();
        match tokio::time::timeout(Duration::from_secs(5), r.child.wait()).await {
            Ok(Ok(status)) => r.exited = Some(status),
            _ => eprintln!("{name}: node {id} did not die after SIGKILL"),
        }
        self.pids.send_modify(|pids| {
            pids.remove(&id);
        });
    }

    /// SIGKILLs every node still running.
    pub(crate) async fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id).await;
        }
    }

    /// SIGTERM to every node still running, SIGKILL to those still running STOP_TIMEOUT later.
    pub(crate) async fn stop_all(&mut self) {
        let name = self.name;
        for id in self.ids() {
            if self.is_running(id) {
                if let Err(e) = self.signal(id, "TERM").await {
                    eprintln!("{name}: {e:#}");
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && self.ids().into_iter().any(|id| self.is_running(id)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for id in self.ids() {
            if self.is_running(id) {
                eprintln!(
                    "{name}: node {id} did not stop within {} s of SIGTERM; killing it",
                    STOP_TIMEOUT.as_secs()
                );
                self.kill(id).await;
            }
        }
        // Let the relays print the nodes' last lines.
        for r in self.nodes.iter_mut().flatten() {
            for relay in r.relays.drain(..) {
                let _ = tokio::time::timeout(Duration::from_secs(2), relay).await;
            }
        }
    }

    /// Asks GET /health of every node in `ids`; returns those that do not answer 200.
    pub(crate) async fn unhealthy(&self, ids: &[u16]) -> Vec<u16> {
        let nodes = ids
            .iter()
            .map(|&id| (id, self.node(id).ok().map(|n| n.http)))
            .collect();
        unhealthy_nodes(nodes).await
    }
}

/// Asks GET /health of every node (id, HTTP address); returns the ids that do not answer 200
/// within a second, sorted, those without an address among them.
pub(crate) async fn unhealthy_nodes(nodes: Vec<(u16, Option<SocketAddr>)>) -> Vec<u16> {
    let checks: Vec<_> = nodes
        .into_iter()
        .map(|(id, http)| {
            let check = tokio::task::spawn_blocking(move || {
                http.is_some_and(|http| {
                    http_agent(Duration::from_secs(1))
                        .get(&url(&http.to_string(), "/health"))
                        .call()
                        .is_ok_and(|r| r.status().as_u16() == 200)
                })
            });
            (id, check)
        })
        .collect();
    let mut still = Vec::new();
    for (id, check) in checks {
        if !matches!(check.await, Ok(true)) {
            still.push(id);
        }
    }
    still.sort_unstable();
    still
}

/// Reaps the child if it has exited.
fn poll_exit(name: &str, id: u16, r: &mut Running) -> Option<ExitStatus> {
    if r.exited.is_none() {
        match r.child.try_wait() {
            Ok(Some(status)) => r.exited = Some(status),
            Ok(None) => {}
            Err(e) => eprintln!("{name}: cannot check node {id}: {e}"),
        }
    }
    r.exited
}

/// Sends a signal with the `kill` command (the workspace forbids the unsafe code a direct
/// `kill(2)` call needs).
async fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("cannot run `kill`")?;
    if !status.success() {
        bail!("`kill -{signal} {pid}` failed: {status}");
    }
    Ok(())
}

/// Copies lines from a child's pipe to our stderr, each prefixed with the node's name.
fn relay(id: u16, pipe: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    eprintln!("[node-{id}] {}", line.trim_end_matches(['\n', '\r']));
                }
            }
        }
    })
}

fn spawn(
    exe: &Path,
    node: &NodePlan,
    voters: &str,
    configs: &[String],
    logs: NodeLogs,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("cannot create data dir {}", node.data_dir.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(node_args(node, voters, configs))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match logs {
        NodeLogs::Relay => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        NodeLogs::Files => {
            let path = node.data_dir.with_extension("log");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open node log {}", path.display()))?;
            let copy = file
                .try_clone()
                .with_context(|| format!("cannot open node log {}", path.display()))?;
            cmd.stdout(copy).stderr(file);
        }
    }
    // The flags configure each node; RUNNEL_* variables meant for our own shell
    // (RUNNEL_VOTERS, RUNNEL_ROLES, ...) would otherwise fill in flags we do not pass.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUNNEL_") {
            cmd.env_remove(&key);
        }
    }
    // Colors only when a person watches; a pipe or a file gets plain text.
    if logs == NodeLogs::Files || !std::io::stderr().is_terminal() {
        cmd.env("NO_COLOR", "1");
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start node {} ({})", node.id, exe.display()))?;
    let mut relays = Vec::new();
    if let Some(out) = child.stdout.take() {
        relays.push(relay(node.id, out));
    }
    if let Some(err) = child.stderr.take() {
        relays.push(relay(node.id, err));
    }
    Ok(Running {
        child,
        exited: None,
        relays,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_and_voters() {
        let p = plan(3, 9092, Path::new("data")).unwrap();
        let ports: Vec<[u16; 3]> = p
            .iter()
            .map(|n| [n.kafka.port(), n.rpc.port(), n.http.port()])
            .collect();
        assert_eq!(
            ports,
            [[9092, 9093, 9644], [9192, 9193, 9744], [9292, 9293, 9844]]
        );
        assert_eq!(p[2].data_dir, Path::new("data/node-3"));
        assert_eq!(
            voters(&p),
            "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293"
        );
        assert_eq!(
            bootstrap(&p),
            "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
        );
        let args = node_args(&p[1], &voters(&p), &["num.partitions=3".into()]);
        assert_eq!(
            args.join(" "),
            "node --node-id 2 --data-dir data/node-2 --kafka-listen 127.0.0.1:9192 \
             --rpc-listen 127.0.0.1:9193 --http-listen 127.0.0.1:9744 \
             --voters 1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293 \
             --config num.partitions=3"
        );
    }

    #[test]
    fn behind_a_link_proxy_nodes_listen_privately_and_advertise_the_proxy() {
        let p = behind_link_proxy(plan(2, 9092, Path::new("data")).unwrap());
        assert_eq!(p[1].rpc.port(), 9193);
        assert_eq!(p[1].rpc_listen.port(), 9194);
        assert_eq!(voters(&p), "1@127.0.0.1:9093,2@127.0.0.1:9193");
        let args = node_args(&p[1], &voters(&p), &[]).join(" ");
        assert!(
            args.contains("--rpc-listen 127.0.0.1:9194")
                && args.ends_with("--advertised-rpc 127.0.0.1:9193"),
            "{args}"
        );
        let ports: Vec<u16> = p[0].ports().iter().map(|(port, _)| *port).collect();
        assert_eq!(ports, [9092, 9093, 9644, 9094]);
    }

    #[test]
    fn ports_must_fit() {
        assert!(plan(9, 65535 - 552 - 800, Path::new("d")).is_ok());
        let err = plan(9, 65535 - 552 - 799, Path::new("d"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("too high"), "{err}");
        assert!(plan(1, 0, Path::new("d")).is_err());
    }

    #[test]
    fn a_busy_port_is_named() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let kafka = held.local_addr().unwrap();
        let node = NodePlan {
            id: 2,
            kafka,
            rpc: kafka,
            rpc_listen: kafka,
            http: kafka,
            data_dir: PathBuf::from("d"),
        };
        let err = check_ports_free(&[node]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "port {} (node 2's Kafka port) on 127.0.0.1 is already in use",
                kafka.port()
            )),
            "{err}"
        );
    }
}
