//! `runnel cluster status`: asks every node's HTTP endpoint (`GET /v1/cluster`) for its view
//! of the cluster and prints one merged summary — which nodes answer, who the active
//! controller is, which brokers are fenced and which partitions are offline or
//! under-replicated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::anyhow;
use runnel_node::http::{BrokerView, ClusterView, PartitionView};
use serde::Serialize;

use runnel_lab::cli::{http_agent, url};

use super::outln;
use super::table::{id_list, Table};

/// The HTTP addresses of the nodes `runnel dev` starts with its default ports.
const DEFAULT_HTTP_ADDRS: &str = "127.0.0.1:9644,127.0.0.1:9744,127.0.0.1:9844";
/// How long each node gets to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ClusterCommand {
    /// Show the nodes, the active controller, fenced brokers and unhealthy partitions.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    /// Comma-separated HTTP addresses (host:port) of the nodes to ask.
    #[arg(
        long = "http",
        env = "RUNNEL_HTTP_ADDRS",
        default_value = DEFAULT_HTTP_ADDRS,
        value_delimiter = ',',
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    http: Vec<String>,
    /// Print the merged status as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let addrs: Vec<String> = args
        .http
        .iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        return Err(anyhow!(
            "--http names no address; example: --http 127.0.0.1:9644,127.0.0.1:9744"
        ));
    }
    let answers = fetch_all(&addrs).await;
    let status = merge(answers);
    if status.reachable() == 0 {
        let reasons: Vec<String> = status
            .nodes
            .iter()
            .filter_map(|n| {
                let http = n.http.as_deref()?;
                Some(format!(
                    "{http}: {}",
                    n.error.as_deref().unwrap_or("no answer")
                ))
            })
            .collect();
        return Err(anyhow!(
            "no node answered GET /v1/cluster ({}) — is the cluster running? start one with \
             `runnel dev`, or point --http (RUNNEL_HTTP_ADDRS) at the nodes' HTTP addresses",
            reasons.join("; ")
        ));
    }
    if args.json {
        let text = serde_json::to_string_pretty(&status)?;
        outln!("{text}");
    } else {
        super::emit(&render(&status));
    }
    Ok(())
}

// --- what a node answers ------------------------------------------------------------------

/// What asking one address gave.
#[derive(Debug)]
pub(crate) struct Answer {
    http: String,
    result: Result<ClusterView, String>,
}

async fn fetch_all(addrs: &[String]) -> Vec<Answer> {
    let tasks: Vec<_> = addrs
        .iter()
        .map(|addr| {
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || {
                let result = fetch(&addr);
                Answer { http: addr, result }
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for (task, addr) in tasks.into_iter().zip(addrs) {
        answers.push(task.await.unwrap_or_else(|e| Answer {
            http: addr.clone(),
            result: Err(format!("internal error: {e}")),
        }));
    }
    answers
}

fn fetch(addr: &str) -> Result<ClusterView, String> {
    let url = url(addr, "/v1/cluster");
    let response = http_agent(REQUEST_TIMEOUT)
        .get(&url)
        .call()
        .map_err(|e| describe_http_error(&e))?;
    let code = response.status().as_u16();
    if code == 404 {
        return Err(format!(
            "GET {url} answered HTTP 404 — is this a runnel node too old to serve /v1/cluster?"
        ));
    }
    if code != 200 {
        return Err(format!("GET {url} answered HTTP {code}"));
    }
    response
        .into_body()
        .read_json::<ClusterView>()
        .map_err(|e| format!("GET {url} answered something that is not cluster status JSON: {e}"))
}

fn describe_http_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".to_owned()
        }
        ureq::Error::Timeout(_) => format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        other => other.to_string(),
    }
}

// --- the merged view ----------------------------------------------------------------------

/// The cluster as the reachable nodes describe it; `--json` prints this.
#[derive(Serialize, Debug, PartialEq)]
pub(crate) struct ClusterStatus {
    cluster_id: Option<String>,
    nodes: Vec<NodeRow>,
    controller: Option<ActiveController>,
    /// Which node's answer the broker and partition lists come from.
    metadata_from: Option<i32>,
    brokers: Vec<BrokerView>,
    fenced_brokers: Vec<i32>,
    topics: u64,
    partitions: u64,
    offline_partitions: Vec<PartitionView>,
    under_replicated_partitions: Vec<PartitionView>,
}

impl ClusterStatus {
    fn reachable(&self) -> usize {
        self.nodes.iter().filter(|n| n.reachable).count()
    }
}

