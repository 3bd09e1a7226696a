//! SyncGroup: followers wait for the leader's assignment, which is stored before anyone gets
//! theirs.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use runnel_broker::group::SyncRequest;

use super::str_bytes;
use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let sync = SyncRequest {
        member_id: request.member_id.as_str().to_string(),
        group_instance_id: if version >= 3 {
            request
                .group_instance_id
                .map(|i| i.as_str().to_string())
                .filter(|i| !i.is_empty())
        } else {
            None
        },
        generation_id: request.generation_id,
        protocol_type: if version >= 5 {
            request.protocol_type.map(|p| p.as_str().to_string())
        } else {
            None
        },
        protocol_name: if version >= 5 {
            request.protocol_name.map(|p| p.as_str().to_string())
        } else {
            None
        },
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment))
            .collect(),
    };
    let result = ctx.groups.sync_group(request.group_id.as_str(), sync).await;
    let mut response = SyncGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_assignment(result.assignment);
    if version >= 5 {
        response.protocol_type = result.protocol_type.map(str_bytes);
        response.protocol_name = result.protocol_name.map(str_bytes);
    }
    response
}
