//! CLI commands that talk to a cluster over the Kafka protocol, like any other client.

pub(crate) mod bounded_client;
pub(crate) mod chaos;
pub(crate) mod cluster;
pub(crate) mod cluster_target;
pub(crate) mod compose_cluster;
pub(crate) mod consume;
pub(crate) mod dev;
pub(crate) mod experiment;
pub(crate) mod group;
pub(crate) mod health;
pub(crate) mod local_cluster;
pub(crate) mod produce;
pub(crate) mod table;
pub(crate) mod topic;

use std::time::Duration;

use anyhow::anyhow;
use runnel_client::{Client, ClientConfig, Error, ResponseError};

/// How to reach the cluster; shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnectArgs {
    /// Comma-separated host:port list of brokers to bootstrap from.
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        env = "RUNNEL_BOOTSTRAP_SERVER",
        default_value = "localhost:9092",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub(crate) bootstrap_server: String,

    /// How long to wait for each broker response, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub(crate) request_timeout_ms: u64,
}

impl ConnectArgs {
    /// Connects and loads the broker list, turning failures into actionable messages.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let config = ClientConfig {
            client_id: "runnel-cli".to_owned(),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            ..ClientConfig::default()
        };
        Client::connect_with_config(&self.bootstrap_server, config)
            .await
            .map_err(explain)
    }
}

/// Turns a client error into a message that says what to do next.
pub(crate) fn explain(err: Error) -> anyhow::Error {
    let hint: Option<String> = match &err {
        Error::Connect { addr, source } => {
            let reason = match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => source.to_string(),
            };
            return anyhow!(
                "cannot connect to {addr}: {reason} — is a node running? start one with \
                 `runnel node` or `make run`, or point --bootstrap-server \
                 (RUNNEL_BOOTSTRAP_SERVER) at a running node"
            );
        }
        Error::Timeout { .. } => Some(
            "the broker is slow or unreachable; check the node's logs, or raise \
             --request-timeout-ms"
                .to_owned(),
        ),
        Error::InvalidBootstrap(_) => Some("example: --bootstrap-server localhost:9092".to_owned()),
        Error::UnsupportedVersion { .. } => {
            Some("is --bootstrap-server pointing at a Kafka-compatible broker?".to_owned())
        }
        Error::Kafka {
            error, topic, partition, ..
        } => match (error, topic) {
            (ResponseError::UnknownTopicOrPartition, Some(t)) if partition.is_none() => Some(
                format!("list topics with `runnel topic list`, or create it with `runnel topic create {t}`"),
            ),
            (ResponseError::UnknownTopicOrPartition, Some(t)) => {
                Some(format!("see its partitions with `runnel topic describe {t}`"))
            }
            (ResponseError::TopicAlreadyExists, Some(t)) => {
                Some(format!("inspect it with `runnel topic describe {t}`"))
            }
            (ResponseError::InvalidReplicationFactor, _) => Some(
                "the replication factor cannot exceed the number of nodes; omit \
                 --replication-factor to use the cluster default"
                    .to_owned(),
            ),
            (ResponseError::InvalidPartitions, _) => {
                Some("the partition count must be positive (and larger than the current count when adding partitions)".to_owned())
            }
            (ResponseError::InvalidConfig, _) => {
                Some("check the config name and value".to_owned())
            }
            (ResponseError::NotLeaderOrFollower | ResponseError::LeaderNotAvailable, _) => {
                Some("the cluster may be electing a leader; retry in a moment".to_owned())
            }
            _ => None,
        },
        Error::NoLeader { .. } => {
            Some("the cluster may be electing a leader; retry in a moment".to_owned())
        }
        _ => None,
    };
    match hint {
        Some(h) => anyhow!("{err} — {h}"),
        None => anyhow::Error::new(err),
    }
}

/// Parses `KEY=VALUE`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// Writes to stdout, ignoring a closed pipe (e.g. `runnel topic list | head -1`) instead of
/// panicking like `print!` does.
pub(crate) fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `println!` that tolerates a closed stdout; see [`emit`].
macro_rules! outln {
    () => {
        $crate::commands::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::commands::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Whether an I/O error means stdout's reader went away (e.g. `| head`).
pub(crate) fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("retention.ms=1000").unwrap(),
            ("retention.ms".to_owned(), "1000".to_owned())
        );
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert_eq!(
            parse_key_value("a=").unwrap(),
            ("a".to_owned(), String::new())
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn connection_refused_hint() {
        let err = Error::Connect {
            addr: "localhost:9092".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let msg = explain(err).to_string();
        assert!(
            msg.starts_with(
                "cannot connect to localhost:9092: connection refused — is a node running?"
            ),
            "{msg}"
        );
    }

    #[test]
    fn unknown_topic_hint() {
        let err = Error::from_code(3, Some("orders"), None, None).unwrap();
        let msg = explain(err).to_string();
        assert_eq!(
            msg,
            "topic 'orders' does not exist (UNKNOWN_TOPIC_OR_PARTITION) — list topics with \
             `runnel topic list`, or create it with `runnel topic create orders`"
        );
    }
}