/// One line of the nodes table: an address asked, or a node the metadata names but no
/// address answered for.
#[derive(Serialize, Debug, PartialEq)]
struct NodeRow {
    node_id: Option<i32>,
    /// The HTTP address asked; None for a node only known from the metadata.
    http: Option<String>,
    reachable: bool,
    error: Option<String>,
    roles: Vec<String>,
    raft_state: Option<String>,
    term: Option<u64>,
    leader_id: Option<i32>,
    last_applied: Option<u64>,
    kafka: Option<String>,
    fenced: Option<bool>,
}

#[derive(Serialize, Debug, PartialEq)]
struct ActiveController {
    id: i32,
    term: u64,
    /// "leader" when the controller itself said so, "majority" when it is what most of the
    /// reachable nodes name as their leader.
    source: &'static str,
}

/// Merges the answers into one view. The broker and partition lists come from the active
/// controller when it answered (its metadata is the newest), else from the node that has
/// applied the most of the Raft log.
pub(crate) fn merge(answers: Vec<Answer>) -> ClusterStatus {
    let views: Vec<&ClusterView> = answers
        .iter()
        .filter_map(|a| a.result.as_ref().ok())
        .collect();
    let controller = active_controller(&views);

    let source: Option<&ClusterView> = controller
        .as_ref()
        .and_then(|c| views.iter().find(|v| v.node_id == Some(c.id)).copied())
        .or_else(|| {
            views
                .iter()
                .max_by_key(|v| (v.controller.last_applied, v.controller.term))
                .copied()
        });
    let brokers: BTreeMap<i32, BrokerView> = source
        .map(|v| v.brokers.iter().map(|b| (b.id, b.clone())).collect())
        .unwrap_or_default();

    let mut rows: Vec<NodeRow> = answers
        .iter()
        .map(|a| match &a.result {
            Ok(v) => {
                let broker = v.node_id.and_then(|id| brokers.get(&id));
                NodeRow {
                    node_id: v.node_id,
                    http: Some(a.http.clone()),
                    reachable: true,
                    error: None,
                    roles: v.roles.clone(),
                    raft_state: Some(v.controller.raft_state.clone()),
                    term: Some(v.controller.term),
                    leader_id: v.controller.leader_id,
                    last_applied: v.controller.last_applied,
                    kafka: broker.map(BrokerView::kafka),
                    fenced: broker.map(|b| b.fenced),
                }
            }
            Err(e) => NodeRow {
                node_id: None,
                http: Some(a.http.clone()),
                reachable: false,
                error: Some(e.clone()),
                roles: Vec::new(),
                raft_state: None,
                term: None,
                leader_id: None,
                last_applied: None,
                kafka: None,
                fenced: None,
            },
        })
        .collect();

    // Nodes the metadata names (brokers, voters, learners) that no reachable address is.
    let answered: BTreeSet<i32> = views.iter().filter_map(|v| v.node_id).collect();
    let mut known: BTreeSet<i32> = brokers.keys().copied().collect();
    if let Some(v) = source {
        known.extend(v.controller.voters.iter().map(|m| m.id));
        known.extend(v.controller.learners.iter().map(|m| m.id));
    }
    let missing: Vec<i32> = known.difference(&answered).copied().collect();
    let silent: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].reachable).collect();
    // One silent address and one node unaccounted for can only be each other.
    let paired = if missing.len() == 1 && silent.len() == 1 {
        rows[silent[0]].node_id = Some(missing[0]);
        true
    } else {
        false
    };
    for &id in &missing {
        let role_guess = source
            .map(|v| roles_from_metadata(v, id))
            .unwrap_or_default();
        let broker = brokers.get(&id);
        if paired {
            let row = &mut rows[silent[0]];
            row.roles = role_guess;
            row.kafka = broker.map(BrokerView::kafka);
            row.fenced = broker.map(|b| b.fenced);
        } else {
            rows.push(NodeRow {
                node_id: Some(id),
                http: None,
                reachable: false,
                error: Some("no --http address answered for this node".to_owned()),
                roles: role_guess,
                raft_state: None,
                term: None,
                leader_id: None,
                last_applied: None,
                kafka: broker.map(BrokerView::kafka),
                fenced: broker.map(|b| b.fenced),
            });
        }
    }
    rows.sort_by_key(|r| (r.node_id.is_none(), r.node_id, r.http.clone()));

    let cluster_id = views
        .iter()
        .map(|v| v.cluster_id.as_str())
        .find(|id| !id.is_empty())
        .map(str::to_owned);
    let fenced_brokers = brokers
        .values()
        .filter(|b| b.fenced)
        .map(|b| b.id)
        .collect();
    ClusterStatus {
        cluster_id,
        nodes: rows,
        controller,
        metadata_from: source.and_then(|v| v.node_id),
        brokers: brokers.into_values().collect(),
        fenced_brokers,
        topics: source.map_or(0, |v| v.topics),
        partitions: source.map_or(0, |v| v.partitions),
        offline_partitions: source
            .map(|v| v.offline_partitions.clone())
            .unwrap_or_default(),
        under_replicated_partitions: source
            .map(|v| v.under_replicated_partitions.clone())
            .unwrap_or_default(),
    }
}

