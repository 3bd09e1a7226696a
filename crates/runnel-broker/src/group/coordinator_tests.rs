//! Coordinator tests on real logs in a temp dir; timers run on tokio's paused clock.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{BufMut, BytesMut};

use super::*;
use parking_lot::Mutex;
use std::path::PathBuf;

use futures::executor::block_on;
use runnel_controller::command::ControllerCommand;

use crate::config::BrokerConfig;
use crate::testing::LocalController;

fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

struct Node {
    broker: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
}

/// The in-memory controller of each test data dir, so a reopened node finds its topics again
/// (as a real node finds the Raft state on disk).
fn controller_of(dir: &Path) -> Arc<LocalController> {
    static CLUSTERS: Mutex<Vec<(PathBuf, Arc<LocalController>)>> = Mutex::new(Vec::new());
    let mut clusters = CLUSTERS.lock();
    if let Some((_, c)) = clusters.iter().find(|(d, _)| d == dir) {
        return c.clone();
    }
    let c = LocalController::new(&[1]);
    clusters.push((dir.to_path_buf(), c.clone()));
    c
}

fn open(dir: &Path, extra: &[(&str, &str)]) -> Node {
    let broker = open_broker(dir, extra);
    let groups = controller_of(dir).start_groups(&broker);
    block_on(groups.ensure_offsets_topic()).unwrap();
    Node { broker, groups }
}

fn open_broker(dir: &Path, extra: &[(&str, &str)]) -> Arc<ReplicaManager> {
    let mut pairs = vec![
        ("offsets.topic.num.partitions", "4"),
        ("offsets.topic.replication.factor", "1"),
        ("group.initial.rebalance.delay.ms", "0"),
    ];
    pairs.extend_from_slice(extra);
    let config = BrokerConfig::from_pairs(pairs).unwrap();
    let broker = controller_of(dir).start_broker(dir, 1, config);
    for (topic, partitions) in [("t", 3), ("u", 1)] {
        if broker.image().topic(topic).is_none() {
            block_on(broker.create_topic(topic, partitions, 1, BTreeMap::new(), false)).unwrap();
        }
    }
    broker
}

impl Node {
    fn close(self) {
        drop(self.groups);
        drop(self.broker);
    }
}

fn join_req(member_id: &str, session_ms: i32) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: 20_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(&["t"]))],
        require_known_member_id: false,
        supports_skip_assignment: false,
    }
}

fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &[u8])]) -> SyncRequest {
    SyncRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        generation_id: generation,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a)))
            .collect(),
    }
}

fn commit(
    group: &str,
    member: &str,
    generation: i32,
    offsets: &[(&str, i32, i64)],
) -> CommitRequest {
    CommitRequest {
        group_id: group.to_string(),
        member_id: member.to_string(),
        group_instance_id: None,
        generation_id: generation,
        offsets: offsets
            .iter()
            .map(|(t, p, o)| OffsetCommit {
                topic: t.to_string(),
                partition: *p,
                offset: *o,
                leader_epoch: 3,
                metadata: Some(format!("m{o}")),
            })
            .collect(),
        version: 8,
    }
}

/// The committed offset of each of `partitions`, as OffsetFetch without `require_stable`
/// answers.
fn committed(
    groups: &GroupCoordinator,
    group: &str,
    partitions: &[(String, i32)],
) -> Vec<Option<i64>> {
    groups
        .fetch_offsets(group, Some(partitions), false)
        .unwrap()
        .into_iter()
        .map(|(_, _, v)| v.unwrap().map(|v| v.offset))
        .collect()
}

/// One member `g`/member joined, synced and Stable at generation 1; returns its member id.
async fn stable_member(groups: &Arc<GroupCoordinator>, group: &str, session_ms: i32) -> String {
    let r = groups.join_group(group, join_req("", session_ms)).await;
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader, r.member_id);
    assert!(r.member_id.starts_with("client-"), "{}", r.member_id);
    let s = groups
        .sync_group(group, sync_req(&r.member_id, 1, &[(&r.member_id, b"A")]))
        .await;
    assert_eq!(s.error, None, "{s:?}");
    assert_eq!(s.assignment, Bytes::from_static(b"A"));
    r.member_id
}

