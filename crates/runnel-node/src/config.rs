//! What a node is started with: the plain form of `runnel node`'s flags, so the library needs
//! no command-line parser. Error messages name the flags, as that is how operators set them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use runnel_broker::BrokerConfig;
use runnel_controller::store::RaftNode;

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Controller,
    Broker,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Broker => "broker",
        }
    }
}

/// A node's settings; see `runnel node --help` for each one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id; must stay the same for a data dir.
    pub node_id: i32,
    /// Where partition logs and the controller's Raft state live.
    pub data_dir: PathBuf,
    /// Kafka listeners to bind: `host:port`, or named `NAME://host:port` entries.
    pub kafka_listen: Vec<String>,
    /// What clients of each listener are told to connect to (empty: the bound addresses).
    pub advertised_kafka: Vec<String>,
    /// The node-to-node gRPC listener; port 0 picks a free port.
    pub rpc_listen: SocketAddr,
    /// host:port other nodes reach the gRPC listener at (default: its bound address).
    pub advertised_rpc: Option<String>,
    /// The HTTP endpoint serving /health and /v1/cluster; port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// `id@host:port` of every voter; empty: this node alone.
    pub voters: Vec<String>,
    pub roles: Vec<Role>,
    /// Broker config as Kafka's `KEY=VALUE` pairs.
    pub configs: Vec<String>,
}

impl Default for NodeConfig {
    /// The defaults of `runnel node`.
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            kafka_listen: vec!["127.0.0.1:9092".to_owned()],
            advertised_kafka: Vec::new(),
            rpc_listen: SocketAddr::from(([127, 0, 0, 1], 9093)),
            advertised_rpc: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9644)),
            voters: Vec::new(),
            roles: vec![Role::Controller, Role::Broker],
            configs: Vec::new(),
        }
    }
}

pub(crate) fn parse_configs(pairs: &[String]) -> anyhow::Result<BrokerConfig> {
    let mut parsed = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--config '{pair}' is not KEY=VALUE"))?;
        parsed.push((k.trim(), v.trim()));
    }
    Ok(BrokerConfig::from_pairs(parsed)?)
}

/// `--voters` as Raft nodes; `1@host:port` each.
fn parse_voters(voters: &[String]) -> anyhow::Result<BTreeMap<u64, RaftNode>> {
    let mut parsed = BTreeMap::new();
    for voter in voters.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let (id, addr) = voter
            .split_once('@')
            .with_context(|| format!("--voters entry '{voter}' is not id@host:port"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--voters entry '{voter}' has an invalid node id"))?;
        if !addr.contains(':') {
            bail!("--voters entry '{voter}' is not id@host:port");
        }
        let node = RaftNode {
            rpc_addr: addr.to_string(),
        };
        if parsed.insert(id, node).is_some() {
            bail!("--voters lists node {id} twice");
        }
    }
    Ok(parsed)
}

/// Resolves the voter set and checks the roles against it.
pub(crate) fn quorum(
    config: &NodeConfig,
    advertised_rpc: &str,
) -> anyhow::Result<BTreeMap<u64, RaftNode>> {
    let id = u64::try_from(config.node_id).context("--node-id must not be negative")?;
    let mut voters = parse_voters(&config.voters)?;
    let controller = config.roles.contains(&Role::Controller);
    if voters.is_empty() {
        if !controller {
            bail!("a broker-only node needs --voters naming the controller quorum");
        }
        voters.insert(
            id,
            RaftNode {
                rpc_addr: advertised_rpc.to_string(),
            },
        );
    }
    match (controller, voters.get(&id)) {
        (true, None) => bail!(
            "node {id} has the controller role but is not in --voters; add {id}@{advertised_rpc} to --voters or run it with --roles broker"
        ),
        (false, Some(_)) => bail!(
            "node {id} is in --voters but does not have the controller role; add it with --roles controller,broker or remove it from --voters"
        ),
        (true, Some(me)) if me.rpc_addr != advertised_rpc => bail!(
            "--voters says node {id} is at {}, but it advertises {advertised_rpc}; set --advertised-rpc {}",
            me.rpc_addr,
            me.rpc_addr
        ),
        _ => {}
    }
    if config.roles.is_empty() {
        bail!("--roles needs controller, broker or both");
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_reject_mistakes() {
        let v = parse_voters(&["1@a:1".into(), " 2@b:2".into()]).unwrap();
        assert_eq!(v[&1].rpc_addr, "a:1");
        assert_eq!(v[&2].rpc_addr, "b:2");
        assert!(parse_voters(&["1@a:1".into(), "1@b:2".into()]).is_err());
        assert!(parse_voters(&["x@a:1".into()]).is_err());
        assert!(parse_voters(&["1a:1".into()]).is_err());
        assert!(parse_voters(&["1@a".into()]).is_err());
    }

    /// The defaults with the flags the test names set (the binary checks that its flags'
    /// defaults are [`NodeConfig::default`]).
    fn config(node_id: i32, roles: &[Role], voters: &str) -> NodeConfig {
        NodeConfig {
            node_id,
            roles: roles.to_vec(),
            voters: voters
                .split(',')
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn roles_must_match_the_voters() {
        use Role::{Broker, Controller};
        let both = [Controller, Broker];
        let me = "127.0.0.1:9093";
        // No flags: a one-node cluster of this node.
        let voters = quorum(&NodeConfig::default(), me).unwrap();
        assert_eq!(voters.len(), 1);
        assert_eq!(voters[&1].rpc_addr, me);
        let three = "1@127.0.0.1:9093,2@h2:9093,3@h3:9093";
        assert_eq!(quorum(&config(1, &both, three), me).unwrap().len(), 3);
        // A controller missing from the voters, a broker-only node among them, a voter
        // advertising another address, a broker-only node without voters.
        let err = |c: NodeConfig, addr: &str| quorum(&c, addr).unwrap_err().to_string();
        assert!(err(config(4, &both, three), me).contains("not in --voters"));
        assert!(err(config(1, &[Broker], three), me).contains("controller role"));
        assert!(err(config(1, &both, three), "127.0.0.1:9999").contains("--advertised-rpc"));
        assert!(err(config(1, &[Broker], ""), me).contains("needs --voters"));
        assert_eq!(quorum(&config(4, &[Broker], three), me).unwrap().len(), 3);
    }

    #[test]
    fn configs_parse_and_reject_typos() {
        assert!(parse_configs(&["num.partitions=3".into()]).is_ok());
        assert!(parse_configs(&["num.partitions".into()]).is_err());
        assert!(parse_configs(&["num.partitons=3".into()]).is_err());
    }
}
