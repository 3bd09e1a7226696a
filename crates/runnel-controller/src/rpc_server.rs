//! The node's one gRPC server: every service a node answers (Raft, controller requests, later
//! replica fetches) on one listener (`--rpc-listen`), stopped by [`RpcServer::shutdown`].

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

/// HTTP/2 pings on every connection: a peer that answers none within
/// [`KEEPALIVE_TIMEOUT`] (dead, partitioned, or never a gRPC client) is disconnected.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent calls per connection; a node's peers need a handful (one fetch stream per
/// follower, Raft RPCs, controller requests).
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Largest header block a peer may send: gRPC metadata is a few hundred bytes.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How long [`RpcServer::shutdown`] waits for in-flight calls to finish. Peers keep their
/// HTTP/2 connections open, so a graceful stop usually ends by this timeout: keep it short.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// A running gRPC server.
pub struct RpcServer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RpcServer {
    /// Serves `routes` on `listener` (with TCP_NODELAY: Raft heartbeats are small and
    /// latency-bound). Message sizes are limited per service (`runnel_rpc::MAX_MESSAGE_BYTES`);
    /// here the connection itself is bounded: keepalive pings, concurrent streams, header size.
    /// No per-call timeout: replica fetch streams live as long as the leadership they follow.
    pub fn start(listener: TcpListener, routes: Routes) -> RpcServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
                .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
                .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        RpcServer {
            stop: Some(stop),
            task,
        }
    }

    /// Stops accepting calls and waits (bounded) for the running ones.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(%e, "gRPC server failed"),
            Ok(Err(e)) => tracing::warn!(%e, "gRPC server panicked"),
            Err(_) => {
                tracing::debug!(
                    "gRPC connections still open after {DRAIN_TIMEOUT:?}; closing them"
                );
                self.task.abort();
            }
        }
    }
}

impl Drop for RpcServer {
    /// A server dropped without [`RpcServer::shutdown`] (a failing test) still stops serving.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
