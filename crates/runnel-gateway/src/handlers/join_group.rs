//! JoinGroup: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 9 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: JoinGroupRequest,
    _version: i16,
) -> JoinGroupResponse {
    JoinGroupResponse::default()
}
