//! Writes the seed corpora under `fuzz/corpus/`: the captured client frames for
//! `request_frame`, valid batches (uncompressed and every codec, a compacted topic's keys and
//! tombstones, `__consumer_offsets` records) for `record_batch`, and one message of every
//! type for `rpc_messages`. Run from `fuzz/`: `cargo run --example seeds`. Deterministic, so
//! a re-run rewrites the same files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, SnapshotSegmentId,
    StoredMembership, Vote,
};
use prost::Message;
use runnel_broker::group::records::{
    build_batch, CoordinatorRecord, GroupValue, MemberValue, OffsetValue,
};
use runnel_controller::command::{apply, ControllerCommand};
use runnel_controller::error::ControllerError;
use runnel_controller::image::MetadataImage;
use runnel_controller::store::{RaftNode, TypeConfig};
use runnel_rpc::controller::v1 as ctl;
use runnel_rpc::replication::v1 as repl;
use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};
use uuid::Uuid;

const TIMESTAMP: i64 = 1_700_000_000_000;

fn write(target: &str, name: &str, selector: u8, body: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = vec![selector];
    bytes.extend_from_slice(body);
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn request_frames() {
    let fixtures = Path::new("../crates/runnel-gateway/tests/fixtures");
    let dir = Path::new("corpus/request_frame");
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
}

fn kafka_batch(compression: Compression, keyed: bool) -> Vec<u8> {
    let records: Vec<Record> = (0..4)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: TIMESTAMP + i,
            key: keyed.then(|| Bytes::from(format!("key-{}", i % 2))),
            value: (i != 3).then(|| Bytes::from(format!("value {i} ").repeat(8))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn record_batches() {
    const T: &str = "record_batch";
    let codecs = [
        (Compression::None, "none"),
        (Compression::Gzip, "gzip"),
        (Compression::Snappy, "snappy"),
        (Compression::Lz4, "lz4"),
        (Compression::Zstd, "zstd"),
    ];
    for (i, (compression, name)) in codecs.into_iter().enumerate() {
        let batch = kafka_batch(compression, true);
        // Selector 1: a compacted topic (keys required), Kafka's default timestamp bounds.
        write(T, &format!("{name}-keyed"), 1, &batch);
        // Selector 0x80 | codec | count << 3: the records section alone, to the decompressor.
        write(
            T,
            &format!("{name}-section"),
            0x80 | i as u8 | 4 << 3,
            &batch[61..],
        );
    }
    write(T, "none-unkeyed", 0, &kafka_batch(Compression::None, false));
    let spec = BatchSpec {
        base_offset: 100,
        base_timestamp: TIMESTAMP,
        records: vec![
            TestRecord {
                key: Some(b"k1".to_vec()),
                value: Some(b"v1".to_vec()),
                timestamp_delta: 0,
                headers: vec![("h".into(), Some(b"x".to_vec())), ("n".into(), None)],
            },
            TestRecord {
                key: Some(b"k1".to_vec()),
                value: None,
                timestamp_delta: 5,
                headers: Vec::new(),
            },
        ],
        ..BatchSpec::default()
    };
    let two = build_batch_with(&spec);
    let mut pair = two.clone();
    pair.extend_from_slice(&kafka_batch(Compression::Zstd, true));
    write(T, "two-batches", 0, &pair);
    write(T, "tombstone-logappendtime", 2, &two);

    let offsets = build_batch(
        &[
            CoordinatorRecord::Offset {
                group: "g".into(),
                topic: "fixtures".into(),
                partition: 0,
                value: Some(OffsetValue {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_timestamp: TIMESTAMP,
                    expire_timestamp: None,
                }),
            },
            CoordinatorRecord::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 3,
                    protocol: Some("range".into()),
                    leader: Some("m-1".into()),
                    current_state_timestamp: TIMESTAMP,
                    members: vec![MemberValue {
                        member_id: "m-1".into(),
                        group_instance_id: None,
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 30_000,
                        session_timeout_ms: 10_000,
                        subscription: Bytes::from_static(&[
                            0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0,
                        ]),
                        assignment: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                    }],
                }),
            },
            CoordinatorRecord::Offset {
                group: "g".into(),
                topic: "fixtures".into(),
                partition: 1,
                value: None,
            },
        ],
        TIMESTAMP,
    )
    .unwrap();
    write(T, "consumer-offsets", 0, &offsets);
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<u64, RaftNode> {
    let nodes: BTreeMap<u64, RaftNode> = (1..=3)
        .map(|id| {
            let rpc_addr = format!("runnel-{id}:9093");
            (id, RaftNode { rpc_addr })
        })
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn create_topic() -> ControllerCommand {
    ControllerCommand::CreateTopic {
        name: "fixtures".into(),
        id: Uuid::from_u128(0x1234),
        partitions: 3,
        replication_factor: 3,
        assignment: None,
        configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
    }
}

fn rpc_messages() {
    const T: &str = "rpc_messages";
    // Selectors: the index of each decoder in fuzz_targets/rpc_messages.rs's DECODERS.
    let mut image = MetadataImage::default();
    let commands = [
        ControllerCommand::InitCluster {
            cluster_id: "fuzz-cluster".into(),
        },
        ControllerCommand::RegisterBroker {
            id: 1,
            incarnation: Uuid::from_u128(1),
            host: "runnel-1".into(),
            port: 9092,
            listeners: Vec::new(),
            rpc_address: "runnel-1:9093".into(),
            rack: Some("a".into()),
        },
        ControllerCommand::UnfenceBroker { id: 1 },
        create_topic(),
    ];
    let results: Vec<_> = commands.iter().map(|c| apply(&mut image, c)).collect();

    let vote = Vote::new_committed(2, 1);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(2, 4)),
        entries: vec![
            Entry {
                log_id: log_id(2, 5),
                payload: EntryPayload::Normal(create_topic()),
            },
            Entry {
                log_id: log_id(2, 6),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                log_id: log_id(2, 7),
                payload: EntryPayload::Blank,
            },
        ],
        leader_commit: Some(log_id(2, 4)),
    };
    let vote_request = VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 7)));
    let snapshot_data = serde_json::to_vec(&image).unwrap();
    let install = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 7)),
            last_membership: StoredMembership::new(Some(log_id(2, 6)), membership()),
            snapshot_id: "2-1-7-1".into(),
        },
        offset: 0,
        data: snapshot_data.clone(),
        done: true,
    };
    let raft_requests = [
        serde_json::to_vec(&append).unwrap(),
        serde_json::to_vec(&vote_request).unwrap(),
        serde_json::to_vec(&install).unwrap(),
    ];
    let raft_responses = [
        serde_json::to_vec(&Ok::<_, RaftError<u64>>(
            AppendEntriesResponse::<u64>::Success,
        ))
        .unwrap(),
        serde_json::to_vec(&Ok::<_, RaftError<u64>>(
            AppendEntriesResponse::<u64>::HigherVote(Vote::new(4, 3)),
        ))
        .unwrap(),
        serde_json::to_vec(&Ok::<_, RaftError<u64>>(VoteResponse {
            vote,
            vote_granted: true,
            last_log_id: Some(log_id(2, 7)),
        }))
        .unwrap(),
        serde_json::to_vec(&Err::<VoteResponse<u64>, _>(RaftError::<u64>::Fatal(
            Fatal::Stopped,
        )))
        .unwrap(),
        serde_json::to_vec(&Ok::<_, RaftError<u64, InstallSnapshotError>>(
            InstallSnapshotResponse { vote },
        ))
        .unwrap(),
        serde_json::to_vec(&Err::<InstallSnapshotResponse<u64>, _>(RaftError::<
            u64,
            InstallSnapshotError,
        >::APIError(
            InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: "a".into(),
                    offset: 0,
                },
                got: SnapshotSegmentId {
                    id: "b".into(),
                    offset: 7,
                },
            }),
        )))
        .unwrap(),
    ];

    for (i, payload) in raft_requests.iter().enumerate() {
        let message = ctl::RaftRequest {
            payload: payload.clone().into(),
        };
        write(
            T,
            &format!("00-raft-request-{i}"),
            0,
            &message.encode_to_vec(),
        );
        write(T, &format!("20-raft-request-json-{i}"), 20, payload);
    }
    for (i, payload) in raft_responses.iter().enumerate() {
        let message = ctl::RaftResponse {
            payload: payload.clone().into(),
        };
        write(
            T,
            &format!("01-raft-response-{i}"),
            1,
            &message.encode_to_vec(),
        );
        write(T, &format!("21-raft-response-json-{i}"), 21, payload);
    }
    let hint = ctl::ControllerHint {
        node_id: 2,
        rpc_address: "runnel-2:9093".into(),
    };
    write(T, "02-controller-hint", 2, &hint.encode_to_vec());
    let listener = ctl::KafkaListener {
        name: "PLAINTEXT".into(),
        host: "runnel-1".into(),
        port: 9092,
    };
    let register = ctl::RegisterBrokerRequest {
        node_id: 1,
        incarnation_id: Uuid::from_u128(1).as_bytes().to_vec().into(),
        kafka_host: "runnel-1".into(),
        kafka_port: 9092,
        rpc_address: "runnel-1:9093".into(),
        rack: Some("a".into()),
        cluster_id: "fuzz-cluster".into(),
        listeners: vec![listener.clone()],
    };
    write(
        T,
        "03-register-broker-request",
        3,
        &register.encode_to_vec(),
    );
    write(T, "04-kafka-listener", 4, &listener.encode_to_vec());
    let registered = ctl::RegisterBrokerResponse {
        error_code: 41,
        error_message: "not the controller".into(),
        broker_epoch: 12,
        controller: Some(hint.clone()),
    };
    write(
        T,
        "05-register-broker-response",
        5,
        &registered.encode_to_vec(),
    );
    let heartbeat = ctl::BrokerHeartbeatRequest {
        node_id: 1,
        broker_epoch: 12,
        current_metadata_offset: 99,
        wants_fence: false,
        wants_shutdown: true,
    };
    write(T, "06-heartbeat-request", 6, &heartbeat.encode_to_vec());
    let heartbeat_response = ctl::BrokerHeartbeatResponse {
        error_code: 0,
        controller: Some(hint.clone()),
        is_caught_up: true,
        is_fenced: false,
        should_shut_down: true,
    };
    write(
        T,
        "07-heartbeat-response",
        7,
        &heartbeat_response.encode_to_vec(),
    );
    for (i, command) in commands.iter().enumerate() {
        let json = serde_json::to_vec(command).unwrap();
        let message = ctl::WriteRequest {
            origin_node_id: 1,
            command: json.clone().into(),
        };
        write(
            T,
            &format!("08-write-request-{i}"),
            8,
            &message.encode_to_vec(),
        );
        write(T, &format!("22-command-json-{i}"), 22, &json);
    }
    let refused: Result<(), _> = Err(ControllerError::InvalidRequest("no".into()));
    let mut results: Vec<Vec<u8>> = results
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect();
    results.push(serde_json::to_vec(&refused).unwrap());
    for (i, json) in results.iter().enumerate() {
        let message = ctl::WriteResponse {
            error_code: 0,
            error_message: String::new(),
            controller: Some(hint.clone()),
            result: json.clone().into(),
            offset: 4,
        };
        write(
            T,
            &format!("09-write-response-{i}"),
            9,
            &message.encode_to_vec(),
        );
        write(T, &format!("23-command-result-json-{i}"), 23, json);
    }
    write(T, "24-snapshot-json", 24, &snapshot_data);

    let topic_id: Bytes = Uuid::from_u128(0x1234).as_bytes().to_vec().into();
    let fetch_partition = repl::FetchPartition {
        topic_id: topic_id.clone(),
        partition: 1,
        current_leader_epoch: 2,
        fetch_offset: 10,
        last_fetched_epoch: 1,
        log_start_offset: 0,
        partition_max_bytes: 1 << 20,
    };
    let fetch = repl::ReplicaFetchRequest {
        correlation_id: 5,
        replica_id: 2,
        broker_epoch: 12,
        max_wait_ms: 500,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![fetch_partition.clone()],
    };
    write(T, "10-replica-fetch-request", 10, &fetch.encode_to_vec());
    write(
        T,
        "11-fetch-partition",
        11,
        &fetch_partition.encode_to_vec(),
    );
    let epoch_end = repl::EpochEndOffset {
        epoch: 1,
        end_offset: 8,
    };
    let leader = repl::LeaderIdAndEpoch {
        leader_id: 1,
        leader_epoch: 2,
    };
    let partition_response = repl::FetchPartitionResponse {
        topic_id: topic_id.clone(),
        partition: 1,
        error_code: 0,
        high_watermark: 10,
        log_start_offset: 0,
        diverging_epoch: Some(epoch_end),
        current_leader: Some(leader),
        records: kafka_batch(Compression::None, true).into(),
    };
    let fetch_response = repl::ReplicaFetchResponse {
        correlation_id: 5,
        error_code: 0,
        partitions: vec![partition_response.clone()],
    };
    write(
        T,
        "12-replica-fetch-response",
        12,
        &fetch_response.encode_to_vec(),
    );
    write(
        T,
        "13-fetch-partition-response",
        13,
        &partition_response.encode_to_vec(),
    );
    write(T, "14-epoch-end-offset", 14, &epoch_end.encode_to_vec());
    write(T, "15-leader-id-and-epoch", 15, &leader.encode_to_vec());
    let epoch_partition = repl::OffsetForLeaderEpochPartition {
        topic_id: topic_id.clone(),
        partition: 1,
        current_leader_epoch: 2,
        leader_epoch: 1,
    };
    let epoch_request = repl::OffsetForLeaderEpochRequest {
        replica_id: 2,
        partitions: vec![epoch_partition.clone()],
    };
    write(
        T,
        "16-offset-for-leader-epoch-request",
        16,
        &epoch_request.encode_to_vec(),
    );
    write(
        T,
        "17-offset-for-leader-epoch-partition",
        17,
        &epoch_partition.encode_to_vec(),
    );
    let epoch_result = repl::OffsetForLeaderEpochResult {
        topic_id,
        partition: 1,
        error_code: 0,
        leader_epoch: 1,
        end_offset: 8,
    };
    let epoch_response = repl::OffsetForLeaderEpochResponse {
        partitions: vec![epoch_result.clone()],
    };
    write(
        T,
        "18-offset-for-leader-epoch-response",
        18,
        &epoch_response.encode_to_vec(),
    );
    write(
        T,
        "19-offset-for-leader-epoch-result",
        19,
        &epoch_result.encode_to_vec(),
    );
}

fn main() {
    request_frames();
    record_batches();
    rpc_messages();
}
