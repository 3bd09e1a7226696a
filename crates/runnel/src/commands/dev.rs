//! `runnel dev`: a local cluster for development — N `runnel node` processes of this very
//! binary on consecutive ports, their logs interleaved on stderr with a `[node-i]` prefix,
//! all stopped together on Ctrl-C or SIGTERM.

use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use super::cluster::{http_agent, url};

/// How long the nodes get to report healthy after they were started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes get to stop after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the children are checked.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Port offsets from a node's Kafka port, and between nodes.
const RPC_OFFSET: u16 = 1;
const HTTP_OFFSET: u16 = 552;
const NODE_STRIDE: u16 = 100;

#[derive(clap::Args, Debug)]
pub(crate) struct DevArgs {
    /// How many nodes to run (1 to 9); every node is a controller and a broker.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Base directory; node i keeps its data in <DATA_DIR>/node-i.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Node 1's Kafka port. Node i listens for Kafka on BASE + 100*(i-1), for node-to-node
    /// RPC on that + 1 and for HTTP (/health, /v1/cluster) on that + 552.
    #[arg(long, default_value_t = 9092, value_name = "PORT")]
    base_port: u16,
    /// Broker config passed to every node, e.g. `--config num.partitions=3`. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
}

/// The addresses of one node of the dev cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodePlan {
    id: u16,
    kafka: SocketAddr,
    rpc: SocketAddr,
    http: SocketAddr,
    data_dir: PathBuf,
}

impl NodePlan {
    fn ports(&self) -> [(u16, &'static str); 3] {
        [
            (self.kafka.port(), "Kafka"),
            (self.rpc.port(), "RPC"),
            (self.http.port(), "HTTP"),
        ]
    }
}

/// Where each node listens and keeps its data.
fn plan(nodes: u16, base_port: u16, data_dir: &Path) -> anyhow::Result<Vec<NodePlan>> {
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
                http: addr(kafka + HTTP_OFFSET),
                data_dir: data_dir.join(format!("node-{id}")),
            }
        })
        .collect())
}

/// `1@127.0.0.1:9093,2@127.0.0.1:9193,...`, the same for every node.
fn voters(plan: &[NodePlan]) -> String {
    plan.iter()
        .map(|n| format!("{}@{}", n.id, n.rpc))
        .collect::<Vec<_>>()
        .join(",")
}

fn bootstrap(plan: &[NodePlan]) -> String {
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
        node.rpc.to_string(),
        "--http-listen".to_owned(),
        node.http.to_string(),
        "--voters".to_owned(),
        voters.to_owned(),
    ];
    for c in configs {
        args.push("--config".to_owned());
        args.push(c.clone());
    }
    args
}

/// Fails with a sentence naming the first port another process holds.
fn check_ports_free(plan: &[NodePlan]) -> anyhow::Result<()> {
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

/// A started node.
struct Running {
    id: u16,
    child: Child,
    /// Set once the child was reaped, so it is never signalled again (its pid may be reused).
    exited: Option<ExitStatus>,
    /// Tasks copying the child's stdout and stderr to ours; they end at the child's exit.
    relays: Vec<JoinHandle<()>>,
}

impl Running {
    /// Reaps the child if it has exited.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exited = Some(status),
                Ok(None) => {}
                Err(e) => eprintln!("runnel dev: cannot check node {}: {e}", self.id),
            }
        }
        self.exited
    }
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

fn spawn(exe: &Path, node: &NodePlan, voters: &str, configs: &[String]) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("cannot create data dir {}", node.data_dir.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(node_args(node, voters, configs))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The flags configure each node; RUNNEL_* variables meant for `runnel dev`'s own shell
    // (RUNNEL_VOTERS, RUNNEL_ROLES, ...) would otherwise fill in flags we do not pass.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUNNEL_") {
            cmd.env_remove(&key);
        }
    }
    // Colors only when a person watches; a pipe or a file gets plain text.
    if !std::io::stderr().is_terminal() {
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
        id: node.id,
        child,
        exited: None,
        relays,
    })
}

/// Sends SIGTERM with the `kill` command (the workspace forbids the unsafe code a direct
/// `kill(2)` call needs).
async fn sigterm(node: &Running) {
    let Some(pid) = node.child.id() else { return };
    match Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
    {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!(
            "runnel dev: `kill -TERM {pid}` (node {}) failed: {s}",
            node.id
        ),
        Err(e) => eprintln!(
            "runnel dev: cannot run `kill` to stop node {}: {e}",
            node.id
        ),
    }
}

