//! The group handlers at every advertised version, against a real coordinator: each response
//! must encode at its version (the encoder rejects fields a version does not have).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use runnel_broker::testing::LocalController;
use runnel_broker::{BrokerConfig, ProducerIdManager};

use super::super::{
    delete_groups, describe_groups, find_coordinator, heartbeat, leave_group, list_groups,
    offset_commit, offset_delete, offset_fetch, sync_group,
};
use crate::Context;

const PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5555);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn encodes<T: Encodable>(response: &T, version: i16) {
    let mut buf = BytesMut::new();
    response
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("encoding at v{version}: {e}"));
}

fn context(dir: &std::path::Path) -> Context {
    let config = BrokerConfig::from_pairs([
        ("offsets.topic.num.partitions", "4"),
        ("offsets.topic.replication.factor", "1"),
        ("group.initial.rebalance.delay.ms", "0"),
    ])
    .unwrap();
    let (controller, broker, groups) = LocalController::start_with_groups(dir, 1, config);
    futures::executor::block_on(broker.create_topic("t", 2, 1, BTreeMap::new(), false)).unwrap();
    futures::executor::block_on(groups.ensure_offsets_topic()).unwrap();
    let producer_ids = Arc::new(ProducerIdManager::from_controller(
        controller,
        broker.clone(),
    ));
    Context {
        limits: crate::ConnectionLimits::from_config(broker.config()).unwrap(),
        broker,
        groups,
        producer_ids,
        listener: "PLAINTEXT".into(),
    }
}

fn join_request(group: &str, member: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(&[
                0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff,
            ]))])
}

/// Joins `group` alone at `version` and returns (member id, generation).
async fn join(ctx: &Context, group: &str, version: i16) -> (String, i32) {
    let mut response =
        super::handle(ctx, join_request(group, "", None), version, "cid", PEER).await;
    encodes(&response, version);
    if version >= 4 {
        assert_eq!(response.error_code, ResponseError::MemberIdRequired.code());
        let member = response.member_id.as_str().to_string();
        response = super::handle(
            ctx,
            join_request(group, &member, None),
            version,
            "cid",
            PEER,
        )
        .await;
        encodes(&response, version);
    }
    assert_eq!(response.error_code, 0, "join v{version}");
    assert_eq!(response.generation_id, 1);
    assert_eq!(response.leader, response.member_id);
    assert_eq!(response.members.len(), 1);
    assert_eq!(
        response.protocol_name.as_ref().map(|p| p.as_str()),
        Some("range")
    );
    if version >= 7 {
        assert_eq!(
            response.protocol_type.as_ref().map(|p| p.as_str()),
            Some("consumer")
        );
    }
    (
        response.member_id.as_str().to_string(),
        response.generation_id,
    )
}

async fn sync(ctx: &Context, group: &str, member: &str, generation: i32, version: i16) {
    let mut request = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(member))
            .with_assignment(Bytes::from_static(b"assignment"))]);
    if version >= 5 {
        request.protocol_type = Some(s("consumer"));
        request.protocol_name = Some(s("range"));
    }
    let response = sync_group::handle(ctx, request, version).await;
    encodes(&response, version);
    assert_eq!(response.error_code, 0, "sync v{version}");
    assert_eq!(response.assignment, Bytes::from_static(b"assignment"));
}

