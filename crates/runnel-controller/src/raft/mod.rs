//! The controller's Raft: openraft over the sled storage ([`crate::store`]) with a gRPC
//! transport (`runnel.controller.v1.RaftService`), as one [`Controller`] a node starts.
//!
//! - [`network`]: the client side, openraft's network factory over tonic channels.
//! - [`service`]: the server side, the `RaftService` answering peers with the local Raft.
//!
//! Every node is started with the same voter set (`--voters`). On the very first start
//! (nothing in the log, no vote) the voter with the lowest id initializes the cluster with
//! that set once a peer confirms the cluster is new; the others wait to be contacted. A voter
//! whose storage is empty while its peers hold metadata lost its data dir: it votes only once
//! it has caught up ([`rejoin`]). A restarted controller finds its log, vote and membership
//! on disk and rejoins without initializing anything. A node that is not a voter
//! starts the same Raft without initializing it: the active controller adds it as a learner
//! when it registers, and from then on it receives the metadata log like the voters.
//!
//! The controller does not own a server: the node serves [`Controller::raft_service`] beside
//! its other gRPC services on one listener ([`crate::rpc_server`]).

pub mod network;
pub mod rejoin;
pub mod service;

use std::collections::BTreeMap;
use std::path::Path;

use openraft::error::ClientWriteError;
use openraft::error::Fatal;
use openraft::error::RaftError;
use openraft::storage::RaftLogStorage;
use openraft::Raft;
use openraft::RaftMetrics;
use openraft::SnapshotPolicy;
use runnel_rpc::controller::v1::raft_service_server::RaftServiceServer;
use tokio::sync::watch;

use crate::command::CommandResult;
use crate::command::ControllerCommand;
use crate::error::ControllerError;
use crate::store::AppliedState;
use crate::store::RaftNode;
use crate::store::StoreError;
use crate::store::TypeConfig;

pub use network::GrpcNetworkFactory;
pub use rejoin::VoteGate;
pub use service::RaftGrpcService;

/// Heartbeat interval, in milliseconds (also openraft's timeout for one AppendEntries).
pub const HEARTBEAT_INTERVAL_MS: u64 = 150;
/// A follower that hears from no leader for a random time in this range (milliseconds)
/// starts an election.
pub const ELECTION_TIMEOUT_MS: (u64, u64) = (1000, 2000);
/// A snapshot of the image is taken every this many log entries.
pub const SNAPSHOT_EVERY_LOGS: u64 = 10_000;

/// The openraft configuration every controller runs with (constant, checked by openraft's
/// `validate` and by a unit test).
pub fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "runnel-controller".to_owned(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MS.0,
        election_timeout_max: ELECTION_TIMEOUT_MS.1,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_LOGS),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
    .validate()
    .expect("the controller's constant Raft configuration is valid")
}

/// Why a controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The storage could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The storage could not be read.
    #[error("controller storage: {0}")]
    Storage(#[from] openraft::StorageError<u64>),
    /// No voters were given.
    #[error("the controller needs at least one voter")]
    NoVoters,
    /// Raft stopped while starting.
    #[error("controller Raft stopped: {0}")]
    Fatal(#[from] Fatal<u64>),
    /// Initializing a one-voter cluster failed for another reason than it being initialized
    /// already.
    #[error("initializing the controller cluster: {0}")]
    Initialize(String),
}

/// A command committed to the metadata log: what applying it answered (a refusal is an
/// answer too, the same on every node) and the log index it was committed at. A node that
/// has applied `offset` sees the change.
#[derive(Debug)]
pub struct Committed {
    pub result: Result<CommandResult, ControllerError>,
    pub offset: u64,
}

/// Why a command was not committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This controller is not the leader; send the command to `leader_id` at `leader_addr`
    /// (either unknown during an election).
    #[error("not the active controller (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader_id: Option<u64>,
        /// Its Raft RPC address.
        leader_addr: Option<String>,
    },
    /// This controller's Raft has stopped (shut down, or a storage failure).
    #[error("controller Raft stopped: {0}")]
    Fatal(Fatal<u64>),
    /// Another Raft error (not expected for a command).
    #[error("controller Raft: {0}")]
    Raft(String),
}

