//! One handler per Kafka API. Each declares the versions it implements; ApiVersions is built
//! from [`APIS`], so the node can never advertise an API or version it does not serve.

pub(crate) mod api_versions;
mod configs;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_topics;
mod describe_cluster;
mod describe_groups;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;

#[cfg(test)]
mod cluster_tests;

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use runnel_broker::BrokerError;

use crate::connection::{Request, Turn};
use crate::Context;

/// The APIs Runnel implements and the version range of each.
static APIS: &[(ApiKey, VersionRange)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::DescribeConfigs, configs::DESCRIBE_VERSIONS),
    (ApiKey::AlterConfigs, configs::ALTER_VERSIONS),
    (ApiKey::CreatePartitions, create_partitions::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        configs::INCREMENTAL_ALTER_VERSIONS,
    ),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (ApiKey::ElectLeaders, elect_leaders::VERSIONS),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
    ),
];

/// Every implemented API with its version range.
pub fn supported_apis() -> impl Iterator<Item = (ApiKey, VersionRange)> {
    APIS.iter().copied()
}

pub(crate) fn supported_versions(key: ApiKey) -> Option<VersionRange> {
    APIS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// A handler's request to close the client's connection instead of answering.
#[derive(Debug)]
pub(crate) struct CloseConnection;

/// Runs the request's handler. `Ok(None)` means no response is sent (acks=0 produce).
///
/// The request holds its connection's `turn` until this returns (the next request on the
/// connection waits for it), except that Produce gives it back once its batches are appended,
/// and JoinGroup and SyncGroup once they park to wait for the rest of the group (the member's
/// join or sync is registered by then; a rebalance can take minutes).
pub(crate) async fn handle(
    ctx: Arc<Context>,
    request: Request,
    mut turn: Turn,
) -> Result<Option<ResponseKind>, CloseConnection> {
    let version = request.header.request_api_version;
    let client = request
        .header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    let response = match request.body {
        RequestKind::Produce(r) => {
            match produce::handle(&ctx, r, version, &client, &mut turn).await? {
                Some(resp) => ResponseKind::Produce(resp),
                None => return Ok(None),
            }
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(&ctx, r, version).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(&ctx, r, version))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(&ctx, r, version).await)
        }
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle()),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(&ctx, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(&ctx, r, version).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe(&ctx, r, version))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(configs::alter(&ctx, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(&ctx, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(&ctx, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(&ctx, r, version))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(&ctx, r, version).await)
        }
        RequestKind::JoinGroup(r) => {
            let peer = request.peer;
            let join = join_group::handle(&ctx, r, version, &client, peer);
            ResponseKind::JoinGroup(turn.release_when_parked(join).await)
        }
        RequestKind::SyncGroup(r) => {
            let sync = sync_group::handle(&ctx, r, version);
            ResponseKind::SyncGroup(turn.release_when_parked(sync).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(heartbeat::handle(&ctx, r, version).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(leave_group::handle(&ctx, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(&ctx, r, version).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(&ctx, r, version).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(list_groups::handle(&ctx, r, version).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(&ctx, r, version).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(&ctx, r, version).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(&ctx, r, version).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(&ctx, r, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(&ctx, r))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(&ctx, r, version).await)
        }
        other => {
            // Unreachable while APIS and this match agree; the decode step only lets through
            // APIs listed in APIS.
            tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a listed API");
            return Err(CloseConnection);
        }
    };
    Ok(Some(response))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka error code and a message for the client, from a broker error.
pub(crate) fn error_parts(e: &BrokerError) -> (i16, Option<StrBytes>) {
    (e.code().code(), Some(str_bytes(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_version_range_is_within_the_crate() {
        for (key, range) in supported_apis() {
            let crate_range = key.valid_versions();
            assert!(
                range.min >= crate_range.min && range.max <= crate_range.max,
                "{key:?} {range} outside {crate_range}"
            );
        }
    }
}
