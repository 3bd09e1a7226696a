//! What one node decodes from another: every prost message of runnel-rpc, and the JSON that
//! the controller's Raft transport (openraft's requests and responses), its Write call
//! (metadata commands and their results) and snapshot installation carry inside them. The
//! first byte picks the type; the rest is the encoded message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use prost::Message;
use runnel_controller::command::{CommandResult, ControllerCommand};
use runnel_controller::error::ControllerError;
use runnel_controller::image::MetadataImage;
use runnel_controller::store::TypeConfig;
use runnel_rpc::controller::v1 as ctl;
use runnel_rpc::replication::v1 as repl;
use serde::de::DeserializeOwned;

fn proto<M: Message + Default>(data: &[u8]) {
    let _ = M::decode(data);
}

fn json<T: DeserializeOwned>(data: &[u8]) {
    let _ = serde_json::from_slice::<T>(data);
}

/// A Raft payload as `RaftGrpcService` decodes it (requests) and `GrpcNetwork` does (responses).
fn raft_request(data: &[u8]) {
    json::<AppendEntriesRequest<TypeConfig>>(data);
    json::<VoteRequest<u64>>(data);
    json::<InstallSnapshotRequest<TypeConfig>>(data);
}

fn raft_response(data: &[u8]) {
    json::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(data);
    json::<Result<VoteResponse<u64>, RaftError<u64>>>(data);
    json::<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>>(data);
}

/// A metadata command (`WriteRequest.command`) and its result (`WriteResponse.result`).
fn command(data: &[u8]) {
    json::<ControllerCommand>(data);
}

fn command_result(data: &[u8]) {
    json::<Result<CommandResult, ControllerError>>(data);
}

/// A received snapshot's data, as the state machine restores it.
fn snapshot(data: &[u8]) {
    json::<MetadataImage>(data);
}

/// Indexed by the first byte (modulo the length).
const DECODERS: &[fn(&[u8])] = &[
    |d| {
        if let Ok(m) = ctl::RaftRequest::decode(d) {
            raft_request(&m.payload);
        }
    },
    |d| {
        if let Ok(m) = ctl::RaftResponse::decode(d) {
            raft_response(&m.payload);
        }
    },
    proto::<ctl::ControllerHint>,
    proto::<ctl::RegisterBrokerRequest>,
    proto::<ctl::KafkaListener>,
    proto::<ctl::RegisterBrokerResponse>,
    proto::<ctl::BrokerHeartbeatRequest>,
    proto::<ctl::BrokerHeartbeatResponse>,
    |d| {
        if let Ok(m) = ctl::WriteRequest::decode(d) {
            command(&m.command);
        }
    },
    |d| {
        if let Ok(m) = ctl::WriteResponse::decode(d) {
            command_result(&m.result);
        }
    },
    proto::<repl::ReplicaFetchRequest>,
    proto::<repl::FetchPartition>,
    proto::<repl::ReplicaFetchResponse>,
    proto::<repl::FetchPartitionResponse>,
    proto::<repl::EpochEndOffset>,
    proto::<repl::LeaderIdAndEpoch>,
    proto::<repl::OffsetForLeaderEpochRequest>,
    proto::<repl::OffsetForLeaderEpochPartition>,
    proto::<repl::OffsetForLeaderEpochResponse>,
    proto::<repl::OffsetForLeaderEpochResult>,
    // The JSON payloads on their own, without the prost envelope to keep intact.
    raft_request,
    raft_response,
    command,
    command_result,
    snapshot,
];

fuzz_target!(|data: &[u8]| {
    if let Some((&selector, message)) = data.split_first() {
        DECODERS[usize::from(selector) % DECODERS.len()](message);
    }
});
