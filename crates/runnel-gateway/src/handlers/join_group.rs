//! JoinGroup: parks until the group's rebalance completes (see `runnel_broker::group`).

use std::net::SocketAddr;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use runnel_broker::group::JoinRequest;

use super::str_bytes;
use crate::Context;

/// `client_id` and `peer` are recorded for the member (DescribeGroups shows them) and
/// name its member id (`<client.id>-<uuid>`), as in Kafka.
pub(crate) async fn handle(
    ctx: &Context,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let group_instance_id = if version >= 5 {
        request
            .group_instance_id
            .map(|i| i.as_str().to_string())
            .filter(|i| !i.is_empty())
    } else {
        None
    };
    let join = JoinRequest {
        member_id: request.member_id.as_str().to_string(),
        require_known_member_id: version >= 4 && group_instance_id.is_none(),
        group_instance_id,
        client_id: client_id.to_string(),
        // Kafka's format: "/" and the address.
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.as_str().to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata))
            .collect(),
        supports_skip_assignment: version >= 9,
    };
    let result = ctx.groups.join_group(request.group_id.as_str(), join).await;
    let members = result
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(if version >= 5 {
                    m.group_instance_id.map(str_bytes)
                } else {
                    None
                })
                .with_metadata(m.metadata)
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_generation_id(result.generation_id)
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(members);
    if version >= 7 {
        response.protocol_type = result.protocol_type.map(str_bytes);
        response.protocol_name = result.protocol_name.map(str_bytes);
    } else {
        // Not nullable before v7.
        response.protocol_name = Some(str_bytes(result.protocol_name.unwrap_or_default()));
    }
    if version >= 9 {
        response.skip_assignment = result.skip_assignment;
    }
    response
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
