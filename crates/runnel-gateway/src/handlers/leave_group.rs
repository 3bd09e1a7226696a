//! LeaveGroup: one member (v0-2) or a batch identified by member id and/or group instance id
//! (v3+, KIP-345).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use runnel_broker::group::LeavingMember;

use super::str_bytes;
use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let leaving: Vec<LeavingMember> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.as_str().to_string(),
                group_instance_id: m
                    .group_instance_id
                    .as_ref()
                    .map(|i| i.as_str().to_string())
                    .filter(|i| !i.is_empty()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: request.member_id.as_str().to_string(),
            group_instance_id: None,
        }]
    };
    let results = match ctx.groups.leave_group(request.group_id.as_str(), &leaving) {
        Ok(results) => results,
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
    };
    if version < 3 {
        let code = results
            .first()
            .and_then(|r| r.err())
            .map_or(0, |e| e.code());
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = leaving
        .into_iter()
        .zip(results)
        .map(|(m, r)| {
            MemberResponse::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                .with_error_code(r.err().map_or(0, |e| e.code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