#[tokio::test]
async fn offsets_and_group_metadata_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    assert!(node.broker.image().topic(OFFSETS_TOPIC).is_some());
    assert_eq!(
        node.broker.image().topic(OFFSETS_TOPIC).unwrap().configs["cleanup.policy"],
        "compact"
    );
    let member = stable_member(&node.groups, "g", 10_000).await;
    let results = node
        .groups
        .commit_offsets(commit("g", &member, 1, &[("t", 0, 5), ("t", 2, 9)]))
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(())]);
    // A simple consumer's group is created by its first commit.
    let results = node
        .groups
        .commit_offsets(commit("simple", "", -1, &[("u", 0, 1)]))
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(())]);
    let again = node
        .groups
        .commit_offsets(commit("g", &member, 1, &[("t", 0, 6)]))
        .await
        .unwrap();
    assert_eq!(again, vec![Ok(())]);
    node.close();

    let node = open(dir.path(), &[]);
    let fetched = node.groups.fetch_offsets("g", None, false).unwrap();
    let summary: Vec<(String, i32, i64, i32, String)> = fetched
        .into_iter()
        .map(|(t, p, v)| {
            let v = v.unwrap().unwrap();
            (t, p, v.offset, v.leader_epoch, v.metadata)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("t".into(), 0, 6, 3, "m6".into()),
            ("t".into(), 2, 9, 3, "m9".into())
        ]
    );
    let wanted = [("u".to_string(), 0), ("u".to_string(), 1)];
    let fetched = committed(&node.groups, "simple", &wanted);
    assert_eq!(fetched, vec![Some(1), None]);

    let described = node.groups.describe_group("g").unwrap().unwrap();
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.protocol_data, "range");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id, member);
    assert_eq!(described.members[0].assignment, Bytes::from_static(b"A"));
    assert_eq!(described.members[0].metadata, subscription(&["t"]));
    // The member carries on with its generation after the restart.
    assert_eq!(node.groups.heartbeat("g", &member, None, 1), Ok(()));
    let (error, listed) = node.groups.list_groups();
    assert_eq!(error, None);
    assert_eq!(
        listed
            .iter()
            .map(|g| (g.group_id.as_str(), g.state))
            .collect::<Vec<_>>(),
        vec![("g", GroupState::Stable), ("simple", GroupState::Empty)]
    );
    node.close();
}

#[tokio::test]
async fn deleted_groups_stay_deleted_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    let _ = node
        .groups
        .commit_offsets(commit("gone", "", -1, &[("t", 0, 1), ("t", 1, 2)]))
        .await
        .unwrap();
    let member = stable_member(&node.groups, "busy", 10_000).await;
    let results = node
        .groups
        .delete_groups(&["gone".into(), "busy".into(), "never".into()]);
    assert_eq!(
        results,
        vec![
            Ok(()),
            Err(ResponseError::NonEmptyGroup),
            Err(ResponseError::GroupIdNotFound)
        ]
    );
    assert!(node.groups.describe_group("gone").unwrap().is_none());
    // The member leaves; the group becomes Empty and can then be deleted.
    let left = node
        .groups
        .leave_group(
            "busy",
            &[LeavingMember {
                member_id: member,
                group_instance_id: None,
            }],
        )
        .unwrap();
    assert_eq!(left, vec![Ok(())]);
    assert_eq!(
        node.groups.describe_group("busy").unwrap().unwrap().state,
        GroupState::Empty
    );
    assert_eq!(node.groups.delete_groups(&["busy".into()]), vec![Ok(())]);
    node.close();

    let node = open(dir.path(), &[]);
    assert!(node.groups.describe_group("gone").unwrap().is_none());
    assert!(node.groups.describe_group("busy").unwrap().is_none());
    assert!(node
        .groups
        .fetch_offsets("gone", None, false)
        .unwrap()
        .is_empty());
    assert!(node.groups.list_groups().1.is_empty());
    node.close();
}

