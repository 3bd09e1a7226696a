//! DescribeCluster: the cluster id, the active controller and the live brokers.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::VersionRange;

use super::str_bytes;
use crate::Context;

pub(crate) const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

pub(crate) fn handle(ctx: &Context, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let image = ctx.broker.image();
    let brokers = image
        .brokers
        .values()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(image.cluster_id.clone()))
        .with_controller_id(BrokerId(image.controller_id))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}