/// The roles a silent node has according to another node's metadata.
fn roles_from_metadata(view: &ClusterView, id: i32) -> Vec<String> {
    let mut roles = Vec::new();
    if view.controller.voters.iter().any(|m| m.id == id) {
        roles.push("controller".to_owned());
    }
    if view.brokers.iter().any(|b| b.id == id) {
        roles.push("broker".to_owned());
    }
    roles
}

/// The node that says it is the Raft leader (the highest term wins should two say so), else
/// the leader most reachable nodes name (ties go to the higher term, then the lower id).
fn active_controller(views: &[&ClusterView]) -> Option<ActiveController> {
    let leader = views
        .iter()
        .filter(|v| v.controller.raft_state.eq_ignore_ascii_case("leader"))
        .filter_map(|v| v.node_id.map(|id| (id, v.controller.term)))
        .max_by_key(|&(id, term)| (term, std::cmp::Reverse(id)));
    if let Some((id, term)) = leader {
        return Some(ActiveController {
            id,
            term,
            source: "leader",
        });
    }
    // leader id -> (votes, highest term any voter for it reports)
    let mut named: BTreeMap<i32, (usize, u64)> = BTreeMap::new();
    for v in views {
        if let Some(id) = v.controller.leader_id {
            let e = named.entry(id).or_default();
            e.0 += 1;
            e.1 = e.1.max(v.controller.term);
        }
    }
    named
        .into_iter()
        .max_by_key(|&(id, (votes, term))| (votes, term, std::cmp::Reverse(id)))
        .map(|(id, (_, term))| ActiveController {
            id,
            term,
            source: "majority",
        })
}

