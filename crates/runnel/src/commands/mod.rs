//! CLI commands that talk to a cluster over the Kafka protocol, like any other client.

pub(crate) mod cluster;
pub(crate) mod consume;
pub(crate) mod group;
pub(crate) mod health;
pub(crate) mod produce;
pub(crate) mod topic;

use std::time::Duration;

use runnel_client::{Client, ClientConfig};
pub(crate) use runnel_lab::cli::{emit, explain, table};
pub(crate) use runnel_lab::outln;

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

/// Parses `KEY=VALUE`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

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
}