#[tokio::test(start_paused = true)]
async fn offsets_expire_after_the_retention_of_an_empty_group() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(
        dir.path(),
        &[
            ("offsets.retention.minutes", "1"),
            ("offsets.retention.check.interval.ms", "1000"),
        ],
    );
    let (stop, stopped) = watch::channel(false);
    let timers = tokio::spawn(node.groups.clone().run(stopped));
    let _ = node
        .groups
        .commit_offsets(commit("old", "", -1, &[("t", 0, 1)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let _ = node
        .groups
        .commit_offsets(commit("old", "", -1, &[("t", 1, 1)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    // t-0 was committed 61 s ago, t-1 31 s ago.
    let left: Vec<(String, i32)> = node
        .groups
        .fetch_offsets("old", None, false)
        .unwrap()
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    assert_eq!(left, vec![("t".to_string(), 1)]);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(node.groups.describe_group("old").unwrap().is_none());
    let _ = stop.send(true);
    timers.await.unwrap();
    node.close();

    let node = open(dir.path(), &[("offsets.retention.minutes", "1")]);
    assert!(node.groups.describe_group("old").unwrap().is_none());
    node.close();
}

#[test]
fn expiry_counts_from_when_a_consumer_group_became_empty() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = open(dir.path(), &[("offsets.retention.minutes", "1")]);
        let member = stable_member(&node.groups, "g", 10_000).await;
        let _ = node
            .groups
            .commit_offsets(commit("g", &member, 1, &[("t", 0, 1)]))
            .await
            .unwrap();
        let now = node.groups.now();
        // Stable and subscribed to t: never expires.
        assert_eq!(node.groups.expire_offsets(now + 3_600_000), 0);
        let _ = node.groups.leave_group(
            "g",
            &[LeavingMember {
                member_id: member,
                group_instance_id: None,
            }],
        );
        let emptied = node.groups.now();
        assert_eq!(node.groups.expire_offsets(emptied + 59_000), 0);
        assert_eq!(node.groups.expire_offsets(emptied + 60_000), 1);
        assert!(node.groups.describe_group("g").unwrap().is_none());
        node.close();
    });
}

#[tokio::test(start_paused = true)]
async fn silent_members_expire_and_parked_joins_complete() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    let (stop, stopped) = watch::channel(false);
    let timers = tokio::spawn(node.groups.clone().run(stopped));
    let groups = node.groups.clone();

    let m1 = stable_member(&groups, "g", 6_000).await;
    // A second member's join parks until m1 rejoins.
    let g2 = groups.clone();
    let second = tokio::spawn(async move { g2.join_group("g", join_req("", 6_000)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished());
    assert_eq!(
        groups.heartbeat("g", &m1, None, 1),
        Err(ResponseError::RebalanceInProgress)
    );
    let r1 = groups.join_group("g", join_req(&m1, 6_000)).await;
    let r2 = second.await.unwrap();
    assert_eq!((r1.generation_id, r2.generation_id), (2, 2));
    assert_eq!(r1.members.len(), 2);
    assert_eq!(r1.leader, m1);
    // The follower's SyncGroup waits for the leader's.
    let g2 = groups.clone();
    let follower = r2.member_id.clone();
    let f = follower.clone();
    let sync2 = tokio::spawn(async move { g2.sync_group("g", sync_req(&f, 2, &[])).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!sync2.is_finished());
    let s1 = groups
        .sync_group("g", sync_req(&m1, 2, &[(&m1, b"one"), (&follower, b"two")]))
        .await;
    assert_eq!(s1.assignment, Bytes::from_static(b"one"));
    assert_eq!(sync2.await.unwrap().assignment, Bytes::from_static(b"two"));

    // m1 keeps heartbeating; the follower goes silent and is removed after its session.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = groups.heartbeat("g", &m1, None, 2);
    }
    let described = groups.describe_group("g").unwrap().unwrap();
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.state, GroupState::PreparingRebalance);
    // m1 rejoins and is alone in generation 3; then it too goes silent: the group empties.
    let r = groups.join_group("g", join_req(&m1, 6_000)).await;
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
    let _ = groups.sync_group("g", sync_req(&m1, 3, &[])).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let described = groups.describe_group("g").unwrap().unwrap();
    assert_eq!(described.state, GroupState::Empty);
    assert!(described.members.is_empty());

    let _ = stop.send(true);
    timers.await.unwrap();
    node.close();
}

#[tokio::test(start_paused = true)]
async fn initial_rebalance_delay_gathers_members() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[("group.initial.rebalance.delay.ms", "3000")]);
    let (stop, stopped) = watch::channel(false);
    let timers = tokio::spawn(node.groups.clone().run(stopped));
    let start = tokio::time::Instant::now();
    let mut joins = Vec::new();
    for _ in 0..3 {
        let g = node.groups.clone();
        joins.push(tokio::spawn(async move {
            g.join_group("g", join_req("", 10_000)).await
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut generations = Vec::new();
    for j in joins {
        generations.push(j.await.unwrap().generation_id);
    }
    assert_eq!(generations, vec![1, 1, 1]);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    let _ = stop.send(true);
    timers.await.unwrap();
    node.close();
}

#[tokio::test]
async fn commit_errors_per_partition_and_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    let mut req = commit("s", "", -1, &[("t", 0, 1), ("t", 9, 1), ("nope", 0, 1)]);
    req.offsets[0].metadata = Some("x".repeat(OFFSET_METADATA_MAX_BYTES + 1));
    let results = node.groups.commit_offsets(req).await.unwrap();
    assert_eq!(
        results,
        vec![
            Err(ResponseError::OffsetMetadataTooLarge),
            Err(ResponseError::UnknownTopicOrPartition),
            Err(ResponseError::UnknownTopicOrPartition)
        ]
    );
    // Nothing was accepted, so no group came to be.
    assert!(node.groups.describe_group("s").unwrap().is_none());
    let err = node
        .groups
        .commit_offsets(commit("missing", "m", 1, &[("t", 0, 1)]))
        .await
        .unwrap_err();
    assert_eq!(err, ResponseError::IllegalGeneration);
    let mut v9 = commit("missing", "m", 1, &[("t", 0, 1)]);
    v9.version = 9;
    assert_eq!(
        node.groups.commit_offsets(v9).await.unwrap_err(),
        ResponseError::GroupIdNotFound
    );
    let member = stable_member(&node.groups, "g", 10_000).await;
    assert_eq!(
        node.groups
            .commit_offsets(commit("g", &member, 0, &[("t", 0, 1)]))
            .await
            .unwrap_err(),
        ResponseError::IllegalGeneration
    );
    assert_eq!(
        node.groups
            .commit_offsets(commit("g", "", -1, &[("t", 0, 1)]))
            .await
            .unwrap_err(),
        ResponseError::UnknownMemberId
    );
    node.close();
}

#[tokio::test]
async fn offset_delete_refuses_subscribed_topics() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    let member = stable_member(&node.groups, "g", 10_000).await;
    let _ = node
        .groups
        .commit_offsets(commit("g", &member, 1, &[("t", 0, 1), ("u", 0, 1)]))
        .await
        .unwrap();
    let results = node
        .groups
        .delete_offsets("g", &[("t".into(), 0), ("u".into(), 0)])
        .unwrap();
    assert_eq!(
        results,
        vec![Err(ResponseError::GroupSubscribedToTopic), Ok(())]
    );
    let left: Vec<String> = node
        .groups
        .fetch_offsets("g", None, false)
        .unwrap()
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    assert_eq!(left, vec!["t".to_string()]);
    assert_eq!(
        node.groups
            .delete_offsets("nobody", &[("t".into(), 0)])
            .unwrap_err(),
        ResponseError::GroupIdNotFound
    );
    node.close();
}

#[tokio::test]
async fn unloading_a_partition_hands_the_groups_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    let member = stable_member(&node.groups, "g", 10_000).await;
    let p = node.groups.partition_for("g");
    node.groups.unload_partition(p);
    assert_eq!(
        node.groups.heartbeat("g", &member, None, 1),
        Err(ResponseError::NotCoordinator)
    );
    let r = node.groups.join_group("g", join_req(&member, 10_000)).await;
    assert_eq!(r.error, Some(ResponseError::NotCoordinator));
    assert_eq!(node.groups.load_partition(p).unwrap(), 1);
    assert_eq!(node.groups.heartbeat("g", &member, None, 1), Ok(()));
    node.close();
}

#[tokio::test]
async fn find_coordinator_names_the_partition_leader() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    assert_eq!(node.groups.num_partitions(), 4);
    assert_eq!(node.groups.partition_for("hello"), 99_162_322 % 4);
    let found = node
        .groups
        .find_coordinator("anything", "PLAINTEXT")
        .unwrap();
    assert_eq!(
        found,
        FoundCoordinator {
            node_id: 1,
            host: "localhost".into(),
            port: 9092
        }
    );
    node.close();
}