// --- text output --------------------------------------------------------------------------

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn render(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "cluster id: {}",
        s.cluster_id.as_deref().unwrap_or("(not initialized yet)")
    ));
    line(format!(
        "nodes: {} of {} reachable",
        s.reachable(),
        s.nodes.len()
    ));
    let mut nodes = Table::new([
        "NODE",
        "HTTP",
        "REACHABLE",
        "ROLES",
        "RAFT",
        "TERM",
        "KAFKA",
        "FENCED",
    ])
    .right(&[0, 5]);
    for n in &s.nodes {
        nodes.row([
            n.node_id.map_or("?".to_owned(), |id| id.to_string()),
            n.http.clone().unwrap_or_else(|| "-".to_owned()),
            yes_no(n.reachable).to_owned(),
            if n.roles.is_empty() {
                "-".to_owned()
            } else {
                n.roles.join(",")
            },
            n.raft_state.clone().unwrap_or_else(|| "-".to_owned()),
            n.term.map_or("-".to_owned(), |t| t.to_string()),
            n.kafka.clone().unwrap_or_else(|| "-".to_owned()),
            n.fenced.map_or("-".to_owned(), |f| yes_no(f).to_owned()),
        ]);
    }
    line(nodes.render().trim_end().to_owned());
    for n in s.nodes.iter().filter(|n| !n.reachable) {
        let who = match (n.node_id, &n.http) {
            (Some(id), Some(http)) => format!("node {id} at {http}"),
            (Some(id), None) => format!("node {id}"),
            (None, Some(http)) => http.clone(),
            (None, None) => "?".to_owned(),
        };
        line(format!(
            "  unreachable: {who}: {}",
            n.error.as_deref().unwrap_or("no answer")
        ));
    }
    line(String::new());
    line(match &s.controller {
        Some(c) if c.source == "leader" => format!("active controller: node {} (term {})", c.id, c.term),
        Some(c) => format!(
            "active controller: node {} (term {}; named by the reachable nodes, it did not answer itself)",
            c.id, c.term
        ),
        None => "active controller: none — no reachable node knows a Raft leader (an election may be under way, or a majority of the voters is down)".to_owned(),
    });
    line(format!(
        "topics: {}, partitions: {}",
        s.topics, s.partitions
    ));
    line(format!(
        "fenced brokers: {}",
        if s.fenced_brokers.is_empty() {
            "none".to_owned()
        } else {
            id_list(&s.fenced_brokers)
        }
    ));
    for (title, parts) in [
        ("offline partitions", &s.offline_partitions),
        (
            "under-replicated partitions",
            &s.under_replicated_partitions,
        ),
    ] {
        if parts.is_empty() {
            line(format!("{title}: none"));
            continue;
        }
        line(format!("{title}: {}", parts.len()));
        let mut t = Table::new(["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"]).right(&[1, 2]);
        for p in parts {
            t.row([
                p.topic.clone(),
                p.partition.to_string(),
                if p.leader < 0 {
                    "none".to_owned()
                } else {
                    p.leader.to_string()
                },
                id_list(&p.replicas),
                id_list(&p.isr),
            ]);
        }
        line(t.render().trim_end().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: serde_json::Value) -> ClusterView {
        serde_json::from_value(json).unwrap()
    }

    fn ok(http: &str, json: serde_json::Value) -> Answer {
        Answer {
            http: http.to_owned(),
            result: Ok(view(json)),
        }
    }

    fn down(http: &str) -> Answer {
        Answer {
            http: http.to_owned(),
            result: Err("connection refused".to_owned()),
        }
    }

    fn brokers(fenced2: bool) -> serde_json::Value {
        serde_json::json!([
            {"id": 1, "host": "127.0.0.1", "port": 9092, "rpc_address": "127.0.0.1:9093", "rack": null, "fenced": false, "epoch": 5},
            {"id": 2, "host": "127.0.0.1", "port": 9192, "rpc_address": "127.0.0.1:9193", "rack": null, "fenced": fenced2, "epoch": 6},
            {"id": 3, "host": "127.0.0.1", "port": 9292, "rpc_address": "127.0.0.1:9293", "rack": null, "fenced": false, "epoch": 7}
        ])
    }

    fn voters() -> serde_json::Value {
        serde_json::json!([
            {"id": 1, "rpc_address": "127.0.0.1:9093"},
            {"id": 2, "rpc_address": "127.0.0.1:9193"},
            {"id": 3, "rpc_address": "127.0.0.1:9293"}
        ])
    }

    fn node(
        id: i32,
        state: &str,
        term: u64,
        leader: Option<i32>,
        applied: u64,
        fenced2: bool,
    ) -> serde_json::Value {
        serde_json::json!({
            "node_id": id,
            "roles": ["controller", "broker"],
            "cluster_id": "MkU3OEVBNTcwNTJENDM2Qk",
            "controller": {
                "raft_state": state, "term": term, "leader_id": leader, "last_applied": applied,
                "voters": voters(), "learners": []
            },
            "brokers": brokers(fenced2),
            "topics": 2,
            "partitions": 4 + id,
            "offline_partitions": [],
            "under_replicated_partitions": if fenced2 {
                serde_json::json!([{"topic": "t", "partition": 1, "leader": 1, "replicas": [2, 1, 3], "isr": [1, 3]}])
            } else {
                serde_json::json!([])
            }
        })
    }

    #[test]
    fn healthy_cluster() {
        let s = merge(vec![
            ok("127.0.0.1:9644", node(1, "Follower", 3, Some(2), 40, false)),
            ok("127.0.0.1:9744", node(2, "Leader", 3, Some(2), 42, false)),
            ok("127.0.0.1:9844", node(3, "Follower", 3, Some(2), 41, false)),
        ]);
        assert_eq!(
            s.controller,
            Some(ActiveController {
                id: 2,
                term: 3,
                source: "leader"
            })
        );
        assert_eq!(s.metadata_from, Some(2));
        assert_eq!(s.partitions, 6, "lists come from the controller's answer");
        assert_eq!(s.cluster_id.as_deref(), Some("MkU3OEVBNTcwNTJENDM2Qk"));
        assert_eq!(s.reachable(), 3);
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(
            s.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(s.nodes[1].kafka.as_deref(), Some("127.0.0.1:9192"));
        assert!(s.fenced_brokers.is_empty());
        let text = render(&s);
        assert!(text.contains("nodes: 3 of 3 reachable"), "{text}");
        assert!(
            text.contains("active controller: node 2 (term 3)"),
            "{text}"
        );
        assert!(text.contains("fenced brokers: none"), "{text}");
        assert!(text.contains("offline partitions: none"), "{text}");
        assert!(text.contains("under-replicated partitions: none"), "{text}");
        let row = text.lines().find(|l| l.contains("127.0.0.1:9744")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "2",
                "127.0.0.1:9744",
                "yes",
                "controller,broker",
                "Leader",
                "3",
                "127.0.0.1:9192",
                "no"
            ]
        );
    }

    #[test]
    fn dead_leader_is_named_by_the_majority_and_paired_with_its_silent_address() {
        let s = merge(vec![
            ok("127.0.0.1:9644", node(1, "Follower", 3, Some(2), 40, true)),
            down("127.0.0.1:9744"),
            ok("127.0.0.1:9844", node(3, "Follower", 3, Some(2), 41, true)),
        ]);
        assert_eq!(
            s.controller,
            Some(ActiveController {
                id: 2,
                term: 3,
                source: "majority"
            })
        );
        assert_eq!(s.metadata_from, Some(3), "highest last_applied");
        assert_eq!(s.reachable(), 2);
        let dead = &s.nodes[1];
        assert_eq!(dead.node_id, Some(2));
        assert!(!dead.reachable);
        assert_eq!(dead.fenced, Some(true));
        assert_eq!(dead.roles, ["controller", "broker"]);
        assert_eq!(s.fenced_brokers, [2]);
        assert_eq!(s.under_replicated_partitions.len(), 1);
        let text = render(&s);
        assert!(text.contains("nodes: 2 of 3 reachable"), "{text}");
        assert!(
            text.contains("unreachable: node 2 at 127.0.0.1:9744: connection refused"),
            "{text}"
        );
        assert!(text.contains("fenced brokers: 2"), "{text}");
        assert!(text.contains("under-replicated partitions: 1"), "{text}");
        let row = text.lines().find(|l| l.contains("127.0.0.1:9744")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "2",
                "127.0.0.1:9744",
                "no",
                "controller,broker",
                "-",
                "-",
                "127.0.0.1:9192",
                "yes"
            ]
        );
        let urp = text.lines().find(|l| l.starts_with("t ")).unwrap();
        assert_eq!(
            urp.split_whitespace().collect::<Vec<_>>(),
            ["t", "1", "1", "2,1,3", "1,3"]
        );
    }

    #[test]
    fn new_leader_wins_over_stale_majority_and_unknown_nodes_get_rows() {
        // Node 1 leads term 4; node 3 still names the old leader of term 3. Two addresses
        // are silent, so they cannot be paired with node 2 alone: node 2 gets its own row.
        let s = merge(vec![
            ok("a:1", node(1, "Leader", 4, Some(1), 50, false)),
            ok("c:3", node(3, "Follower", 3, Some(2), 45, false)),
            down("b:2"),
            down("d:4"),
        ]);
        assert_eq!(s.controller.as_ref().map(|c| (c.id, c.term)), Some((1, 4)));
        assert_eq!(s.nodes.len(), 5);
        let unnamed: Vec<_> = s.nodes.iter().filter(|n| n.node_id.is_none()).collect();
        assert_eq!(unnamed.len(), 2);
        let two = s.nodes.iter().find(|n| n.node_id == Some(2)).unwrap();
        assert_eq!(two.http, None);
        assert!(!two.reachable);
        assert_eq!(two.kafka.as_deref(), Some("127.0.0.1:9192"));
    }

    #[test]
    fn no_leader_anywhere_and_sparse_answers() {
        let s = merge(vec![ok(
            "x:1",
            serde_json::json!({"node_id": 7, "controller": {"raft_state": "Candidate", "term": 9, "leader_id": null}}),
        )]);
        assert_eq!(s.controller, None);
        assert_eq!(s.cluster_id, None);
        assert_eq!(s.nodes.len(), 1);
        let text = render(&s);
        assert!(text.contains("active controller: none"), "{text}");
        assert!(text.contains("cluster id: (not initialized yet)"), "{text}");
    }

    #[test]
    fn offline_partitions_are_listed_and_json_is_machine_readable() {
        let mut v = node(1, "Leader", 2, Some(1), 10, false);
        v["offline_partitions"] = serde_json::json!([{"topic": "orders", "partition": 0, "leader": -1, "replicas": [2], "isr": []}]);
        let s = merge(vec![ok("h:1", v)]);
        let text = render(&s);
        assert!(text.contains("offline partitions: 1"), "{text}");
        let row = text.lines().find(|l| l.starts_with("orders")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["orders", "0", "none", "2"]
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["controller"]["id"], 1);
        assert_eq!(json["nodes"][0]["reachable"], true);
        assert_eq!(json["offline_partitions"][0]["topic"], "orders");
    }
}
