//! The client half of the Raft transport: openraft's [`RaftNetworkFactory`] over the generated
//! `RaftService` gRPC client.
//!
//! Each request is openraft's own request type serialized as JSON into
//! `RaftRequest.payload`; the peer answers with openraft's `Result<response, RaftError>` as
//! JSON in `RaftResponse.payload` (see [`super::service`]). A gRPC failure (peer down,
//! connection refused, timeout) is a transport error: reported to openraft as
//! [`Unreachable`] when the peer cannot be reached (openraft then backs off before retrying)
//! and as a [`NetworkError`] otherwise. A `RaftError` the peer returned is a
//! [`RemoteError`].

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetwork;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use parking_lot::Mutex;
use runnel_rpc::controller::v1::raft_service_client::RaftServiceClient;
use runnel_rpc::controller::v1::RaftRequest;
use runnel_rpc::controller::v1::RaftResponse;
use runnel_rpc::MAX_MESSAGE_BYTES;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::store::RaftNode;
use crate::store::TypeConfig;

/// How long dialing a peer may take before the attempt counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Timeout of an RPC for which openraft gives none (it always does today; this bounds a
/// call regardless).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Rpc<E = openraft::error::Infallible> = RPCError<u64, RaftNode, E>;

/// Creates [`GrpcNetwork`] clients for openraft. Channels are cached per peer (id and
/// address), so the replication stream, votes and snapshot transfer to one peer share one
/// HTTP/2 connection, and a peer whose address changes in the membership gets a new one.
#[derive(Clone, Default)]
pub struct GrpcNetworkFactory {
    channels: Arc<Mutex<HashMap<u64, (String, Channel)>>>,
}

impl std::fmt::Debug for GrpcNetworkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcNetworkFactory").finish_non_exhaustive()
    }
}

impl GrpcNetworkFactory {
    /// A factory with no connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached channel to `target` at `addr`, created (unconnected) if absent. tonic
    /// connects it on first use and reconnects it after the peer comes back.
    fn channel(&self, target: u64, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some((cached_addr, channel)) = channels.get(&target) {
            if cached_addr == addr {
                return Ok(channel.clone());
            }
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("invalid Raft address {addr:?} of node {target}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(target, (addr.to_owned(), channel.clone()));
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: u64, node: &RaftNode) -> GrpcNetwork {
        let client = self.channel(target, &node.rpc_addr).map(|channel| {
            RaftServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        GrpcNetwork {
            target,
            node: node.clone(),
            client,
            reachable: true,
        }
    }
}

/// The connection to one peer, as openraft uses it.
pub struct GrpcNetwork {
    target: u64,
    node: RaftNode,
    /// The client, or why none could be made (an unparsable address).
    client: Result<RaftServiceClient<Channel>, String>,
    /// Whether the last call reached the peer: a change is logged once, not every retry
    /// (openraft's own per-retry logs are filtered out by default).
    reachable: bool,
}

/// A transport failure as a plain error type, for openraft's `AnyError` wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

/// Which generated RPC to call.
#[derive(Clone, Copy, Debug)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl GrpcNetwork {
    /// Sends `request` with `method` and decodes the peer's `Result<Resp, RaftError<E>>`,
    /// logging when the peer becomes unreachable and when it is back.
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Rpc<RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let result = self.call_once(method, request, option).await;
        match &result {
            Err(RPCError::Unreachable(e)) if self.reachable => {
                self.reachable = false;
                tracing::warn!(peer = self.target, addr = %self.node.rpc_addr, error = %e, "controller peer unreachable");
            }
            Ok(_) | Err(RPCError::RemoteError(_)) if !self.reachable => {
                self.reachable = true;
                tracing::info!(peer = self.target, addr = %self.node.rpc_addr, "controller peer reachable again");
            }
            _ => {}
        }
        result
    }

    async fn call_once<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Rpc<RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => return Err(unreachable(&TransportError(e.clone()))),
        };
        let payload = serde_json::to_vec(request).map_err(|e| network(&e))?;
        let timeout = match option.hard_ttl() {
            ttl if ttl.is_zero() => DEFAULT_REQUEST_TIMEOUT,
            ttl => ttl,
        };
        let mut request = tonic::Request::new(RaftRequest {
            payload: payload.into(),
        });
        request.set_timeout(timeout);
        let response = send(client, method, request);
        let response = match tokio::time::timeout(timeout, response).await {
            Err(elapsed) => return Err(unreachable(&elapsed)),
            Ok(Err(status)) => return Err(status_error(self.target, method, &status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&response.payload).map_err(|e| network(&e))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

/// Calls `method` on a clone of the client (so the future owns it).
async fn send(
    mut client: RaftServiceClient<Channel>,
    method: Method,
    request: tonic::Request<RaftRequest>,
) -> Result<tonic::Response<RaftResponse>, tonic::Status> {
    match method {
        Method::AppendEntries => client.append_entries(request).await,
        Method::Vote => client.vote(request).await,
        Method::InstallSnapshot => client.install_snapshot(request).await,
    }
}

fn unreachable<E: Error + 'static, R: Error>(e: &E) -> Rpc<R> {
    RPCError::Unreachable(Unreachable::new(e))
}

fn network<E: Error + 'static, R: Error>(e: &E) -> Rpc<R> {
    RPCError::Network(NetworkError::new(e))
}

/// A gRPC status: the peer is unreachable if the call never got to it (connection refused or
/// reset, no answer in time), otherwise the call failed in transit or in the server.
fn status_error<R: Error>(target: u64, method: Method, status: &tonic::Status) -> Rpc<R> {
    tracing::debug!(target, ?method, %status, "Raft RPC failed");
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            unreachable(status)
        }
        _ => network(status),
    }
}

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Rpc<RaftError<u64>>> {
        self.call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Rpc<RaftError<u64, InstallSnapshotError>>> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, Rpc<RaftError<u64>>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
