//! Handlers against a three-broker image in which this node (1) leads some partitions,
//! follows others and has no replica of the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runnel_broker::testing::{build_batch, ControllerCommand, LocalController};
use runnel_broker::{BrokerConfig, ProducerIdManager};

use super::{describe_cluster, fetch, list_offsets, metadata, produce};
use crate::Context;

const NOT_LEADER: i16 = ResponseError::NotLeaderOrFollower.code();

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

/// Topic "t": partition 0 led by broker 2 (1 follows), 1 led by this node, 2 only on broker 3.
fn cluster(dir: &std::path::Path) -> (Arc<LocalController>, Context) {
    let controller = LocalController::new(&[1, 2, 3]);
    let broker = controller.start_broker(dir, 1, BrokerConfig::default());
    let groups = controller.start_groups(&broker);
    controller
        .apply(ControllerCommand::CreateTopic {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: -1,
            replication_factor: -1,
            assignment: Some(vec![vec![2, 1], vec![1, 2], vec![3, 2]]),
            configs: BTreeMap::new(),
        })
        .unwrap();
    let producer_ids = Arc::new(ProducerIdManager::from_controller(
        controller.clone(),
        broker.clone(),
    ));
    let ctx = Context {
        limits: crate::ConnectionLimits::from_config(broker.config()).unwrap(),
        broker,
        groups,
        producer_ids,
        listener: "PLAINTEXT".into(),
    };
    (controller, ctx)
}

async fn produce_codes(ctx: &Context) -> Vec<i16> {
    let partitions = (0..3)
        .map(|i| {
            PartitionProduceData::default()
                .with_index(i)
                .with_records(Some(Bytes::from(build_batch(2, 10))))
        })
        .collect();
    let request =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name())
                .with_partition_data(partitions)]);
    let response = produce::handle(
        ctx,
        request,
        9,
        "test",
        &mut crate::connection::Turn::detached(),
    )
    .await
    .unwrap()
    .unwrap();
    response.responses[0]
        .partition_responses
        .iter()
        .map(|p| p.error_code)
        .collect()
}

async fn fetch_codes(ctx: &Context) -> Vec<i16> {
    let partitions = (0..3)
        .map(|i| {
            FetchPartition::default()
                .with_partition(i)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name())
            .with_partitions(partitions)]);
    let response = fetch::handle(ctx, request, 12).await;
    response.responses[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

fn list_offsets_codes(ctx: &Context) -> Vec<i16> {
    let partitions = (0..3)
        .map(|i| {
            ListOffsetsPartition::default()
                .with_partition_index(i)
                .with_timestamp(-1)
        })
        .collect();
    let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name())
        .with_partitions(partitions)]);
    let response = list_offsets::handle(ctx, request, 7);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

#[tokio::test]
async fn only_the_leader_serves_produce_fetch_and_list_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, ctx) = cluster(dir.path());
    assert_eq!(produce_codes(&ctx).await, [NOT_LEADER, 0, NOT_LEADER]);
    assert_eq!(fetch_codes(&ctx).await, [NOT_LEADER, 0, NOT_LEADER]);
    assert_eq!(list_offsets_codes(&ctx), [NOT_LEADER, 0, NOT_LEADER]);
    // Broker 2 is fenced: this node leads partition 0 too, with a newer leader epoch.
    controller
        .apply(ControllerCommand::FenceBroker { id: 2 })
        .unwrap();
    assert_eq!(produce_codes(&ctx).await, [0, 0, NOT_LEADER]);
    assert_eq!(fetch_codes(&ctx).await, [0, 0, NOT_LEADER]);
    assert_eq!(list_offsets_codes(&ctx), [0, 0, NOT_LEADER]);
    let (_, epoch) = ctx.broker.leader_partition("t", 0).unwrap();
    assert!(epoch > 0);
}

