//! One handler per Kafka API, each declared once in the `apis!` list below with the versions
//! it serves: ApiVersions and the dispatch are both built from that list.

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

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use runnel_broker::BrokerError;

use crate::connection::{Request, Turn};
use crate::Context;

/// Declares the APIs the node serves, one entry each:
///
/// `Name min..=max => |request, call| handler,`
///
/// where `Name` is the API's variant in `ApiKey`, `RequestKind` and `ResponseKind`,
/// `min..=max` the versions served, and `handler` an expression (it may `.await` and use `?`)
/// giving the response to the decoded `request` body, with the [`Call`] `call`. Both the
/// ApiVersions list ([`APIS`]) and the dispatch come from this one list, so an API is never
/// advertised without a handler, nor handled without being advertised.
macro_rules! apis {
    ($($api:ident $min:literal ..= $max:literal => |$request:pat_param, $call:pat_param| $handler:expr,)+) => {
        /// The APIs Runnel implements and the version range of each, in ApiVersions order.
        static APIS: &[(ApiKey, VersionRange)] = &[
            $((ApiKey::$api, VersionRange { min: $min, max: $max }),)+
        ];

        /// Runs the handler of `body`'s API. `Ok(None)` means no response is sent.
        async fn dispatch(
            body: RequestKind,
            call: Call<'_>,
        ) -> Result<Option<ResponseKind>, CloseConnection> {
            let response = match body {
                $(RequestKind::$api($request) => {
                    let $call = call;
                    ResponseKind::$api($handler)
                })+
                other => {
                    // Unreachable: `decode` lets through only the APIs in APIS.
                    tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a listed API");
                    return Err(CloseConnection);
                }
            };
            Ok(Some(response))
        }
    };
}

apis! {
    Produce 3..=13 => |r, c| {
        match produce::handle(c.ctx, r, c.version, c.client, c.turn).await? {
            Some(response) => response,
            // acks=0: Kafka answers nothing.
            None => return Ok(None),
        }
    },
    Fetch 4..=18 => |r, c| fetch::handle(c.ctx, r, c.version).await,
    ListOffsets 1..=10 => |r, c| list_offsets::handle(c.ctx, r, c.version),
    Metadata 0..=13 => |r, c| metadata::handle(c.ctx, r, c.version).await,
    ApiVersions 0..=4 => |_, _| api_versions::handle(),
    CreateTopics 2..=7 => |r, c| create_topics::handle(c.ctx, r, c.version).await,
    DeleteTopics 1..=6 => |r, c| delete_topics::handle(c.ctx, r, c.version).await,
    DescribeConfigs 1..=4 => |r, c| configs::describe(c.ctx, r, c.version),
    AlterConfigs 0..=2 => |r, c| configs::alter(c.ctx, r).await,
    CreatePartitions 0..=3 => |r, c| create_partitions::handle(c.ctx, r).await,
    IncrementalAlterConfigs 0..=1 => |r, c| configs::incremental_alter(c.ctx, r).await,
    DescribeCluster 0..=2 => |r, c| describe_cluster::handle(c.ctx, r, c.version),
    FindCoordinator 0..=6 => |r, c| find_coordinator::handle(c.ctx, r, c.version).await,
    JoinGroup 0..=9 => |r, c| {
        let join = join_group::handle(c.ctx, r, c.version, c.client, c.peer);
        c.turn.release_when_parked(join).await
    },
    SyncGroup 0..=5 => |r, c| {
        let sync = sync_group::handle(c.ctx, r, c.version);
        c.turn.release_when_parked(sync).await
    },
    Heartbeat 0..=4 => |r, c| heartbeat::handle(c.ctx, r, c.version).await,
    LeaveGroup 0..=5 => |r, c| leave_group::handle(c.ctx, r, c.version).await,
    OffsetCommit 2..=9 => |r, c| offset_commit::handle(c.ctx, r, c.version).await,
    OffsetFetch 1..=9 => |r, c| offset_fetch::handle(c.ctx, r, c.version).await,
    ListGroups 0..=5 => |r, c| list_groups::handle(c.ctx, r, c.version).await,
    DescribeGroups 0..=6 => |r, c| describe_groups::handle(c.ctx, r, c.version).await,
    DeleteGroups 0..=2 => |r, c| delete_groups::handle(c.ctx, r, c.version).await,
    OffsetDelete 0..=0 => |r, c| offset_delete::handle(c.ctx, r, c.version).await,
    InitProducerId 0..=5 => |r, c| init_producer_id::handle(c.ctx, r, c.version).await,
    ElectLeaders 0..=2 => |r, c| elect_leaders::handle(c.ctx, r, c.version).await,
    OffsetForLeaderEpoch 2..=4 => |r, c| offset_for_leader_epoch::handle(c.ctx, r),
}

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

/// What a handler gets besides its request's body.
struct Call<'a> {
    ctx: &'a Context,
    version: i16,
    /// The request header's client id, empty when null.
    client: &'a str,
    peer: SocketAddr,
    /// The request's place in its connection's order (see [`handle`]).
    turn: &'a mut Turn,
}

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
    let client = request
        .header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    let call = Call {
        ctx: &ctx,
        version: request.header.request_api_version,
        client: &client,
        peer: request.peer,
        turn: &mut turn,
    };
    dispatch(request.body, call).await
}

/// The controller id that Metadata and DescribeCluster give clients. Clients send admin
/// requests (CreateTopics, ...) to it, and every broker forwards them to the active controller,
/// so, as in KRaft Kafka, a controller that is not a live broker (a controller-only node, which
/// serves no Kafka clients, or a fenced broker) is named as this broker instead. -1 while no
/// controller is known: clients refresh their metadata until one is.
pub(crate) fn controller_id_for_clients(ctx: &Context) -> i32 {
    match ctx.broker.active_controller() {
        Some(id) if ctx.broker.image().live_brokers().any(|b| b.id == id) => id,
        Some(_) => ctx.broker.node_id(),
        None => -1,
    }
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
