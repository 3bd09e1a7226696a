//! The server half of the Raft transport: the generated `RaftService` answering a peer's
//! openraft RPCs with the local [`Raft`].
//!
//! A payload is openraft's request serialized as JSON; the answer is openraft's
//! `Result<response, RaftError>` as JSON, so a refusal by Raft (this node shutting down, a
//! snapshot it cannot take) reaches the peer's openraft as the error it returned here. A gRPC
//! error status means the request could not be decoded, or (for a vote) that this voter may
//! not vote yet ([`super::rejoin`]): the candidate then treats it as unreachable.

use openraft::Raft;
use runnel_rpc::controller::v1::raft_service_server::RaftService;
use runnel_rpc::controller::v1::raft_service_server::RaftServiceServer;
use runnel_rpc::controller::v1::RaftRequest;
use runnel_rpc::controller::v1::RaftResponse;
use runnel_rpc::controller::v1::RaftStatusRequest;
use runnel_rpc::controller::v1::RaftStatusResponse;
use runnel_rpc::MAX_MESSAGE_BYTES;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::rejoin::{status_of, VoteGate};
use crate::store::TypeConfig;

/// Serves the local node's Raft to its peers.
#[derive(Clone)]
pub struct RaftGrpcService {
    raft: Raft<TypeConfig>,
    node_id: u64,
    vote_gate: watch::Receiver<VoteGate>,
}

impl RaftGrpcService {
    /// Answers peers' RPCs with `raft` (node `node_id`), granting votes once `vote_gate` is
    /// open.
    pub fn new(raft: Raft<TypeConfig>, node_id: u64, vote_gate: watch::Receiver<VoteGate>) -> Self {
        Self {
            raft,
            node_id,
            vote_gate,
        }
    }

    /// The tonic service, with Runnel's message size limits.
    pub fn into_server(self) -> RaftServiceServer<Self> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftRequest>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft request: {e}")))
}

fn encode<T: Serialize>(result: &T) -> Result<Response<RaftResponse>, Status> {
    let payload = serde_json::to_vec(result)
        .map_err(|e| Status::internal(format!("unencodable Raft response: {e}")))?;
    Ok(Response::new(RaftResponse {
        payload: payload.into(),
    }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpcService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftResponse>, Status> {
        let result = self.raft.append_entries(decode(request)?).await;
        encode(&result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        let gate = *self.vote_gate.borrow();
        match gate {
            VoteGate::Open => {}
            VoteGate::Undecided => {
                return Err(Status::unavailable(
                    "this controller's storage is new and it does not know yet whether the \
                     cluster is: it does not vote yet",
                ))
            }
            VoteGate::CatchingUp { target } => {
                return Err(Status::unavailable(format!(
                    "this controller lost its Raft state and does not vote until it holds the \
                     metadata log up to index {target}"
                )))
            }
        }
        let result = self.raft.vote(decode(request)?).await;
        encode(&result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftResponse>, Status> {
        let result = self.raft.install_snapshot(decode(request)?).await;
        encode(&result)
    }

    async fn status(
        &self,
        _request: Request<RaftStatusRequest>,
    ) -> Result<Response<RaftStatusResponse>, Status> {
        Ok(Response::new(status_of(&self.raft, self.node_id)))
    }
}