#[tokio::test]
async fn invalid_group_ids_and_unknown_members() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &[]);
    let r = node.groups.join_group("", join_req("", 10_000)).await;
    assert_eq!(r.error, Some(ResponseError::InvalidGroupId));
    let r = node
        .groups
        .join_group("g", join_req("stranger", 10_000))
        .await;
    assert_eq!(r.error, Some(ResponseError::UnknownMemberId));
    let r = node.groups.join_group("g", join_req("", 10)).await;
    assert_eq!(r.error, Some(ResponseError::InvalidSessionTimeout));
    assert!(node.groups.describe_group("g").unwrap().is_none());
    assert_eq!(
        node.groups.heartbeat("g", "x", None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    let s = node.groups.sync_group("g", sync_req("x", 1, &[])).await;
    assert_eq!(s.error, Some(ResponseError::UnknownMemberId));
    node.close();
}

#[tokio::test]
async fn records_that_cannot_be_decoded_are_skipped_on_load() {
    let dir = tempfile::tempdir().unwrap();
    // A `__consumer_offsets` created without compaction (by hand, or by another tool) also
    // accepts records without a key.
    let broker = open_broker(dir.path(), &[]);
    block_on(broker.create_topic(OFFSETS_TOPIC, 4, 1, BTreeMap::new(), false)).unwrap();
    let p = partition_for("g", 4);
    let partition = broker.partition(OFFSETS_TOPIC, p).unwrap();
    let epoch = broker.image().topic(OFFSETS_TOPIC).unwrap().partitions[p as usize].leader_epoch;
    // Valid offsets around a malformed key, a null key and unknown value versions.
    let raw = crate::group::records::tests::mixed_records("g");
    for chunk in [&raw[..3], &raw[3..]] {
        let mut batch = crate::group::records::build_raw_batch(chunk, 1).unwrap();
        partition.append(&mut batch, epoch).unwrap();
    }
    drop(partition);
    drop(broker);

    let node = open(dir.path(), &[]);
    let offsets: Vec<(String, i32, i64)> = node
        .groups
        .fetch_offsets("g", None, false)
        .unwrap()
        .into_iter()
        .map(|(t, p, v)| (t, p, v.unwrap().unwrap().offset))
        .collect();
    assert_eq!(
        offsets,
        vec![("t".into(), 0, 5), ("t".into(), 1, 7), ("t".into(), 2, 9)]
    );
    // The group holds only offsets: its unreadable metadata record was skipped.
    let described = node.groups.describe_group("g").unwrap().unwrap();
    assert_eq!(described.state, GroupState::Empty);
    // Writing after the skipped records works and survives another reopen.
    let results = node
        .groups
        .commit_offsets(commit("g", "", -1, &[("t", 0, 11)]))
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(())]);
    node.close();
    let node = open(dir.path(), &[]);
    let fetched = committed(&node.groups, "g", &[("t".to_string(), 0)]);
    assert_eq!(fetched, vec![Some(11)]);
    node.close();
}

