//! A node's way to the active controller: finds it (from the local Raft's view, a
//! NOT_CONTROLLER hint, or else by trying the voters in turn), calls ControllerService there,
//! and retries with a short backoff until a deadline. Used for broker registration and
//! heartbeats and for every metadata command a node sends on behalf of a Kafka client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_rpc::controller::v1 as pb;
use runnel_rpc::controller::v1::controller_service_client::ControllerServiceClient;
use runnel_rpc::error_code;
use runnel_util::Backoff;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::command::{CommandResult, ControllerCommand};
use crate::error::{ControllerError, ResponseError};
use crate::raft::{Committed, Controller};

/// How long one call may take; a commit needs a quorum round trip and an fsync.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(1000);

/// Why a call did not reach an active controller in time.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no active controller answered within {waited:?} (last error: {last})")]
    Unavailable { waited: Duration, last: String },
    #[error("the active controller sent an answer this node cannot decode: {0}")]
    Decode(String),
}

/// An answer, or a pointer to where the active controller is.
enum Reply<T> {
    Done(T),
    NotController(Option<pb::ControllerHint>, String),
}

/// Calls ControllerService on whichever node is the active controller.
#[derive(Clone)]
pub struct ControllerClient {
    node_id: i32,
    controller: Arc<Controller>,
    /// The voters' RPC addresses, tried in turn when no leader is known (a learner that has
    /// not been added yet knows nothing else).
    voters: Vec<String>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ControllerClient {
    pub fn new(node_id: i32, controller: Arc<Controller>, voters: Vec<String>) -> Self {
        Self {
            node_id,
            controller,
            voters,
            channels: Arc::default(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad controller address {addr}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Where to try first: the leader the local Raft knows of.
    fn known_leader(&self) -> Option<String> {
        let (_, node) = self.controller.current_leader()?;
        node.map(|n| n.rpc_addr).filter(|a| !a.is_empty())
    }

    /// Calls `call` on the active controller until it answers or `deadline` passes.
    async fn call<T, F, Fut>(&self, deadline: Duration, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(ControllerServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Reply<T>, tonic::Status>>,
    {
        let start = Instant::now();
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF).with_deadline(start + deadline);
        let mut hinted: Option<String> = None;
        let mut next_voter = 0usize;
        let mut last = String::from("no attempt");
        loop {
            let target = hinted.take().or_else(|| self.known_leader()).or_else(|| {
                let addr = self
                    .voters
                    .get(next_voter % self.voters.len().max(1))
                    .cloned();
                next_voter += 1;
                addr
            });
            if let Some(addr) = target {
                match self.channel(&addr) {
                    Ok(channel) => {
                        let client = ControllerServiceClient::new(channel)
                            .max_decoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES)
                            .max_encoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES);
                        match call(client).await {
                            Ok(Reply::Done(t)) => return Ok(t),
                            Ok(Reply::NotController(hint, message)) => {
                                last = format!("{addr}: {message}");
                                if let Some(h) = hint.filter(|h| !h.rpc_address.is_empty()) {
                                    if h.rpc_address != addr {
                                        hinted = Some(h.rpc_address);
                                        continue;
                                    }
                                }
                            }
                            Err(status) => last = format!("{addr}: {}", status.message()),
                        }
                    }
                    Err(e) => last = e,
                }
            }
            if !backoff.wait().await {
                return Err(ClientError::Unavailable {
                    waited: start.elapsed(),
                    last,
                });
            }
        }
    }

    /// Registers this broker; the answer may carry a Kafka error other than NOT_CONTROLLER.
    pub async fn register(
        &self,
        request: pb::RegisterBrokerRequest,
        deadline: Duration,
    ) -> Result<pb::RegisterBrokerResponse, ClientError> {
        self.call(deadline, |mut c| {
            let request = request.clone();
            async move {
                let r = c.register_broker(request).await?.into_inner();
                Ok(
                    if error_code::decode(r.error_code) == Some(ResponseError::NotController) {
                        Reply::NotController(r.controller, r.error_message)
                    } else {
                        Reply::Done(r)
                    },
                )
            }
        })
        .await
    }

    /// One heartbeat; the answer may carry STALE_BROKER_EPOCH (register again).
    pub async fn heartbeat(
        &self,
        request: pb::BrokerHeartbeatRequest,
        deadline: Duration,
    ) -> Result<pb::BrokerHeartbeatResponse, ClientError> {
        self.call(deadline, |mut c| async move {
            let r = c.broker_heartbeat(request).await?.into_inner();
            Ok(
                if error_code::decode(r.error_code) == Some(ResponseError::NotController) {
                    Reply::NotController(r.controller, "not the active controller".into())
                } else {
                    Reply::Done(r)
                },
            )
        })
        .await
    }

    /// Commits `cmd` through the active controller and returns what applying it answered,
    /// with its log offset.
    pub async fn write(
        &self,
        cmd: &ControllerCommand,
        deadline: Duration,
    ) -> Result<Committed, ClientError> {
        let encoded = serde_json::to_vec(cmd).map_err(|e| ClientError::Decode(e.to_string()))?;
        let node_id = self.node_id;
        let response = self
            .call(deadline, |mut c| {
                let request = pb::WriteRequest {
                    origin_node_id: node_id,
                    command: encoded.clone().into(),
                };
                async move {
                    let r = c.write(request).await?.into_inner();
                    Ok(
                        if error_code::decode(r.error_code) == Some(ResponseError::NotController) {
                            Reply::NotController(r.controller, r.error_message)
                        } else if error_code::decode(r.error_code).is_some() {
                            // Not committed (lost leadership mid-write, storage trouble): retry.
                            Reply::NotController(None, r.error_message)
                        } else {
                            Reply::Done(r)
                        },
                    )
                }
            })
            .await?;
        let result: Result<CommandResult, ControllerError> =
            serde_json::from_slice(&response.result)
                .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Committed {
            result,
            offset: u64::try_from(response.offset).unwrap_or(0),
        })
    }
}
