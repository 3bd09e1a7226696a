//! End to end through the generated code: a tonic server with trivial in-test implementations of
//! every service on 127.0.0.1:0, and one call of every RPC through the generated clients. Every
//! wait is bounded; the server is shut down at the end (and dropped with the runtime on failure).

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use prost::bytes::Bytes;
use runnel_rpc::controller::v1::{
    self as ctl,
    controller_service_client::ControllerServiceClient,
    controller_service_server::{ControllerService, ControllerServiceServer},
    raft_service_client::RaftServiceClient,
    raft_service_server::{RaftService, RaftServiceServer},
};
use runnel_rpc::replication::v1::{
    self as repl,
    replica_service_client::ReplicaServiceClient,
    replica_service_server::{ReplicaService, ReplicaServiceServer},
};
use runnel_rpc::MAX_MESSAGE_BYTES;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const TOPIC_ID: [u8; 16] = [7; 16];
/// Larger than tonic's default 4 MiB decoding limit, to check that `MAX_MESSAGE_BYTES` is
/// what lets big fetch responses through.
const BIG_RECORDS: usize = 5 * 1024 * 1024;

struct Raft;

#[tonic::async_trait]
impl RaftService for Raft {
    async fn append_entries(
        &self,
        request: Request<ctl::RaftRequest>,
    ) -> Result<Response<ctl::RaftResponse>, Status> {
        Ok(echo(b"append:", request))
    }

    async fn vote(
        &self,
        request: Request<ctl::RaftRequest>,
    ) -> Result<Response<ctl::RaftResponse>, Status> {
        Ok(echo(b"vote:", request))
    }

    async fn install_snapshot(
        &self,
        request: Request<ctl::RaftRequest>,
    ) -> Result<Response<ctl::RaftResponse>, Status> {
        Ok(echo(b"snapshot:", request))
    }

    async fn status(
        &self,
        _request: Request<ctl::RaftStatusRequest>,
    ) -> Result<Response<ctl::RaftStatusResponse>, Status> {
        Ok(Response::new(ctl::RaftStatusResponse::default()))
    }
}

fn echo(prefix: &[u8], request: Request<ctl::RaftRequest>) -> Response<ctl::RaftResponse> {
    let mut payload = prefix.to_vec();
    payload.extend_from_slice(&request.into_inner().payload);
    Response::new(ctl::RaftResponse {
        payload: payload.into(),
    })
}

fn hint() -> Option<ctl::ControllerHint> {
    Some(ctl::ControllerHint {
        node_id: 1,
        rpc_address: "127.0.0.1:9093".into(),
    })
}

struct Controller;

#[tonic::async_trait]
impl ControllerService for Controller {
    async fn register_broker(
        &self,
        request: Request<ctl::RegisterBrokerRequest>,
    ) -> Result<Response<ctl::RegisterBrokerResponse>, Status> {
        let r = request.into_inner();
        if r.incarnation_id.len() != 16 || r.rack.as_deref() != Some("rack-a") {
            return Err(Status::invalid_argument("bad registration"));
        }
        Ok(Response::new(ctl::RegisterBrokerResponse {
            error_code: 0,
            error_message: String::new(),
            broker_epoch: 100 + i64::from(r.node_id),
            controller: hint(),
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<ctl::BrokerHeartbeatRequest>,
    ) -> Result<Response<ctl::BrokerHeartbeatResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(ctl::BrokerHeartbeatResponse {
            error_code: 0,
            controller: hint(),
            is_caught_up: r.current_metadata_offset >= 10,
            is_fenced: r.wants_fence,
            should_shut_down: r.wants_shutdown,
        }))
    }

    async fn write(
        &self,
        request: Request<ctl::WriteRequest>,
    ) -> Result<Response<ctl::WriteResponse>, Status> {
        let r = request.into_inner();
        // Answers NOT_CONTROLLER to node 3, echoes the command reversed to everyone else.
        if r.origin_node_id == 3 {
            return Ok(Response::new(ctl::WriteResponse {
                error_code: 41,
                error_message: "not the active controller".into(),
                controller: hint(),
                result: Bytes::new(),
                offset: 0,
            }));
        }
        let mut result = r.command.to_vec();
        result.reverse();
        Ok(Response::new(ctl::WriteResponse {
            error_code: 0,
            error_message: String::new(),
            controller: None,
            result: result.into(),
            offset: 42,
        }))
    }
}

struct Replica;

fn fetch_response(request: repl::ReplicaFetchRequest) -> repl::ReplicaFetchResponse {
    let partitions = request
        .partitions
        .into_iter()
        .map(|p| {
            let records = if p.partition_max_bytes as usize > BIG_RECORDS {
                Bytes::from(vec![0xAB; BIG_RECORDS])
            } else {
                Bytes::from(format!("batches from {}", p.fetch_offset))
            };
            repl::FetchPartitionResponse {
                topic_id: p.topic_id,
                partition: p.partition,
                error_code: 0,
                high_watermark: p.fetch_offset,
                log_start_offset: 0,
                diverging_epoch: (p.last_fetched_epoch == 3).then_some(repl::EpochEndOffset {
                    epoch: 2,
                    end_offset: 40,
                }),
                current_leader: None,
                records,
            }
        })
        .collect();
    repl::ReplicaFetchResponse {
        correlation_id: request.correlation_id,
        error_code: 0,
        partitions,
    }
}

#[tonic::async_trait]
impl ReplicaService for Replica {
    type FetchStream = BoxStream<repl::ReplicaFetchResponse>;

