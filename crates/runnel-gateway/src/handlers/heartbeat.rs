//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: HeartbeatRequest,
    version: i16,
) -> HeartbeatResponse {
    let instance = if version >= 3 {
        request
            .group_instance_id
            .as_ref()
            .map(|i| i.as_str())
            .filter(|i| !i.is_empty())
    } else {
        None
    };
    let result = ctx.groups.heartbeat(
        request.group_id.as_str(),
        request.member_id.as_str(),
        instance,
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
