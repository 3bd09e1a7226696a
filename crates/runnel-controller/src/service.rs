//! `runnel.controller.v1.ControllerService`: what brokers ask the active controller. Every
//! node serves it; a node that is not the Raft leader answers NOT_CONTROLLER with a hint
//! naming the leader it knows of, so the caller goes there directly.

use std::sync::Arc;

use runnel_rpc::controller::v1 as pb;
use runnel_rpc::controller::v1::controller_service_server::{
    ControllerService, ControllerServiceServer,
};
use runnel_rpc::error_code;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::command::{CommandResult, ControllerCommand};
use crate::error::ResponseError;
use crate::image::Endpoint;
use crate::liveness::BrokerLiveness;
use crate::raft::{Committed, Controller, WriteError};
use crate::store::RaftNode;

/// The ControllerService of one node.
pub struct ControllerGrpcService {
    liveness: Arc<BrokerLiveness>,
}

/// A refusal to carry in a response: a Kafka error code, a sentence and, for NOT_CONTROLLER,
/// where the leader is.
struct Refusal {
    code: ResponseError,
    message: String,
    hint: Option<pb::ControllerHint>,
}

impl Refusal {
    fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }
}

impl ControllerGrpcService {
    pub fn new(liveness: Arc<BrokerLiveness>) -> Self {
        Self { liveness }
    }