#[tokio::test]
async fn partitions_load_and_unload_as_leadership_moves() {
    let dir = tempfile::tempdir().unwrap();
    let controller = LocalController::new(&[1, 2]);
    let config = BrokerConfig::from_pairs([("group.initial.rebalance.delay.ms", "0")]).unwrap();
    let broker = controller.start_broker(dir.path(), 1, config);
    let groups = controller.start_groups(&broker);
    // Before the topic exists nothing is coordinated here and the count is the config's.
    assert_eq!(groups.num_partitions(), 50);
    controller
        .apply(ControllerCommand::CreateTopic {
            name: OFFSETS_TOPIC.into(),
            id: uuid::Uuid::new_v4(),
            partitions: -1,
            replication_factor: -1,
            assignment: Some(vec![vec![1, 2], vec![2, 1]]),
            configs: BTreeMap::new(),
        })
        .unwrap();
    assert_eq!(groups.num_partitions(), 2);
    // Broker 2 never runs: the leader of partition 0 drops it from the ISR (as it would after
    // replica.lag.time.max.ms), so that its group writes are committed.
    set_offsets_isr(&controller, 0, vec![1]);
    let in_partition = |p: i32| {
        (0..)
            .map(|i| format!("g{i}"))
            .find(|g| groups.partition_for(g) == p)
            .unwrap()
    };
    let (mine, theirs) = (in_partition(0), in_partition(1));
    stable_member(&groups, &mine, 10_000).await;
    let r = groups.join_group(&theirs, join_req("", 10_000)).await;
    assert_eq!(r.error, Some(ResponseError::NotCoordinator));
    assert_eq!(
        groups
            .find_coordinator(&theirs, "PLAINTEXT")
            .unwrap()
            .node_id,
        2
    );
    // Broker 2 is fenced: this node takes over partition 1.
    controller
        .apply(ControllerCommand::FenceBroker { id: 2 })
        .unwrap();
    stable_member(&groups, &theirs, 10_000).await;
    assert_eq!(
        groups
            .find_coordinator(&theirs, "PLAINTEXT")
            .unwrap()
            .node_id,
        1
    );
    // This node is fenced: it leads nothing and coordinates nothing.
    controller
        .apply(ControllerCommand::FenceBroker { id: 1 })
        .unwrap();
    for g in [&mine, &theirs] {
        assert_eq!(
            groups.heartbeat(g, "m", None, 1),
            Err(ResponseError::NotCoordinator)
        );
        assert_eq!(
            groups.find_coordinator(g, "PLAINTEXT").unwrap_err().0,
            ResponseError::CoordinatorNotAvailable
        );
    }
}

