//! ListGroups: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: ListGroupsRequest,
    _version: i16,
) -> ListGroupsResponse {
    ListGroupsResponse::default()
}
