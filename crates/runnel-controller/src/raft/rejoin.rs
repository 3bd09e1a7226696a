//! A voter that starts with empty Raft storage: a new cluster, or a wiped or replaced data dir.
//!
//! Raft's safety rests on a voter never forgetting its vote or its log. A voter whose data
//! dir was wiped would otherwise grant its vote to any candidate in any term, and it may
//! have been one of the majority that committed entries its peers lack: two such votes can
//! elect a leader without committed metadata, which then erases it everywhere. Like KIP-853's
//! directory ids, the node tells "new" from "wiped" by asking: before its first vote, a fresh
//! voter asks its peers ([`RaftStatus`]). If any has applied metadata, the cluster exists and
//! this voter lost its state; it then grants no vote until its log has caught up with what
//! the active controller had applied when it asked, and only after that does it count as a
//! voter again. The lowest voter initializes a new cluster only once a peer has confirmed
//! that nothing was ever committed.
//!
//! What this does not cover: a majority of voters wiped at once (their peers cannot tell
//! them what was committed); Raft tolerates the loss of a minority only.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::InitializeError;
use openraft::error::RaftError;
use openraft::Raft;
use runnel_rpc::controller::v1::raft_service_client::RaftServiceClient;
use runnel_rpc::controller::v1::RaftStatusRequest;
use runnel_rpc::controller::v1::RaftStatusResponse;
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::store::RaftNode;
use crate::store::TypeConfig;

/// How often a fresh voter asks its peers while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Bound on one status call.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether this controller may grant votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteGate {
    /// Fresh storage, and no peer has answered yet: a new cluster or a wiped voter.
    Undecided,
    /// A wiped voter, catching up to `target` (the active controller's applied index).
    CatchingUp { target: u64 },
    /// Votes as Raft says.
    Open,
}

/// What a peer's Raft holds.
pub type RaftStatus = RaftStatusResponse;

/// This controller's answer to [`RaftStatus`] requests.
pub fn status_of(raft: &Raft<TypeConfig>, node_id: u64) -> RaftStatus {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    RaftStatus {
        has_applied: m.last_applied.is_some(),
        applied_index: m.last_applied.map_or(0, |id| id.index),
        is_leader: m.state == openraft::ServerState::Leader && m.current_leader == Some(node_id),
    }
}

/// The statuses of the peers that answered within [`STATUS_TIMEOUT`].
async fn ask_peers(node_id: u64, voters: &BTreeMap<u64, RaftNode>) -> Vec<(u64, RaftStatus)> {
    let calls = voters
        .iter()
        .filter(|(&id, _)| id != node_id)
        .map(|(&id, node)| async move {
            let endpoint = Endpoint::from_shared(format!("http://{}", node.rpc_addr)).ok()?;
            let channel = endpoint.connect_timeout(STATUS_TIMEOUT).connect_lazy();
            let mut client = RaftServiceClient::new(channel);
            let call = client.status(RaftStatusRequest {});
            match tokio::time::timeout(STATUS_TIMEOUT, call).await {
                Ok(Ok(response)) => Some((id, response.into_inner())),
                _ => None,
            }
        });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Decides, for a voter that started with fresh storage, whether the cluster is new (then it
/// votes at once and, with `initialize`, initializes the cluster with `voters`) or it lost
/// its state (then it catches up first). Opens `gate` when it may vote. Runs until then.
pub async fn rejoin(
    raft: Raft<TypeConfig>,
    node_id: u64,
    voters: BTreeMap<u64, RaftNode>,
    initialize: bool,
    gate: watch::Sender<VoteGate>,
) {
    loop {
        let answers = ask_peers(node_id, &voters).await;
        if answers.is_empty() {
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        }
        if answers.iter().all(|(_, s)| !s.has_applied) {
            tracing::info!(node_id, "controller storage is new and so is the cluster");
            gate.send_replace(VoteGate::Open);
            if initialize {
                match raft.initialize(voters).await {
                    Ok(()) => tracing::info!(node_id, "initialized the controller cluster"),
                    Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                        tracing::debug!(node_id, %e, "controller cluster already initialized");
                    }
                    Err(e) => {
                        tracing::error!(node_id, %e, "cannot initialize the controller cluster")
                    }
                }
            }
            return;
        }
        break;
    }
    tracing::warn!(
        node_id,
        "this controller's Raft storage is empty but its peers have committed metadata: its data \
         dir was wiped or replaced. It grants no vote until it has caught up with the active \
         controller"
    );
    let target = loop {
        let answers = ask_peers(node_id, &voters).await;
        if let Some((_, leader)) = answers.iter().find(|(_, s)| s.is_leader && s.has_applied) {
            break leader.applied_index;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    gate.send_replace(VoteGate::CatchingUp { target });
    let mut metrics = raft.metrics();
    loop {
        let caught_up = {
            let m = metrics.borrow_and_update();
            let held = [m.last_log_index, m.last_applied.map(|id| id.index)];
            held.into_iter().flatten().any(|index| index >= target)
        };
        if caught_up {
            break;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
    tracing::info!(
        node_id,
        target,
        "this controller has caught up with the active controller and votes again"
    );
    gate.send_replace(VoteGate::Open);
}