#[tokio::test]
async fn metadata_lists_live_brokers_and_leaderless_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, ctx) = cluster(dir.path());
    for id in [2, 3] {
        controller
            .apply(ControllerCommand::FenceBroker { id })
            .unwrap();
    }
    ctx.broker.set_active_controller(Some(2));
    let request = MetadataRequest::default().with_topics(None);
    let response = metadata::handle(&ctx, request, 12).await;
    let brokers: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(brokers, [1]);
    // The active controller's broker is fenced, so clients could not reach it: this broker is
    // named instead, as KRaft Kafka does (it forwards admin requests to the controller).
    assert_eq!(response.controller_id.0, 1);
    let t = &response.topics[0];
    let p2 = &t.partitions[2];
    assert_eq!(p2.error_code, ResponseError::LeaderNotAvailable.code());
    assert_eq!(p2.leader_id.0, -1);
    assert_eq!(
        p2.offline_replicas.iter().map(|b| b.0).collect::<Vec<_>>(),
        [3, 2]
    );
    assert_eq!(t.partitions[0].leader_id.0, 1);
    assert_eq!(t.partitions[0].error_code, 0);
    assert_eq!(t.partitions[1].offline_replicas.len(), 1);

    let described = |version: i16, fenced: bool| {
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(fenced);
        describe_cluster::handle(&ctx, request, version)
    };
    let v1 = described(1, false);
    assert_eq!(v1.controller_id.0, 1);
    assert_eq!(
        v1.brokers.iter().map(|b| b.broker_id.0).collect::<Vec<_>>(),
        [1]
    );
    let v2 = described(2, true);
    let fenced: Vec<(i32, bool)> = v2
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.is_fenced))
        .collect();
    assert_eq!(fenced, [(1, false), (2, true), (3, true)]);
    ctx.broker.set_active_controller(None);
    assert_eq!(described(2, false).controller_id.0, -1);
}

#[tokio::test]
async fn metadata_answers_with_the_addresses_of_the_clients_listener() {
    use runnel_broker::testing::Endpoint;
    let dir = tempfile::tempdir().unwrap();
    let (controller, ctx) = cluster(dir.path());
    // Brokers 1 and 2 re-register (same incarnation: only their addresses change) with an
    // INTERNAL and an EXTERNAL listener; broker 3 only with INTERNAL.
    let image = controller.image();
    for (id, external) in [(1, true), (2, true), (3, false)] {
        let endpoint = |name: &str, host: String, port: i32| Endpoint {
            name: name.into(),
            host,
            port,
        };
        let mut listeners = vec![endpoint("INTERNAL", format!("runnel-{id}"), 9092)];
        if external {
            listeners.push(endpoint("EXTERNAL", "127.0.0.1".into(), id * 10_000 + 9092));
        }
        controller
            .apply(ControllerCommand::RegisterBroker {
                id,
                incarnation: image.brokers[&id].incarnation,
                host: format!("runnel-{id}"),
                port: 9092,
                listeners,
                rpc_address: format!("runnel-{id}:9093"),
                rack: None,
                directory_id: None,
                previous_broker_epoch: None,
            })
            .unwrap();
    }
    let through = |listener: &str| Context {
        broker: ctx.broker.clone(),
        groups: ctx.groups.clone(),
        producer_ids: ctx.producer_ids.clone(),
        listener: listener.into(),
        limits: ctx.limits.clone(),
    };
    let addresses = |response: &MetadataResponse| -> Vec<(i32, String, i32)> {
        let brokers = response.brokers.iter();
        brokers
            .map(|b| (b.node_id.0, b.host.to_string(), b.port))
            .collect()
    };
    let all = || MetadataRequest::default().with_topics(None);

    let internal = metadata::handle(&through("INTERNAL"), all(), 12).await;
    assert_eq!(
        addresses(&internal),
        [
            (1, "runnel-1".into(), 9092),
            (2, "runnel-2".into(), 9092),
            (3, "runnel-3".into(), 9092)
        ]
    );
    assert!(internal.topics[0]
        .partitions
        .iter()
        .all(|p| p.error_code == 0));

    // Broker 3 has no EXTERNAL listener: it is left out, and its partition has no leader
    // that these clients could reach.
    let external = metadata::handle(&through("EXTERNAL"), all(), 12).await;
    assert_eq!(
        addresses(&external),
        [
            (1, "127.0.0.1".into(), 19092),
            (2, "127.0.0.1".into(), 29092)
        ]
    );
    let p2 = &external.topics[0].partitions[2];
    assert_eq!(p2.error_code, ResponseError::ListenerNotFound.code());
    assert_eq!(p2.leader_id.0, -1);
    assert_eq!(external.topics[0].partitions[1].leader_id.0, 1);

    let described =
        describe_cluster::handle(&through("EXTERNAL"), DescribeClusterRequest::default(), 1);
    let hosts: Vec<(i32, i32)> = described
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.port))
        .collect();
    assert_eq!(hosts, [(1, 19092), (2, 29092)]);
}

