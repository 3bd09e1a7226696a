//! DescribeCluster: the cluster id, the active controller and the live brokers (and, when a
//! v2 client asks, the fenced ones flagged as such).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::Context;

pub(crate) fn handle(
    ctx: &Context,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let image = ctx.broker.image();
    let include_fenced = version >= 2 && request.include_fenced_brokers;
    let brokers = image
        .brokers
        .values()
        .filter(|b| include_fenced || !b.fenced)
        .filter_map(|b| {
            // Only the addresses of the listener the client came through.
            let (host, port) = b.endpoint(&ctx.listener)?;
            let broker = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(host.to_owned()))
                .with_port(port)
                .with_rack(b.rack.clone().map(str_bytes));
            // The field exists from v2; the encoder rejects it set earlier.
            Some(if version >= 2 {
                broker.with_is_fenced(b.fenced)
            } else {
                broker
            })
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(image.cluster_id.clone()))
        .with_controller_id(BrokerId(super::controller_id_for_clients(ctx)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}