/// SIGTERM to every node still running, SIGKILL to those still running STOP_TIMEOUT later.
async fn stop_all(nodes: &mut [Running]) {
    for n in nodes.iter_mut() {
        if n.poll_exit().is_none() {
            sigterm(n).await;
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline && nodes.iter_mut().any(|n| n.poll_exit().is_none()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in nodes.iter_mut() {
        if n.poll_exit().is_none() {
            eprintln!(
                "runnel dev: node {} did not stop within {} s of SIGTERM; killing it",
                n.id,
                STOP_TIMEOUT.as_secs()
            );
            let _ = n.child.start_kill();
            match tokio::time::timeout(Duration::from_secs(5), n.child.wait()).await {
                Ok(Ok(status)) => n.exited = Some(status),
                _ => eprintln!("runnel dev: node {} did not die after SIGKILL", n.id),
            }
        }
    }
    // Let the relays print the nodes' last lines.
    for n in nodes.iter_mut() {
        for r in n.relays.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
    }
}

/// Asks GET /health of every node in `pending`; returns those that do not answer 200.
async fn unhealthy(plan: &[NodePlan], pending: &[u16]) -> Vec<u16> {
    let checks: Vec<_> = pending
        .iter()
        .map(|&id| {
            let http = plan[usize::from(id) - 1].http;
            tokio::task::spawn_blocking(move || {
                http_agent(Duration::from_secs(1))
                    .get(&url(&http.to_string(), "/health"))
                    .call()
                    .is_ok_and(|r| r.status().as_u16() == 200)
            })
        })
        .collect();
    let mut still = Vec::new();
    for (c, &id) in checks.into_iter().zip(pending) {
        if !matches!(c.await, Ok(true)) {
            still.push(id);
        }
    }
    still.sort_unstable();
    still
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

enum Outcome {
    /// Ctrl-C or SIGTERM.
    Stopped,
    /// A node exited by itself.
    NodeExited(u16, ExitStatus),
    /// Not every node became healthy in time.
    NotHealthy(Vec<u16>),
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let plan = plan(args.nodes, args.base_port, &args.data_dir)?;
    check_ports_free(&plan)?;
    let exe =
        std::env::current_exe().context("cannot find the runnel executable to start nodes")?;
    let voters = voters(&plan);
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    eprintln!(
        "runnel dev: starting {} node(s), data under {}",
        plan.len(),
        args.data_dir.display()
    );
    let mut nodes: Vec<Running> = Vec::with_capacity(plan.len());
    for node in &plan {
        match spawn(&exe, node, &voters, &args.configs) {
            Ok(r) => nodes.push(r),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e);
            }
        }
    }

    let started = Instant::now();
    let mut pending: Vec<u16> = plan.iter().map(|n| n.id).collect();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = term.recv() => break Outcome::Stopped,
            _ = &mut ctrl_c => break Outcome::Stopped,
            _ = tick.tick() => {
                if let Some((id, status)) = nodes.iter_mut().find_map(|n| n.poll_exit().map(|s| (n.id, s))) {
                    break Outcome::NodeExited(id, status);
                }
                if pending.is_empty() {
                    continue;
                }
                pending = unhealthy(&plan, &pending).await;
                if pending.is_empty() {
                    crate::commands::outln!("bootstrap servers: {}", bootstrap(&plan));
                    let http: Vec<String> = plan.iter().map(|n| n.http.to_string()).collect();
                    crate::commands::outln!(
                        "all {} node(s) healthy; see the cluster with `runnel cluster status --http {}`; Ctrl-C stops them",
                        plan.len(),
                        http.join(",")
                    );
                } else if started.elapsed() > START_TIMEOUT {
                    break Outcome::NotHealthy(pending);
                }
            }
        }
    };

    match &outcome {
        Outcome::Stopped => eprintln!("runnel dev: stopping the nodes"),
        Outcome::NodeExited(id, status) => eprintln!(
            "runnel dev: node {id} exited unexpectedly ({}); stopping the others",
            describe_exit(*status)
        ),
        Outcome::NotHealthy(ids) => eprintln!(
            "runnel dev: node(s) {} not healthy within {} s; stopping all",
            ids.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            START_TIMEOUT.as_secs()
        ),
    }
    stop_all(&mut nodes).await;
    match outcome {
        Outcome::Stopped => {
            eprintln!("runnel dev: all nodes stopped");
            Ok(())
        }
        Outcome::NodeExited(id, status) => Err(anyhow!(
            "node {id} exited unexpectedly ({}); its log lines above start with [node-{id}]",
            describe_exit(status)
        )),
        Outcome::NotHealthy(ids) => Err(anyhow!(
            "node(s) {} did not answer GET /health with 200 within {} s; see their log lines above",
            ids.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            START_TIMEOUT.as_secs()
        )),
    }
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
