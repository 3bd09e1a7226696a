//! ListGroups: the groups this node coordinates, filtered by state (v4+) and type (v5).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::Context;

/// Every group here speaks the classic protocol.
const GROUP_TYPE: &str = "classic";

pub(crate) async fn handle(
    ctx: &Context,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let (error, groups) = ctx.groups.list_groups();
    let states: Vec<String> = if version >= 4 {
        request
            .states_filter
            .iter()
            .map(|s| s.as_str().to_ascii_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    let types_match = version < 5
        || request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(GROUP_TYPE));
    let groups = groups
        .into_iter()
        .filter(|_| types_match)
        .filter(|g| states.is_empty() || states.contains(&g.state.as_str().to_ascii_lowercase()))
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type));
            if version >= 4 {
                listed.group_state = str_bytes(g.state.as_str());
            }
            if version >= 5 {
                listed.group_type = str_bytes(GROUP_TYPE);
            }
            listed
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_groups(groups)
}