/// Broker 1 alone leading `__consumer_offsets` (one partition) with broker 2, which never runs,
/// in its ISR: nothing appended to it is replicated until [`unstall`].
fn stalled_node(dir: &Path) -> (Arc<LocalController>, Node) {
    let controller = LocalController::new(&[1, 2]);
    let config = BrokerConfig::from_pairs([
        ("group.initial.rebalance.delay.ms", "0"),
        ("offsets.commit.timeout.ms", "2000"),
        ("replica.lag.time.max.ms", "600000"),
    ])
    .unwrap();
    let broker = controller.start_broker(dir, 1, config);
    let groups = controller.start_groups(&broker);
    for (name, replicas) in [("t", vec![1]), (OFFSETS_TOPIC, vec![1, 2])] {
        controller
            .apply(ControllerCommand::CreateTopic {
                name: name.into(),
                id: uuid::Uuid::new_v4(),
                partitions: -1,
                replication_factor: -1,
                assignment: Some(vec![replicas]),
                configs: BTreeMap::new(),
            })
            .unwrap();
    }
    (controller, Node { broker, groups })
}

/// Fences broker 2, which takes it out of the ISR: what was appended is committed at once.
fn unstall(controller: &LocalController) {
    controller
        .apply(ControllerCommand::FenceBroker { id: 2 })
        .unwrap();
}

/// Puts broker 2 back into the ISR; it still never fetches.
fn stall(controller: &LocalController) {
    controller
        .apply(ControllerCommand::UnfenceBroker { id: 2 })
        .unwrap();
    set_offsets_isr(controller, 0, vec![1, 2]);
}

/// An AlterPartition of `__consumer_offsets` partition `p` from its leader.
fn set_offsets_isr(controller: &LocalController, p: i32, isr: Vec<i32>) {
    let info = controller.image().topic(OFFSETS_TOPIC).unwrap().partitions[p as usize].clone();
    controller
        .apply(ControllerCommand::AlterPartition {
            topic: OFFSETS_TOPIC.into(),
            topic_id: None,
            partition: p,
            leader_id: info.leader,
            leader_epoch: info.leader_epoch,
            partition_epoch: info.partition_epoch,
            new_isr: isr,
            joining_broker_epochs: Vec::new(),
        })
        .unwrap();
}

/// Waits (at most 5 s) until a commit of `key` is pending: OffsetFetch with `require_stable`
/// answers UNSTABLE_OFFSET_COMMIT.
async fn until_pending(groups: &GroupCoordinator, group: &str, key: &(String, i32)) {
    for _ in 0..500 {
        let fetched = groups
            .fetch_offsets(group, Some(std::slice::from_ref(key)), true)
            .unwrap();
        if fetched[0].2 == Err(ResponseError::UnstableOffsetCommit) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no commit of {key:?} became pending");
}

#[tokio::test]
async fn committed_offsets_show_only_once_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, node) = stalled_node(dir.path());
    let groups = node.groups.clone();
    let t0 = ("t".to_string(), 0);

    // Appended but held up by broker 2: pending, not shown.
    let g = groups.clone();
    let first =
        tokio::spawn(async move { g.commit_offsets(commit("s", "", -1, &[("t", 0, 5)])).await });
    until_pending(&groups, "s", &t0).await;
    assert_eq!(
        committed(&groups, "s", std::slice::from_ref(&t0)),
        vec![None]
    );
    assert!(groups.fetch_offsets("s", None, false).unwrap().is_empty());
    assert!(!first.is_finished());
    // Replicated: acknowledged and shown.
    unstall(&controller);
    assert_eq!(first.await.unwrap(), Ok(vec![Ok(())]));
    assert_eq!(
        committed(&groups, "s", std::slice::from_ref(&t0)),
        vec![Some(5)]
    );

    // Not replicated within offsets.commit.timeout.ms: the commit fails and is dropped, the
    // previous offset stays.
    stall(&controller);
    let g = groups.clone();
    let second =
        tokio::spawn(async move { g.commit_offsets(commit("s", "", -1, &[("t", 0, 9)])).await });
    until_pending(&groups, "s", &t0).await;
    assert_eq!(
        committed(&groups, "s", std::slice::from_ref(&t0)),
        vec![Some(5)]
    );
    assert_eq!(
        second.await.unwrap(),
        Ok(vec![Err(ResponseError::CoordinatorNotAvailable)])
    );
    let stable = groups
        .fetch_offsets("s", Some(std::slice::from_ref(&t0)), true)
        .unwrap();
    assert_eq!(
        stable[0].2.as_ref().map(|v| v.as_ref().map(|v| v.offset)),
        Ok(Some(5))
    );
    node.close();
}