    pub fn into_server(self) -> ControllerServiceServer<Self> {
        ControllerServiceServer::new(self)
            .max_decoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES)
    }

    fn controller(&self) -> &Arc<Controller> {
        self.liveness.controller()
    }

    /// NOT_CONTROLLER with the leader this node knows of.
    fn not_controller(&self) -> Refusal {
        let hint = match self.controller().current_leader() {
            Some((id, node)) => pb::ControllerHint {
                node_id: i32::try_from(id).unwrap_or(-1),
                rpc_address: node.map(|n| n.rpc_addr).unwrap_or_default(),
            },
            None => pb::ControllerHint {
                node_id: -1,
                rpc_address: String::new(),
            },
        };
        Refusal {
            code: ResponseError::NotController,
            message: format!(
                "node {} is not the active controller",
                self.controller().node_id()
            ),
            hint: Some(hint),
        }
    }

    fn ensure_leader(&self) -> Result<(), Refusal> {
        if self.controller().is_leader() {
            Ok(())
        } else {
            Err(self.not_controller())
        }
    }

    async fn write(&self, cmd: ControllerCommand) -> Result<Committed, Refusal> {
        self.controller().write(cmd).await.map_err(|e| match e {
            WriteError::NotLeader { .. } => self.not_controller(),
            other => Refusal::new(ResponseError::RequestTimedOut, other.to_string()),
        })
    }

    async fn register(&self, r: pb::RegisterBrokerRequest) -> Result<(i64, u64), Refusal> {
        self.ensure_leader()?;
        let incarnation = Uuid::from_slice(&r.incarnation_id).map_err(|_| {
            Refusal::new(
                ResponseError::InvalidRequest,
                "the incarnation id is not 16 bytes",
            )
        })?;
        let directory_id = match r.directory_id.as_deref() {
            None => None,
            Some(bytes) => Some(Uuid::from_slice(bytes).map_err(|_| {
                Refusal::new(
                    ResponseError::InvalidRequest,
                    "the directory id is not 16 bytes",
                )
            })?),
        };
        let image = self.controller().subscribe().borrow().data.clone();
        if !r.cluster_id.is_empty()
            && !image.cluster_id.is_empty()
            && r.cluster_id != image.cluster_id
        {
            return Err(Refusal::new(
                ResponseError::InconsistentClusterId,
                format!(
                    "broker {} belongs to cluster {}, but this is cluster {}",
                    r.node_id, r.cluster_id, image.cluster_id
                ),
            ));
        }
        if image.cluster_id.is_empty() {
            // The first registration of a new cluster: set the cluster id first, so no broker
            // is ever unfenced (and serving clients) without one. A race with the timer's
            // InitCluster is harmless: the second is a refused no-op.
            self.write(ControllerCommand::InitCluster {
                cluster_id: crate::liveness::new_cluster_id(),
            })
            .await?;
        }
        self.ensure_member(r.node_id, &r.rpc_address).await?;
        let committed = self
            .write(ControllerCommand::RegisterBroker {
                id: r.node_id,
                incarnation,
                host: r.kafka_host,
                port: r.kafka_port,
                listeners: r
                    .listeners
                    .into_iter()
                    .map(|l| Endpoint {
                        name: l.name,
                        host: l.host,
                        port: l.port,
                    })
                    .collect(),
                rpc_address: r.rpc_address,
                rack: r.rack,
                directory_id,
                previous_broker_epoch: r.previous_broker_epoch,
            })
            .await?;
        match committed.result {
            Ok(CommandResult::BrokerRegistered { broker_epoch, .. }) => {
                self.liveness.on_register(r.node_id, committed.offset);
                tracing::info!(broker = r.node_id, broker_epoch, "broker registered");
                Ok((broker_epoch, committed.offset))
            }
            Ok(other) => Err(Refusal::new(
                ResponseError::UnknownServerError,
                format!("unexpected result {other:?}"),
            )),
            Err(e) => Err(Refusal::new(e.code(), e.to_string())),
        }
    }

    /// A node that is neither voter nor learner becomes a learner, so the metadata log
    /// reaches it.
    async fn ensure_member(&self, node_id: i32, rpc_address: &str) -> Result<(), Refusal> {
        let id = u64::try_from(node_id).map_err(|_| {
            Refusal::new(ResponseError::InvalidRequest, "broker ids are not negative")
        })?;
        let (known, voter) = {
            let metrics = self.controller().metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voter = membership.voter_ids().any(|v| v == id);
            (membership.get_node(&id).cloned(), voter)
        };
        if known.as_ref().is_some_and(|n| n.rpc_addr == rpc_address) {
            return Ok(());
        }
        if voter {
            // Voters keep the address the quorum was formed with (membership changes are not
            // supported yet); the broker registers all the same.
            tracing::warn!(
                node = node_id,
                registered = rpc_address,
                quorum = known.map(|n| n.rpc_addr).unwrap_or_default(),
                "a voter registered with another RPC address than the quorum knows; its peers keep using the old one"
            );
            return Ok(());
        }
        tracing::info!(
            node = node_id,
            rpc_address,
            "adding node as a metadata learner"
        );
        let node = RaftNode {
            rpc_addr: rpc_address.to_string(),
        };
        self.controller()
            .raft()
            .add_learner(id, node, false)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::error::RaftError::APIError(
                    openraft::error::ClientWriteError::ForwardToLeader(_),
                ) => self.not_controller(),
                other => Refusal::new(ResponseError::RequestTimedOut, other.to_string()),
            })
    }

    async fn heartbeat(
        &self,
        r: pb::BrokerHeartbeatRequest,
    ) -> Result<pb::BrokerHeartbeatResponse, Refusal> {
        self.ensure_leader()?;
        let image = self.controller().subscribe().borrow().data.clone();
        let broker = image
            .broker(r.node_id)
            .filter(|b| b.epoch == r.broker_epoch)
            .ok_or_else(|| {
                Refusal::new(
                    ResponseError::StaleBrokerEpoch,
                    format!(
                        "broker {} with epoch {} is not registered; register again",
                        r.node_id, r.broker_epoch
                    ),
                )
            })?;
        let required = self
            .liveness
            .on_heartbeat(r.node_id)
            .ok_or_else(|| self.not_controller())?;
        let caught_up = u64::try_from(r.current_metadata_offset).is_ok_and(|o| o >= required);
        let mut fenced = broker.fenced;
        let mut should_shut_down = false;
        if r.wants_shutdown || r.log_dir_offline {
            if !fenced {
                if r.log_dir_offline {
                    tracing::warn!(
                        broker = r.node_id,
                        "the broker's data dir is offline after a disk error: fencing it, which moves its leaderships and takes it out of the ISRs"
                    );
                } else {
                    tracing::info!(
                        broker = r.node_id,
                        "controlled shutdown: moving leadership away"
                    );
                }
                self.write(ControllerCommand::FenceBroker { id: r.node_id })
                    .await?;
                fenced = true;
            }
            should_shut_down = r.wants_shutdown;
        } else if fenced && caught_up && !r.wants_fence {
            let committed = self
                .write(ControllerCommand::UnfenceBroker { id: r.node_id })
                .await?;
            if committed.result.is_ok() {
                tracing::info!(broker = r.node_id, "broker caught up: unfenced");
                fenced = false;
            }
        }
        Ok(pb::BrokerHeartbeatResponse {
            error_code: error_code::encode(None),
            controller: None,
            is_caught_up: caught_up,
            is_fenced: fenced,
            should_shut_down,
        })
    }

    async fn write_encoded(&self, r: pb::WriteRequest) -> Result<pb::WriteResponse, Refusal> {
        self.ensure_leader()?;
        let cmd: ControllerCommand = serde_json::from_slice(&r.command).map_err(|e| {
            Refusal::new(
                ResponseError::InvalidRequest,
                format!(
                    "cannot decode the command from node {}: {e}",
                    r.origin_node_id
                ),
            )
        })?;
        let committed = self.write(cmd).await?;
        let result = serde_json::to_vec(&committed.result)
            .map_err(|e| Refusal::new(ResponseError::UnknownServerError, e.to_string()))?;
        Ok(pb::WriteResponse {
            error_code: error_code::encode(None),
            error_message: String::new(),
            controller: None,
            result: result.into(),
            offset: i64::try_from(committed.offset).unwrap_or(i64::MAX),
        })
    }
}

#[tonic::async_trait]
impl ControllerService for ControllerGrpcService {
    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        let response = match self.register(request.into_inner()).await {
            Ok((broker_epoch, _)) => pb::RegisterBrokerResponse {
                error_code: error_code::encode(None),
                error_message: String::new(),
                broker_epoch,
                controller: None,
            },
            Err(r) => pb::RegisterBrokerResponse {
                error_code: error_code::encode(Some(r.code)),
                error_message: r.message,
                broker_epoch: -1,
                controller: r.hint,
            },
        };
        Ok(Response::new(response))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let response = self
            .heartbeat(request.into_inner())
            .await
            .unwrap_or_else(|r| pb::BrokerHeartbeatResponse {
                error_code: error_code::encode(Some(r.code)),
                controller: r.hint,
                is_caught_up: false,
                is_fenced: true,
                should_shut_down: false,
            });
        Ok(Response::new(response))
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let response = self
            .write_encoded(request.into_inner())
            .await
            .unwrap_or_else(|r| pb::WriteResponse {
                error_code: error_code::encode(Some(r.code)),
                error_message: r.message,
                controller: r.hint,
                result: Default::default(),
                offset: -1,
            });
        Ok(Response::new(response))
    }
}
