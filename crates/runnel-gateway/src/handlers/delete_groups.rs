//! DeleteGroups: removes empty groups and their offsets (tombstones in `__consumer_offsets`).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let names: Vec<String> = request
        .groups_names
        .iter()
        .map(|g| g.as_str().to_string())
        .collect();
    let results = ctx.groups.delete_groups(&names);
    let results = request
        .groups_names
        .into_iter()
        .zip(results)
        .map(|(group_id, r)| {
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(r.err().map_or(0, |e| e.code()))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
