//! OffsetCommit (v2-9): acknowledged once the offsets are appended to `__consumer_offsets`.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use runnel_broker::group::{CommitRequest, OffsetCommit};

use crate::Context;

pub(crate) async fn handle(
    ctx: &Context,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let offsets: Vec<OffsetCommit> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| OffsetCommit {
                topic: t.name.as_str().to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str().to_string()),
            })
        })
        .collect();
    let commit = CommitRequest {
        group_id: request.group_id.as_str().to_string(),
        member_id: request.member_id.as_str().to_string(),
        group_instance_id: if version >= 7 {
            request
                .group_instance_id
                .as_ref()
                .map(|i| i.as_str().to_string())
                .filter(|i| !i.is_empty())
        } else {
            None
        },
        generation_id: request.generation_id_or_member_epoch,
        offsets,
        version,
    };
    let count = commit.offsets.len();
    let codes: Vec<i16> = match ctx.groups.commit_offsets(commit).await {
        Ok(results) => results
            .into_iter()
            .map(|r| r.err().map_or(0, |e| e.code()))
            .collect(),
        Err(e) => vec![e.code(); count],
    };
    let mut codes = codes.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
