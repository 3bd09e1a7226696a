//! The leader's side of replication over gRPC: `ReplicaService` (see
//! `proto/runnel/replication/v1/replication.proto`).
//!
//! A follower keeps one `Fetch` stream open to each leader it follows. Every request names all
//! the partitions it follows there; its fetch offsets acknowledge what the follower has (the
//! leader moves the high watermark and proposes ISR expansions from them), and the answer
//! carries the records from those offsets up to the leader's log end, as stored. With nothing
//! new, the leader holds the request up to `max_wait_ms` and answers as soon as an append
//! wakes it. Requests on a stream are served one at a time, in order, so the follower's
//! acknowledgements arrive in order too.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use runnel_rpc::error_code;
use runnel_rpc::replication::v1 as pb;
use runnel_rpc::replication::v1::replica_service_server::{ReplicaService, ReplicaServiceServer};
use runnel_rpc::ResponseError;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::partition::{lag_clock_ms, FollowerFetch, Partition, ReplicaRefusal};
use crate::replica_manager::ReplicaManager;

/// Upper bound on how long a leader holds a fetch, whatever the follower asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(10);

/// The broker's replica manager, set once the node has opened it; until then every call
/// is refused as unavailable (the follower retries).
pub type ManagerSlot = Arc<OnceLock<Arc<ReplicaManager>>>;

#[derive(Clone)]
pub struct ReplicaGrpcService {
    manager: ManagerSlot,
}

impl ReplicaGrpcService {
    pub fn new(manager: ManagerSlot) -> Self {
        Self { manager }
    }

    pub fn into_server(self) -> ReplicaServiceServer<Self> {
        ReplicaServiceServer::new(self)
            .max_decoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(runnel_rpc::MAX_MESSAGE_BYTES)
    }

    fn manager(&self) -> Result<Arc<ReplicaManager>, Status> {
        self.manager
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("this broker is still starting"))
    }
}

/// A requested partition after the leader's checks.
struct Resolved {
    request: pb::FetchPartition,
    outcome: Result<Serve, pb::FetchPartitionResponse>,
}

struct Serve {
    partition: Arc<Partition>,
    /// Records are read only while this node still leads at this epoch.
    leader_epoch: i32,
}

fn error_response(
    request: &pb::FetchPartition,
    error: Option<ResponseError>,
    current_leader: Option<pb::LeaderIdAndEpoch>,
) -> pb::FetchPartitionResponse {
    pb::FetchPartitionResponse {
        topic_id: request.topic_id.clone(),
        partition: request.partition,
        error_code: error_code::encode(error),
        high_watermark: -1,
        log_start_offset: -1,
        diverging_epoch: None,
        current_leader,
        records: Bytes::new(),
    }
}

fn refusal_response(
    request: &pb::FetchPartition,
    refusal: ReplicaRefusal,
) -> pb::FetchPartitionResponse {
    let current_leader = match refusal {
        ReplicaRefusal::NotLeader {
            leader,
            leader_epoch,
        } => Some(pb::LeaderIdAndEpoch {
            leader_id: leader,
            leader_epoch,
        }),
        _ => None,
    };
    error_response(request, Some(refusal.code()), current_leader)
}

/// The local replica a request names, or the error to answer with.
fn lookup(
    manager: &ReplicaManager,
    topic_id: &[u8],
    index: i32,
) -> Result<Arc<Partition>, ResponseError> {
    use ResponseError as E;
    let id = Uuid::from_slice(topic_id).map_err(|_| E::UnknownTopicId)?;
    manager.partition_by_id(id, index).ok_or_else(|| {
        if manager.image().topic_by_id(id).is_none() {
            E::UnknownTopicId
        } else {
            E::NotLeaderOrFollower
        }
    })
}