#[tokio::test]
async fn elect_leaders_answers_per_partition() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let dir = tempfile::tempdir().unwrap();
    let (_controller, ctx) = cluster(dir.path());
    let request = |election_type: i8, partitions: Vec<i32>| {
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(topic_name())
                .with_partitions(partitions)]))
    };
    let response = super::elect_leaders::handle(&ctx, request(0, vec![0, 7]), 1).await;
    assert_eq!(response.error_code, 0);
    let codes: Vec<(i32, i16)> = response.replica_election_results[0]
        .partition_result
        .iter()
        .map(|p| (p.partition_id, p.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            (0, ResponseError::ElectionNotNeeded.code()),
            (7, ResponseError::UnknownTopicOrPartition.code())
        ]
    );
    let bad = super::elect_leaders::handle(&ctx, request(5, vec![0]), 1).await;
    assert_eq!(bad.error_code, ResponseError::InvalidRequest.code());
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_from_the_leaders_epochs() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let (controller, ctx) = cluster(dir.path());
    // Partition 1 gets 2 records at its first epoch; then broker 2's fencing moves
    // partition 0 here and bumps its epoch, and partition 0 gets 2 records at that epoch.
    produce_codes(&ctx).await;
    controller
        .apply(ControllerCommand::FenceBroker { id: 2 })
        .unwrap();
    produce_codes(&ctx).await;
    let (_, epoch0) = ctx.broker.leader_partition("t", 0).unwrap();
    let (_, epoch1) = ctx.broker.leader_partition("t", 1).unwrap();
    let ask = |partition: i32, current: i32, epoch: i32| {
        let request = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(topic_name())
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)]),
        ]);
        let response = super::offset_for_leader_epoch::handle(&ctx, request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(ask(1, -1, epoch1), (0, epoch1, 4));
    assert_eq!(ask(0, epoch0, epoch0), (0, epoch0, 2));
    // Nothing was written in partition 0 before its current epoch: an older epoch ends where
    // the log's first epoch starts; a newer one is unknown.
    assert_eq!(ask(0, -1, epoch0 - 1), (0, epoch0 - 1, 0));
    assert_eq!(ask(0, -1, epoch0 + 1), (0, -1, -1));
    let fenced = ResponseError::FencedLeaderEpoch.code();
    let unknown = ResponseError::UnknownLeaderEpoch.code();
    assert_eq!(ask(0, epoch0 - 1, epoch0).0, fenced);
    assert_eq!(ask(0, epoch0 + 1, epoch0).0, unknown);
    assert_eq!(ask(2, -1, 0).0, NOT_LEADER);
}

#[tokio::test]
async fn list_offsets_fences_other_leader_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, ctx) = cluster(dir.path());
    // Fencing broker 2 moves partition 0 here with a bumped leader epoch.
    controller
        .apply(ControllerCommand::FenceBroker { id: 2 })
        .unwrap();
    let (_, epoch) = ctx.broker.leader_partition("t", 0).unwrap();
    assert!(epoch > 0);
    let ask = |current: i32| {
        let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name())
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)
                .with_current_leader_epoch(current)])]);
        list_offsets::handle(&ctx, request, 7).topics[0].partitions[0].error_code
    };
    assert_eq!(ask(-1), 0);
    assert_eq!(ask(epoch), 0);
    assert_eq!(ask(epoch - 1), ResponseError::FencedLeaderEpoch.code());
    assert_eq!(ask(epoch + 1), ResponseError::UnknownLeaderEpoch.code());
}
