//! The Kafka client of the commands that drive a cluster under faults (`chaos`,
//! `experiment`): short connect and request timeouts, and every connection attempt bounded,
//! so a dead or frozen node never stalls a run.

use std::time::Duration;

use anyhow::{bail, Context};
use runnel_client::{Client, ClientConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one connection attempt (the client tries each bootstrap server in turn).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects as `client_id`, giving up after [`ATTEMPT_TIMEOUT`].
pub(crate) async fn connect(bootstrap: &str, client_id: &str) -> anyhow::Result<Client> {
    let config = ClientConfig {
        client_id: client_id.to_owned(),
        connect_timeout: CONNECT_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::default()
    };
    match tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        Client::connect_with_config(bootstrap, config),
    )
    .await
    {
        Ok(r) => r.with_context(|| format!("cannot connect to {bootstrap}")),
        Err(_) => bail!("no broker of {bootstrap} answered within {ATTEMPT_TIMEOUT:?}"),
    }
}
