//! What the lab's commands share with the binary's client commands: writing to stdout,
//! tables, hints for client errors, the acks flag and the HTTP client for the nodes'
//! endpoints. It lives here because the binary depends on the lab, not the other way round.

pub mod table;

use std::time::Duration;

use anyhow::anyhow;
use runnel_client::{acks, Error, ResponseError};

/// Turns a client error into a message that says what to do next.
pub fn explain(err: Error) -> anyhow::Error {
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

/// Writes to stdout, ignoring a closed pipe (e.g. `runnel topic list | head -1`) instead of
/// panicking like `print!` does.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `println!` that tolerates a closed stdout; see [`cli::emit`](crate::cli::emit).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// The acks setting of a produce request, as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Acks {
    /// Do not wait for the broker (no error reporting, no offsets).
    #[value(name = "0")]
    None,
    /// Wait for the leader to write the records.
    #[value(name = "1")]
    Leader,
    /// Wait for all in-sync replicas.
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    /// The value of the request's `acks` field.
    pub fn code(self) -> i16 {
        match self {
            Acks::None => acks::NONE,
            Acks::Leader => acks::LEADER,
            Acks::All => acks::ALL,
        }
    }

    /// How the flag spells it.
    pub fn label(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

impl serde::Serialize for Acks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// An HTTP client for nodes on the local network: short timeouts, no proxy, HTTP errors
/// returned as responses.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .proxy(None)
            .http_status_as_error(false)
            .build(),
    )
}

/// `http://host:port/path` for an address given with or without its scheme.
pub fn url(addr: &str, path: &str) -> String {
    let base = addr.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        format!("{base}{path}")
    } else {
        format!("http://{base}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn acks_codes_and_labels() {
        assert_eq!(Acks::None.code(), 0);
        assert_eq!(Acks::Leader.code(), 1);
        assert_eq!(Acks::All.code(), -1);
        assert_eq!(serde_json::to_string(&Acks::All).unwrap(), "\"all\"");
    }

    #[test]
    fn urls_take_addresses_with_or_without_scheme() {
        assert_eq!(
            url("127.0.0.1:9644", "/v1/cluster"),
            "http://127.0.0.1:9644/v1/cluster"
        );
        assert_eq!(url("http://h:1/", "/health"), "http://h:1/health");
    }
}
