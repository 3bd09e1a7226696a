//! DeleteGroups: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    DeleteGroupsResponse::default()
}
