//! Heartbeat: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: HeartbeatRequest,
    _version: i16,
) -> HeartbeatResponse {
    HeartbeatResponse::default()
}
