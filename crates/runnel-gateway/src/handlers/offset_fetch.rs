//! OffsetFetch: one group (v1-7) or several (v8+); no topic list means every committed
//! offset of the group. A commit whose records are not replicated yet is not shown; with
//! `require_stable` (v7+, KIP-447) its partition answers UNSTABLE_OFFSET_COMMIT instead, as
//! Kafka does, and the client retries.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::Context;

/// (partition, offset, leader epoch, metadata, error) per topic, in request order.
type Fetched = Vec<(String, Vec<(i32, i64, i32, String, i16)>)>;

/// Looks up one group's offsets. `Err` is a group-level error; `partitions` are echoed with
/// it when the version has no group-level error field.
fn fetch(
    ctx: &Context,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Fetched, (ResponseError, Fetched)> {
    let flat: Option<Vec<(String, i32)>> = wanted.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    });
    match ctx
        .groups
        .fetch_offsets(group_id, flat.as_deref(), require_stable)
    {
        Ok(found) => {
            let mut out: Fetched = Vec::new();
            for (topic, partition, value) in found {
                let row = match value {
                    Ok(Some(v)) => (partition, v.offset, v.leader_epoch, v.metadata, 0),
                    Ok(None) => (partition, -1, -1, String::new(), 0),
                    Err(e) => (partition, -1, -1, String::new(), e.code()),
                };
                match out.last_mut() {
                    Some((t, rows)) if *t == topic => rows.push(row),
                    _ => out.push((topic, vec![row])),
                }
            }
            Ok(out)
        }
        Err(e) => {
            let echoed = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| {
                    let rows = ps
                        .into_iter()
                        .map(|p| (p, -1, -1, String::new(), e.code()))
                        .collect();
                    (t, rows)
                })
                .collect();
            Err((e, echoed))
        }
    }
}

pub(crate) async fn handle(
    ctx: &Context,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.as_str().to_string(), t.partition_indexes))
                        .collect()
                });
                let fetched = fetch(ctx, g.group_id.as_str(), wanted, request.require_stable);
                let (code, fetched) = match fetched {
                    Ok(f) => (0, f),
                    Err((e, _)) => (e.code(), Vec::new()),
                };
                let topics = fetched
                    .into_iter()
                    .map(|(t, rows)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partitions(
                                rows.into_iter()
                                    .map(|(p, o, epoch, m, err)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(m)))
                                            .with_error_code(err)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
                    .with_error_code(code)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.as_str().to_string(), t.partition_indexes))
            .collect()
    });
    let fetched = fetch(
        ctx,
        request.group_id.as_str(),
        wanted,
        request.require_stable,
    );
    let (code, fetched) = match fetched {
        Ok(f) => (0, f),
        // v1 has no group-level error: each requested partition carries it.
        Err((e, echoed)) => (e.code(), echoed),
    };
    let topics = fetched
        .into_iter()
        .map(|(t, rows)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(t)))
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, o, epoch, m, err)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                                .with_metadata(Some(str_bytes(m)))
                                // v2+ carries a group-level error at the group level only.
                                .with_error_code(if version >= 2 && code != 0 { 0 } else { err })
                        })
                        .collect(),
                )
        })
        .collect();
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.error_code = code;
    }
    response
}