#[tokio::test]
async fn a_sync_group_assignment_is_handed_out_only_once_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, node) = stalled_node(dir.path());
    let groups = node.groups.clone();
    let r = groups.join_group("g", join_req("", 10_000)).await;
    assert_eq!((r.error, r.generation_id), (None, 1));
    let member = r.member_id.clone();

    // The leader's assignment is appended but held up by broker 2: SyncGroup waits and the
    // group is still completing its rebalance.
    let (g, m) = (groups.clone(), member.clone());
    let sync = tokio::spawn(async move { g.sync_group("g", sync_req(&m, 1, &[(&m, b"A")])).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sync.is_finished());
    let described = groups.describe_group("g").unwrap().unwrap();
    assert_eq!(described.state, GroupState::CompletingRebalance);
    // Replicated: the assignment is handed out and the group is Stable.
    unstall(&controller);
    let s = sync.await.unwrap();
    assert_eq!((s.error, s.assignment), (None, Bytes::from_static(b"A")));
    let described = groups.describe_group("g").unwrap().unwrap();
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.members[0].assignment, Bytes::from_static(b"A"));

    // Not replicated in time: SyncGroup fails and the group rebalances again.
    stall(&controller);
    let r = groups.join_group("g", join_req(&member, 10_000)).await;
    assert_eq!((r.error, r.generation_id), (None, 2));
    let s = groups
        .sync_group("g", sync_req(&member, 2, &[(&member, b"B")]))
        .await;
    assert_eq!(s.error, Some(ResponseError::CoordinatorNotAvailable));
    let described = groups.describe_group("g").unwrap().unwrap();
    assert_eq!(described.state, GroupState::PreparingRebalance);
    node.close();
}

#[tokio::test]
async fn the_offsets_topic_waits_for_its_replication_factor_in_live_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let controller = LocalController::new(&[1, 2, 3]);
    for id in [2, 3] {
        controller
            .apply(ControllerCommand::FenceBroker { id })
            .unwrap();
    }
    let config = BrokerConfig::from_pairs([("offsets.topic.num.partitions", "4")]).unwrap();
    let broker = controller.start_broker(dir.path(), 1, config);
    let groups = controller.start_groups(&broker);
    // One live broker, offsets.topic.replication.factor 3 (the default): no offsets topic.
    let err = groups.ensure_offsets_topic().await.unwrap_err();
    assert_eq!(err.code(), ResponseError::InvalidReplicationFactor, "{err}");
    assert!(broker.image().topic(OFFSETS_TOPIC).is_none());
    assert_eq!(
        groups.find_coordinator("g", "PLAINTEXT").unwrap_err().0,
        ResponseError::CoordinatorNotAvailable
    );
    controller
        .apply(ControllerCommand::UnfenceBroker { id: 2 })
        .unwrap();
    assert!(groups.ensure_offsets_topic().await.is_err());
    controller
        .apply(ControllerCommand::UnfenceBroker { id: 3 })
        .unwrap();
    groups.ensure_offsets_topic().await.unwrap();
    let topic = broker.image().topic(OFFSETS_TOPIC).cloned().unwrap();
    assert_eq!(topic.partitions.len(), 4);
    assert!(topic.partitions.iter().all(|p| p.replicas.len() == 3));
    assert!(groups.find_coordinator("g", "PLAINTEXT").is_ok());
}