#[tokio::test]
async fn every_group_api_version_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());

    for version in 0..=6 {
        let mut request = FindCoordinatorRequest::default().with_key(s("g"));
        if version >= 4 {
            request = FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![s("g"), s("h")]);
        }
        let response = find_coordinator::handle(&ctx, request, version).await;
        encodes(&response, version);
        if version >= 4 {
            assert_eq!(response.coordinators.len(), 2);
            assert!(response.coordinators.iter().all(|c| c.error_code == 0
                && c.node_id.0 == 1
                && c.host.as_str() == "localhost"
                && c.port == 9092));
        } else {
            assert_eq!((response.error_code, response.node_id.0), (0, 1));
        }
        // Transaction coordinators are not available yet.
        let txn = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_coordinator_keys(vec![s("tx")])
        } else {
            FindCoordinatorRequest::default()
                .with_key(s("tx"))
                .with_key_type(1)
        };
        if version >= 1 {
            let response = find_coordinator::handle(&ctx, txn, version).await;
            encodes(&response, version);
            let code = if version >= 4 {
                response.coordinators[0].error_code
            } else {
                response.error_code
            };
            assert_eq!(
                code,
                ResponseError::TransactionalIdAuthorizationFailed.code()
            );
        }
    }

    for version in 0..=9 {
        join(&ctx, &format!("join-{version}"), version).await;
    }

    for version in 0..=5 {
        let group = format!("sync-{version}");
        let (member, generation) = join(&ctx, &group, 5).await;
        sync(&ctx, &group, &member, generation, version).await;
    }

    for version in 0..=4 {
        let group = format!("hb-{version}");
        let (member, generation) = join(&ctx, &group, 5).await;
        sync(&ctx, &group, &member, generation, 3).await;
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(s(&member));
        let response = heartbeat::handle(&ctx, request.clone(), version).await;
        encodes(&response, version);
        assert_eq!(response.error_code, 0);
        let stale = heartbeat::handle(&ctx, request.with_generation_id(0), version).await;
        assert_eq!(stale.error_code, ResponseError::IllegalGeneration.code());
    }

    for version in 2..=9 {
        let group = format!("commit-{version}");
        let (member, generation) = join(&ctx, &group, 5).await;
        sync(&ctx, &group, &member, generation, 3).await;
        let partition = |p: i32| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(42)
                .with_committed_metadata(Some(s("meta")))
        };
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(&member))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![partition(0), partition(7)]),
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("missing")))
                    .with_partitions(vec![partition(0)]),
            ]);
        let response = offset_commit::handle(&ctx, request, version).await;
        encodes(&response, version);
        let codes: Vec<i16> = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(codes, vec![0, unknown, unknown], "commit v{version}");
    }

    for version in 1..=9 {
        let group = "commit-5";
        let response = if version >= 8 {
            let request = OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0, 1])])),
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(None),
            ]);
            let response = offset_fetch::handle(&ctx, request, version).await;
            encodes(&response, version);
            let first = &response.groups[0].topics[0].partitions;
            assert_eq!(
                first.iter().map(|p| p.committed_offset).collect::<Vec<_>>(),
                vec![42, -1]
            );
            assert_eq!(response.groups[1].topics[0].partitions.len(), 1);
            continue;
        } else {
            let request = OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1])]));
            offset_fetch::handle(&ctx, request, version).await
        };
        encodes(&response, version);
        let partitions = &response.topics[0].partitions;
        assert_eq!(partitions[0].committed_offset, 42, "fetch v{version}");
        assert_eq!(partitions[0].metadata.as_ref().unwrap().as_str(), "meta");
        assert_eq!(partitions[1].committed_offset, -1);
        if version >= 2 {
            let all = OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(None);
            let response = offset_fetch::handle(&ctx, all, version).await;
            encodes(&response, version);
            assert_eq!(response.topics.len(), 1);
        }
    }

    for version in 0..=5 {
        let mut request = ListGroupsRequest::default();
        if version >= 4 {
            request.states_filter = vec![s("stable")];
        }
        if version >= 5 {
            request.types_filter = vec![s("classic")];
        }
        let response = list_groups::handle(&ctx, request, version).await;
        encodes(&response, version);
        assert!(response
            .groups
            .iter()
            .any(|g| g.group_id.as_str() == "commit-5"));
        if version >= 4 {
            assert!(response
                .groups
                .iter()
                .all(|g| g.group_state.as_str() == "Stable"));
        }
    }

    for version in 0..=6 {
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(s("commit-5")), GroupId(s("nobody"))])
            .with_include_authorized_operations(version >= 3);
        let response = describe_groups::handle(&ctx, request, version).await;
        encodes(&response, version);
        let g = &response.groups[0];
        assert_eq!(g.group_state.as_str(), "Stable");
        assert_eq!(g.protocol_data.as_str(), "range");
        assert_eq!(g.members.len(), 1);
        assert_eq!(
            g.members[0].member_assignment,
            Bytes::from_static(b"assignment")
        );
        let missing = &response.groups[1];
        assert_eq!(missing.group_state.as_str(), "Dead");
        let expected = if version >= 6 {
            ResponseError::GroupIdNotFound.code()
        } else {
            0
        };
        assert_eq!(missing.error_code, expected);
    }

    for version in 0..=5 {
        let group = format!("leave-{version}");
        let (member, _) = join(&ctx, &group, 5).await;
        let request = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(s(&member)),
                    MemberIdentity::default().with_member_id(s("ghost")),
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(&member))
        };
        let response = leave_group::handle(&ctx, request, version).await;
        encodes(&response, version);
        assert_eq!(response.error_code, 0);
        if version >= 3 {
            assert_eq!(
                response
                    .members
                    .iter()
                    .map(|m| m.error_code)
                    .collect::<Vec<_>>(),
                vec![0, ResponseError::UnknownMemberId.code()]
            );
        }
    }

    let request = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("commit-6")))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0),
                OffsetDeleteRequestPartition::default().with_partition_index(9),
            ])]);
    let response = offset_delete::handle(&ctx, request, 0).await;
    encodes(&response, 0);
    assert_eq!(
        response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect::<Vec<_>>(),
        vec![
            ResponseError::GroupSubscribedToTopic.code(),
            ResponseError::UnknownTopicOrPartition.code()
        ]
    );

    for version in 0..=2 {
        let request = DeleteGroupsRequest::default().with_groups_names(vec![
            GroupId(s(&format!("leave-{version}"))),
            GroupId(s("commit-2")),
        ]);
        let response = delete_groups::handle(&ctx, request, version).await;
        encodes(&response, version);
        assert_eq!(
            response
                .results
                .iter()
                .map(|r| r.error_code)
                .collect::<Vec<_>>(),
            vec![0, ResponseError::NonEmptyGroup.code()]
        );
    }
}