async fn serve_fetch(
    manager: &ReplicaManager,
    request: pb::ReplicaFetchRequest,
) -> pb::ReplicaFetchResponse {
    let now = lag_clock_ms();
    // KIP-903: a fetch may vouch for an ISR join only under the follower's current broker
    // epoch; one from before a restart (or with none) is served but cannot add it to an ISR.
    let join_epoch = manager
        .image()
        .brokers
        .get(&request.replica_id)
        .filter(|b| !b.fenced && request.broker_epoch >= 0 && b.epoch == request.broker_epoch)
        .map(|b| b.epoch);
    let mut resolved = Vec::with_capacity(request.partitions.len());
    for p in request.partitions {
        let outcome = match lookup(manager, &p.topic_id, p.partition) {
            Err(error) => Err(error_response(&p, Some(error), None)),
            Ok(partition) => match partition.on_follower_fetch(
                request.replica_id,
                p.current_leader_epoch,
                p.fetch_offset,
                p.last_fetched_epoch,
                now,
                join_epoch,
            ) {
                Ok(FollowerFetch::Serve {
                    isr_change,
                    leader_epoch,
                }) => {
                    if let Some(change) = isr_change {
                        manager.submit_isr_change(&partition, change);
                    }
                    Ok(Serve {
                        partition,
                        leader_epoch,
                    })
                }
                Ok(FollowerFetch::Diverging(end)) => {
                    let mut response = error_response(&p, None, None);
                    response.high_watermark = partition.high_watermark();
                    response.log_start_offset = partition.log_start_offset().unwrap_or(-1);
                    response.diverging_epoch = Some(pb::EpochEndOffset {
                        epoch: end.epoch,
                        end_offset: end.end_offset,
                    });
                    Err(response)
                }
                Err(refusal) => Err(refusal_response(&p, refusal)),
            },
        };
        resolved.push(Resolved {
            request: p,
            outcome,
        });
    }

    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let mut watchers: Vec<watch::Receiver<i64>> = resolved
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok())
        .map(|s| s.partition.watch_log_end())
        .collect();
    let any_error = resolved.iter().any(|r| r.outcome.is_err());
    loop {
        for w in &mut watchers {
            w.borrow_and_update();
        }
        let (partitions, bytes) = read_all(&resolved, max_bytes);
        if bytes >= min_bytes || any_error || watchers.is_empty() || Instant::now() >= deadline {
            return pb::ReplicaFetchResponse {
                correlation_id: request.correlation_id,
                error_code: error_code::encode(None),
                partitions,
            };
        }
        let changed =
            futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        let closed = tokio::select! {
            (result, index, _) = changed => result.is_err().then_some(index),
            _ = tokio::time::sleep_until(deadline) => None,
        };
        // A closed channel is a deleted partition; stop watching it so the loop cannot spin.
        if let Some(index) = closed {
            watchers.swap_remove(index);
        }
    }
}

/// Reads every servable partition from its fetch offset; returns the responses and the
/// record bytes in them. The first batch of the first partition with records is sent even
/// when larger than the limits, so a follower always progresses.
fn read_all(resolved: &[Resolved], max_bytes: usize) -> (Vec<pb::FetchPartitionResponse>, usize) {
    let mut total = 0usize;
    let mut out = Vec::with_capacity(resolved.len());
    for r in resolved {
        let serve = match &r.outcome {
            Ok(serve) => serve,
            Err(response) => {
                out.push(response.clone());
                continue;
            }
        };
        let p = &r.request;
        let limit = (p.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
        let high_watermark = serve.partition.high_watermark();
        let response = match serve.partition.read_as_leader(
            serve.leader_epoch,
            p.fetch_offset,
            limit,
            total == 0,
        ) {
            Ok(read) => {
                total += read.records.len();
                pb::FetchPartitionResponse {
                    topic_id: p.topic_id.clone(),
                    partition: p.partition,
                    error_code: error_code::encode(None),
                    high_watermark,
                    log_start_offset: read.log_start_offset,
                    diverging_epoch: None,
                    current_leader: None,
                    records: read.records,
                }
            }
            Err(e) => {
                // With OFFSET_OUT_OF_RANGE the follower needs the log start to start over.
                let mut response = error_response(p, Some(e.code()), None);
                response.log_start_offset = serve.partition.log_start_offset().unwrap_or(-1);
                response
            }
        };
        out.push(response);
    }
    (out, total)
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::ReplicaFetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ReplicaService for ReplicaGrpcService {
    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<Streaming<pb::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let manager = self.manager()?;
        let incoming = request.into_inner();
        // One request at a time: the next is not read before the previous answer is out.
        let responses =
            futures::stream::unfold((incoming, manager), |(mut incoming, manager)| async move {
                match incoming.message().await {
                    Ok(Some(request)) => {
                        let response = serve_fetch(&manager, request).await;
                        Some((Ok(response), (incoming, manager)))
                    }
                    Ok(None) => None,
                    Err(status) => {
                        tracing::debug!(%status, "a follower's fetch stream ended");
                        None
                    }
                }
            });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<pb::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetForLeaderEpochResponse>, Status> {
        let manager = self.manager()?;
        let partitions = request
            .into_inner()
            .partitions
            .into_iter()
            .map(|p| {
                let answer = lookup(&manager, &p.topic_id, p.partition).and_then(|partition| {
                    partition
                        .leader_end_offset_for_epoch(p.current_leader_epoch, p.leader_epoch)
                        .map_err(|refusal| refusal.code())
                });
                let (error_code, leader_epoch, end_offset) = match answer {
                    Ok(end) => (None, end.epoch, end.end_offset),
                    Err(error) => (Some(error), -1, -1),
                };
                pb::OffsetForLeaderEpochResult {
                    topic_id: p.topic_id,
                    partition: p.partition,
                    error_code: error_code::encode(error_code),
                    leader_epoch,
                    end_offset,
                }
            })
            .collect();
        Ok(Response::new(pb::OffsetForLeaderEpochResponse {
            partitions,
        }))
    }
}
