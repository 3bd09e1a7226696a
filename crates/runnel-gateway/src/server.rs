//! The accept loop: caps concurrent connections (`max.connections`, node-wide, and
//! `max.connections.per.ip`), spawns one task per connection, and on shutdown stops accepting
//! and lets open connections answer what they already read.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Context;

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves Kafka clients on `listener` until `shutdown` becomes true.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let limits = ctx.limits.clone();
    let mut connections = JoinSet::new();
    loop {
        // Waiting for a permit before accepting makes excess clients queue in the kernel's
        // backlog instead of costing the node a task each.
        let permit = tokio::select! {
            permit = limits.connection_slot() => match permit {
                Some(p) => p,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Past its address's limit a connection is closed at once, unanswered, as Kafka does.
        let ip_slot = match limits.admit_ip(peer.ip()) {
            Ok(slot) => slot,
            Err(max) => {
                limits.warnings.warn(|suppressed| {
                    tracing::info!(%peer, max, suppressed, "rejected a connection: its address already has max.connections.per.ip connections");
                });
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            crate::connection::run(socket, peer, ctx, shutdown).await;
            drop((permit, ip_slot));
        });
        while connections.try_join_next().is_some() {}
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
}