/// A running controller: its Raft and the applied metadata image.
pub struct Controller {
    node_id: u64,
    raft: Raft<TypeConfig>,
    applied: watch::Receiver<AppliedState>,
    /// Whether this voter may grant votes yet ([`rejoin`]).
    vote_gate: watch::Receiver<VoteGate>,
    /// The task deciding that, while it runs.
    rejoin: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Starts controller `node_id`: opens (creating it) the Raft storage in `data_dir` (the
    /// node passes `<data-dir>/controller`). With fresh storage, a voter first learns from its
    /// peers whether the cluster is new (then the lowest voter initializes it with `voters`)
    /// or whether it lost its state ([`rejoin`]). Raft RPCs reach it once the node serves
    /// [`Controller::raft_service`].
    pub async fn start(
        node_id: u64,
        data_dir: &Path,
        voters: BTreeMap<u64, RaftNode>,
    ) -> Result<Controller, StartError> {
        let lowest = *voters.keys().next().ok_or(StartError::NoVoters)?;
        let config = std::sync::Arc::new(raft_config());
        let (mut log, state_machine) = crate::store::open(data_dir)?;
        let fresh =
            log.read_vote().await?.is_none() && log.get_log_state().await?.last_log_id.is_none();
        let applied = state_machine.subscribe();
        let raft = Raft::new(
            node_id,
            config,
            GrpcNetworkFactory::new(),
            log,
            state_machine,
        )
        .await?;
        let voter = voters.contains_key(&node_id);
        tracing::info!(node_id, fresh, voter, "controller Raft started");

        let (gate, vote_gate) = watch::channel(VoteGate::Open);
        let mut rejoin = None;
        if fresh && voter {
            if voters.len() == 1 {
                initialize_alone(&raft, node_id, voters).await?;
            } else {
                gate.send_replace(VoteGate::Undecided);
                rejoin = Some(tokio::spawn(rejoin::rejoin(
                    raft.clone(),
                    node_id,
                    voters,
                    node_id == lowest,
                    gate,
                )));
            }
        }
        Ok(Controller {
            node_id,
            raft,
            applied,
            vote_gate,
            rejoin,
        })
    }

    /// The gRPC service answering this controller's Raft peers.
    pub fn raft_service(&self) -> RaftServiceServer<RaftGrpcService> {
        RaftGrpcService::new(self.raft.clone(), self.node_id, self.vote_gate.clone()).into_server()
    }

    /// This controller's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The local openraft handle.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Proposes `cmd` and waits until it is committed and applied here. Only the leader can
    /// propose: elsewhere this answers [`WriteError::NotLeader`] naming the leader.
    pub async fn write(&self, cmd: ControllerCommand) -> Result<Committed, WriteError> {
        match self.raft.client_write(cmd).await {
            Ok(response) => Ok(Committed {
                result: response.data,
                offset: response.log_id.index,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(WriteError::NotLeader {
                    leader_id: forward.leader_id,
                    leader_addr: forward.leader_node.map(|node| node.rpc_addr),
                })
            }
            Err(RaftError::APIError(e)) => Err(WriteError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(WriteError::Fatal(e)),
        }
    }

    /// openraft's metrics: state, term, leader, last applied, membership.
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<u64, RaftNode>> {
        self.raft.metrics()
    }

    /// The leader this node currently knows of, with its address if the membership has it.
    pub fn current_leader(&self) -> Option<(u64, Option<RaftNode>)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned();
        Some((leader, node))
    }

    /// Whether this node is the leader now (by its metrics; a leader that has just lost its
    /// quorum may not know yet). A restarted node may name itself leader from its stored vote
    /// before it is one again, so the Raft state must say Leader too.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == openraft::ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// The applied metadata image now and after every change.
    pub fn subscribe(&self) -> watch::Receiver<AppliedState> {
        self.applied.clone()
    }

    /// Whether this voter grants votes yet ([`rejoin`]).
    pub fn vote_gate(&self) -> VoteGate {
        *self.vote_gate.borrow()
    }

    /// Stops Raft; its storage is closed when its tasks end.
    pub async fn shutdown(&self) {
        if let Some(rejoin) = &self.rejoin {
            rejoin.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node_id = self.node_id, %e, "controller Raft ended abnormally");
        }
        tracing::info!(node_id = self.node_id, "controller stopped");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(rejoin) = &self.rejoin {
            rejoin.abort();
        }
    }
}

/// Initializes a cluster of one voter: there is no peer to ask whether it is new.
async fn initialize_alone(
    raft: &Raft<TypeConfig>,
    node_id: u64,
    voters: BTreeMap<u64, RaftNode>,
) -> Result<(), StartError> {
    match raft.initialize(voters).await {
        Ok(()) => tracing::info!(node_id, "initialized the controller cluster"),
        Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(e))) => {
            tracing::debug!(node_id, %e, "controller cluster already initialized");
        }
        Err(e) => {
            let e = StartError::Initialize(e.to_string());
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(node_id, %e, "controller Raft ended abnormally");
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn raft_config_is_valid() {
        let config = super::raft_config();
        assert_eq!(config.heartbeat_interval, super::HEARTBEAT_INTERVAL_MS);
        assert!(config.election_timeout_min > 5 * config.heartbeat_interval);
    }
}
