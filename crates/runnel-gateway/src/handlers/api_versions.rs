//! ApiVersions: the APIs and versions this node implements, straight from the handler table.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};
use kafka_protocol::ResponseError;

fn api_list() -> Vec<ApiVersion> {
    super::supported_apis()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

pub(crate) fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_api_keys(api_list())
        // -1: no finalized features (KIP-584); clients then use only ApiVersions ranges.
        .with_finalized_features_epoch(-1)
}

/// The v0 answer to an ApiVersions request of a version this node does not know (KIP-511).
pub(crate) fn unsupported_version_response() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(api_list()),
    )
}
