//! OffsetCommit: not implemented yet (stub; answered with defaults).

use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::protocol::VersionRange;

use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 2, max: 9 };

pub(crate) async fn handle(
    _ctx: &Context,
    _request: OffsetCommitRequest,
    _version: i16,
) -> OffsetCommitResponse {
    OffsetCommitResponse::default()
}
