//! OffsetFetch: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 1, max: 9 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: OffsetFetchRequest,
    _version: i16,
) -> OffsetFetchResponse {
    OffsetFetchResponse::default()
}
