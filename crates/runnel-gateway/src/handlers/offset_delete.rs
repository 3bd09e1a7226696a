//! OffsetDelete: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    OffsetDeleteResponse::default()
}
