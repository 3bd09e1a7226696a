//! `runnel health`: asks one node's `GET /health` and exits 0 only when it serves clients.
//! Container health checks run it, so the image needs no curl.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context as _};

use runnel_lab::cli::{http_agent, url};

#[derive(clap::Args, Debug)]
pub(crate) struct HealthArgs {
    /// The node's HTTP address. Default: the node's own `RUNNEL_HTTP_LISTEN` (a wildcard
    /// address such as 0.0.0.0 is asked on loopback), else 127.0.0.1:9644.
    #[arg(long = "http", value_name = "HOST:PORT")]
    http: Option<String>,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 3_000, value_name = "MS")]
    timeout_ms: u64,
}

pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let addr = match args.http {
        Some(addr) => addr,
        None => default_address(std::env::var("RUNNEL_HTTP_LISTEN").ok().as_deref())?,
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    tokio::task::spawn_blocking(move || check(&addr, timeout)).await?
}

/// The address a node started with `listen` answers on from inside its own host.
fn default_address(listen: Option<&str>) -> anyhow::Result<String> {
    let Some(listen) = listen else {
        return Ok("127.0.0.1:9644".to_owned());
    };
    let mut addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("RUNNEL_HTTP_LISTEN '{listen}' is not an ip:port address"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(addr.to_string())
}

fn check(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let target = url(addr, "/health");
    let mut response = http_agent(timeout)
        .get(&target)
        .call()
        .map_err(|e| anyhow!("{target}: {e}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| format!("(unreadable body: {e})"));
    if status.is_success() {
        println!("{}", body.trim());
        Ok(())
    } else {
        Err(anyhow!("{target} answered {status}: {}", body.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        assert_eq!(default_address(None).unwrap(), "127.0.0.1:9644");
        assert_eq!(
            default_address(Some("0.0.0.0:19644")).unwrap(),
            "127.0.0.1:19644"
        );
        assert_eq!(
            default_address(Some("10.1.2.3:9644")).unwrap(),
            "10.1.2.3:9644"
        );
        let err = default_address(Some("runnel-1:9644")).unwrap_err();
        assert!(err.to_string().contains("RUNNEL_HTTP_LISTEN"), "{err}");
    }
}
