//! DescribeGroups: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 6 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: DescribeGroupsRequest,
    _version: i16,
) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default()
}
