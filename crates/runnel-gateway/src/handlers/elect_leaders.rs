//! ElectLeaders: moves leadership to the preferred replica, or gives a leaderless partition a
//! leader from any live replica (unclean, may lose acknowledged records), through the
//! controller. `kafka-leader-election.sh` and AdminClient's `electLeaders` use it.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::ResponseError;
use runnel_broker::{ElectionType, PartitionRef};

use super::{error_parts, str_bytes};
use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    // v0 has no election type: it only elects preferred leaders.
    let election = if version == 0 {
        Some(ElectionType::Preferred)
    } else {
        ElectionType::from_kafka(request.election_type)
    };
    let Some(election) = election else {
        return ElectLeadersResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    };
    let partitions = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.as_str().to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| PartitionRef::new(name.clone(), p))
            })
            .collect::<Vec<_>>()
    });
    match ctx.broker.elect_leaders(partitions, election).await {
        Ok(results) => {
            let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
            for r in results {
                let result = PartitionResult::default().with_partition_id(r.partition);
                let result = match r.result {
                    Ok(_) => result,
                    Err(e) => result
                        .with_error_code(e.code().code())
                        .with_error_message(Some(str_bytes(e.to_string()))),
                };
                by_topic.entry(r.topic).or_default().push(result);
            }
            ElectLeadersResponse::default().with_replica_election_results(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        ReplicaElectionResult::default()
                            .with_topic(TopicName(str_bytes(topic)))
                            .with_partition_result(partitions)
                    })
                    .collect(),
            )
        }
        Err(e) => {
            tracing::info!(error = %e, "leader election failed");
            let (code, _) = error_parts(&e);
            ElectLeadersResponse::default().with_error_code(code)
        }
    }
}