    async fn fetch(
        &self,
        request: Request<Streaming<repl::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let responses = request
            .into_inner()
            .map(|request| request.map(fetch_response));
        Ok(Response::new(Box::pin(responses)))
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<repl::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<repl::OffsetForLeaderEpochResponse>, Status> {
        let partitions = request
            .into_inner()
            .partitions
            .into_iter()
            .map(|p| repl::OffsetForLeaderEpochResult {
                topic_id: p.topic_id,
                partition: p.partition,
                error_code: 0,
                leader_epoch: p.leader_epoch - 1,
                end_offset: 1234,
            })
            .collect();
        Ok(Response::new(repl::OffsetForLeaderEpochResponse {
            partitions,
        }))
    }
}

fn fetch_partition(partition: i32, fetch_offset: i64, max_bytes: i32) -> repl::FetchPartition {
    repl::FetchPartition {
        topic_id: Bytes::from_static(&TOPIC_ID),
        partition,
        current_leader_epoch: 3,
        fetch_offset,
        last_fetched_epoch: if partition == 1 { 3 } else { 2 },
        log_start_offset: 0,
        partition_max_bytes: max_bytes,
    }
}

#[tokio::test]
async fn every_rpc_round_trips_through_generated_code() {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1:0")
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(Raft))
            .add_service(ControllerServiceServer::new(Controller))
            .add_service(
                ReplicaServiceServer::new(Replica)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    tokio::time::timeout(Duration::from_secs(30), call_everything(addr))
        .await
        .expect("calls finished within 30 s");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped within 10 s")
        .expect("server task")
        .expect("server ran cleanly");
}

async fn call_everything(addr: std::net::SocketAddr) {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = endpoint.connect().await.expect("connect");

    // Raft transport.
    let mut raft = RaftServiceClient::new(channel.clone());
    let req = |payload: &'static [u8]| ctl::RaftRequest {
        payload: Bytes::from_static(payload),
    };
    let r = raft.append_entries(req(b"entries")).await.unwrap();
    assert_eq!(&r.into_inner().payload[..], b"append:entries");
    let r = raft.vote(req(b"v")).await.unwrap();
    assert_eq!(&r.into_inner().payload[..], b"vote:v");
    let r = raft.install_snapshot(req(b"chunk")).await.unwrap();
    assert_eq!(&r.into_inner().payload[..], b"snapshot:chunk");

    // Controller requests.
    let mut controller = ControllerServiceClient::new(channel.clone());
    let r = controller
        .register_broker(ctl::RegisterBrokerRequest {
            node_id: 2,
            incarnation_id: Bytes::from_static(&[1; 16]),
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9192,
            rpc_address: "127.0.0.1:9193".into(),
            rack: Some("rack-a".into()),
            cluster_id: "runnel-test".into(),
            listeners: vec![ctl::KafkaListener {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9192,
            }],
            directory_id: None,
            previous_broker_epoch: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.error_code, r.broker_epoch), (0, 102));
    assert_eq!(r.controller.unwrap().node_id, 1);

    let r = controller
        .broker_heartbeat(ctl::BrokerHeartbeatRequest {
            node_id: 2,
            broker_epoch: 102,
            current_metadata_offset: 10,
            wants_fence: false,
            wants_shutdown: true,
            log_dir_offline: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.is_caught_up && !r.is_fenced && r.should_shut_down);

    let r = controller
        .write(ctl::WriteRequest {
            origin_node_id: 2,
            command: Bytes::from_static(b"\x01\x02\x03"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.error_code, r.offset), (0, 42));
    assert_eq!(&r.result[..], b"\x03\x02\x01");
    let r = controller
        .write(ctl::WriteRequest {
            origin_node_id: 3,
            command: Bytes::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code, 41);
    assert_eq!(r.controller.unwrap().node_id, 1);

    // Replication: one bidirectional fetch stream with two requests, the second answered with
    // more than tonic's default 4 MiB limit.
    let mut replica = ReplicaServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let outbound = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|request| (request, rx))
    });
    let mut inbound = replica.fetch(outbound).await.unwrap().into_inner();
    let fetch = |correlation_id, partitions| repl::ReplicaFetchRequest {
        correlation_id,
        replica_id: 2,
        broker_epoch: 102,
        max_wait_ms: 500,
        min_bytes: 1,
        max_bytes: i32::MAX,
        partitions,
    };
    tx.send(fetch(
        1,
        vec![
            fetch_partition(0, 42, 1 << 20),
            fetch_partition(1, 50, 1 << 20),
        ],
    ))
    .await
    .unwrap();
    let r = inbound
        .message()
        .await
        .unwrap()
        .expect("first fetch answer");
    assert_eq!((r.correlation_id, r.partitions.len()), (1, 2));
    assert_eq!(&r.partitions[0].records[..], b"batches from 42");
    assert_eq!(r.partitions[0].high_watermark, 42);
    assert_eq!(r.partitions[0].diverging_epoch, None);
    let diverging = r.partitions[1].diverging_epoch.unwrap();
    assert_eq!((diverging.epoch, diverging.end_offset), (2, 40));

    tx.send(fetch(2, vec![fetch_partition(0, 60, 8 << 20)]))
        .await
        .unwrap();
    let r = inbound
        .message()
        .await
        .unwrap()
        .expect("second fetch answer");
    assert_eq!(r.correlation_id, 2);
    assert_eq!(r.partitions[0].records.len(), BIG_RECORDS);
    drop(tx);
    assert!(inbound.message().await.unwrap().is_none(), "stream ends");

    let r = replica
        .offset_for_leader_epoch(repl::OffsetForLeaderEpochRequest {
            replica_id: 2,
            partitions: vec![repl::OffsetForLeaderEpochPartition {
                topic_id: Bytes::from_static(&TOPIC_ID),
                partition: 0,
                current_leader_epoch: 5,
                leader_epoch: 4,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let p = &r.partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 3, 1234));
}
