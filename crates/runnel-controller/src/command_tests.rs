//! Unit tests of every command and every error it can give.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::command::{
    apply, CommandResult, ControllerCommand, ElectionResult, ElectionType, PartitionRef,
    ProducerIdBlock, MAX_PARTITIONS_PER_TOPIC, MAX_PRODUCER_ID_BLOCK,
};
use crate::error::{ControllerError, ResponseError};
use crate::image::{
    BrokerInfo, Endpoint, MetadataImage, PartitionInfo, TopicInfo, NO_LEADER,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};

use ControllerCommand as C;

fn incarnation(id: i32, generation: u32) -> Uuid {
    Uuid::from_u128(((id as u128) << 32) | generation as u128 | 1 << 100)
}

fn register_cmd(id: i32, generation: u32) -> ControllerCommand {
    C::RegisterBroker {
        id,
        incarnation: incarnation(id, generation),
        host: format!("node{id}"),
        port: 9092,
        listeners: Vec::new(),
        rpc_address: format!("node{id}:9093"),
        rack: None,
        directory_id: None,
        previous_broker_epoch: None,
    }
}

fn ok(image: &mut MetadataImage, cmd: ControllerCommand) -> CommandResult {
    apply(image, &cmd).unwrap_or_else(|e| panic!("{cmd:?} refused: {e} ({})", e.code()))
}

/// Applies a command that must be refused with `code`, and checks the image did not change.
fn refused(
    image: &mut MetadataImage,
    cmd: ControllerCommand,
    code: ResponseError,
) -> ControllerError {
    let before = image.clone();
    let err = apply(image, &cmd).expect_err("command should be refused");
    assert_eq!(err.code(), code, "{cmd:?}: {err}");
    assert!(!err.message().is_empty());
    assert_eq!(*image, before, "a refused command changed the image");
    err
}

/// A cluster of unfenced brokers 1..=n.
fn cluster(n: i32) -> MetadataImage {
    let mut image = MetadataImage::new("test-cluster");
    for id in 1..=n {
        ok(&mut image, register_cmd(id, 0));
        ok(&mut image, C::UnfenceBroker { id });
    }
    image
}

fn id_of(name: &str) -> Uuid {
    // Deterministic per name, never nil.
    let mut h: u128 = 0x9e37_79b9_7f4a_7c15;
    for b in name.bytes() {
        h = h.wrapping_mul(0x100_0000_01b3).wrapping_add(b as u128);
    }
    Uuid::from_u128(h | 1 << 127)
}

fn create_cmd(name: &str, partitions: i32, rf: i16) -> ControllerCommand {
    C::CreateTopic {
        name: name.into(),
        id: id_of(name),
        partitions,
        replication_factor: rf,
        assignment: None,
        configs: BTreeMap::new(),
    }
}

fn assign_cmd(name: &str, assignment: &[&[i32]]) -> ControllerCommand {
    C::CreateTopic {
        name: name.into(),
        id: id_of(name),
        partitions: -1,
        replication_factor: -1,
        assignment: Some(assignment.iter().map(|r| r.to_vec()).collect()),
        configs: BTreeMap::new(),
    }
}

fn part<'a>(image: &'a MetadataImage, topic: &str, p: i32) -> &'a PartitionInfo {
    image.partition(topic, p).expect("partition exists")
}

fn alter(image: &MetadataImage, topic: &str, p: i32, new_isr: &[i32]) -> ControllerCommand {
    let current = part(image, topic, p);
    C::AlterPartition {
        topic: topic.into(),
        topic_id: None,
        partition: p,
        leader_id: current.leader,
        leader_epoch: current.leader_epoch,
        partition_epoch: current.partition_epoch,
        new_isr: new_isr.to_vec(),
        joining_broker_epochs: Vec::new(),
    }
}

fn alter_ok(image: &mut MetadataImage, topic: &str, p: i32, new_isr: &[i32]) -> CommandResult {
    let cmd = alter(image, topic, p, new_isr);
    ok(image, cmd)
}

fn alter_refused(
    image: &mut MetadataImage,
    topic: &str,
    p: i32,
    new_isr: &[i32],
    code: ResponseError,
) {
    let cmd = alter(image, topic, p, new_isr);
    refused(image, cmd, code);
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn refs(list: &[(&str, i32)]) -> Vec<PartitionRef> {
    list.iter()
        .map(|(t, p)| PartitionRef::new(*t, *p))
        .collect()
}

// ---- InitCluster ----

#[test]
fn init_cluster_once() {
    let mut image = MetadataImage::default();
    refused(
        &mut image,
        C::InitCluster {
            cluster_id: String::new(),
        },
        ResponseError::InvalidRequest,
    );
    let set = C::InitCluster {
        cluster_id: "abc".into(),
    };
    assert_eq!(
        ok(&mut image, set.clone()),
        CommandResult::ClusterInitialized {
            cluster_id: "abc".into()
        }
    );
    ok(&mut image, set);
    assert_eq!(image.cluster_id, "abc");
    refused(
        &mut image,
        C::InitCluster {
            cluster_id: "other".into(),
        },
        ResponseError::InconsistentClusterId,
    );
}

// ---- RegisterBroker ----

#[test]
fn registration_starts_fenced_with_growing_epochs() {
    let mut image = MetadataImage::default();
    let r1 = ok(&mut image, register_cmd(1, 0));
    let r2 = ok(&mut image, register_cmd(2, 0));
    assert_eq!(
        r1,
        CommandResult::BrokerRegistered {
            broker_id: 1,
            broker_epoch: 0,
            changed: vec![]
        }
    );
    assert_eq!(
        r2,
        CommandResult::BrokerRegistered {
            broker_id: 2,
            broker_epoch: 1,
            changed: vec![]
        }
    );
    let b = image.broker(1).unwrap();
    assert!(b.fenced);
    assert_eq!(b.host, "node1");
    assert_eq!(b.rpc_address, "node1:9093");
    assert_eq!(b.incarnation, incarnation(1, 0));
    assert_eq!(image.live_brokers().count(), 0);
}

fn listener(name: &str, host: &str, port: i32) -> Endpoint {
    Endpoint {
        name: name.into(),
        host: host.into(),
        port,
    }
}

#[test]
fn named_listeners_are_kept_and_chosen_by_name() {
    let mut image = MetadataImage::new("test-cluster");
    let internal = listener("INTERNAL", "runnel-1", 9092);
    let external = listener("EXTERNAL", "127.0.0.1", 19092);
    let mut cmd = register_cmd(1, 0);
    if let C::RegisterBroker {
        host,
        port,
        listeners,
        ..
    } = &mut cmd
    {
        (*host, *port) = ("runnel-1".into(), 9092);
        *listeners = vec![internal.clone(), external.clone()];
    }
    ok(&mut image, cmd.clone());
    let b = image.broker(1).unwrap();
    assert_eq!(b.endpoint("INTERNAL"), Some(("runnel-1", 9092)));
    assert_eq!(b.endpoint("EXTERNAL"), Some(("127.0.0.1", 19092)));
    assert_eq!(b.endpoint("PLAINTEXT"), None);

    // A retry with other addresses replaces them.
    if let C::RegisterBroker { listeners, .. } = &mut cmd {
        *listeners = vec![listener("EXTERNAL", "10.0.0.1", 29092)];
    }
    ok(&mut image, cmd.clone());
    let b = image.broker(1).unwrap();
    assert_eq!(b.endpoint("EXTERNAL"), Some(("10.0.0.1", 29092)));
    assert_eq!(b.endpoint("INTERNAL"), None);

    for (bad, why) in [
        (
            vec![listener("A", "h", 1), listener("A", "h", 2)],
            "named twice",
        ),
        (vec![listener("", "h", 1)], "empty name"),
        (vec![listener("A", "h", 0)], "out of range"),
    ] {
        if let C::RegisterBroker { listeners, .. } = &mut cmd {
            *listeners = bad;
        }
        let err = refused(&mut image, cmd.clone(), ResponseError::InvalidRequest);
        assert!(err.message().contains(why), "{err}");
    }
}

#[test]
fn a_broker_registered_before_named_listeners_answers_for_every_name() {
    // A broker entry as an image snapshot written before `listeners` existed holds it.
    let old = r#"{"id":1,"host":"node1","port":9092,"rpc_address":"node1:9093","rack":null,
        "incarnation":"00000000-0000-0000-0000-000000000001","fenced":false,"epoch":3}"#;
    let b: BrokerInfo = serde_json::from_str(old).unwrap();
    assert!(b.listeners.is_empty());
    assert_eq!(b.endpoint("PLAINTEXT"), Some(("node1", 9092)));
    assert_eq!(b.endpoint("EXTERNAL"), Some(("node1", 9092)));
    // And a registration command from that time still replays.
    let old_cmd = r#"{"RegisterBroker":{"id":1,"incarnation":"00000000-0000-0000-0000-000000000001",
        "host":"node1","port":9092,"rpc_address":"node1:9093","rack":null}}"#;
    let cmd: ControllerCommand = serde_json::from_str(old_cmd).unwrap();
    let mut image = MetadataImage::new("test-cluster");
    ok(&mut image, cmd);
    assert_eq!(
        image.broker(1).unwrap().endpoint("ANY"),
        Some(("node1", 9092))
    );
}

#[test]
fn same_incarnation_is_a_retry() {
    let mut image = cluster(1);
    let epoch = image.broker(1).unwrap().epoch;
    let retry = C::RegisterBroker {
        id: 1,
        incarnation: incarnation(1, 0),
        host: "new-host".into(),
        port: 19092,
        listeners: Vec::new(),
        rpc_address: "new-host:19093".into(),
        rack: Some("r1".into()),
        directory_id: None,
        previous_broker_epoch: None,
    };
    let result = ok(&mut image, retry);
    assert_eq!(
        result,
        CommandResult::BrokerRegistered {
            broker_id: 1,
            broker_epoch: epoch,
            changed: vec![]
        }
    );
    let b = image.broker(1).unwrap();
    assert!(!b.fenced, "a retry keeps the broker unfenced");
    assert_eq!((b.host.as_str(), b.port), ("new-host", 19092));
    assert_eq!(b.rack.as_deref(), Some("r1"));
}

#[test]
fn new_incarnation_fences_the_old_one_out() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3], &[2, 1, 3]]));
    let old_epoch = image.broker(1).unwrap().epoch;
    let result = ok(&mut image, register_cmd(1, 1));
    let CommandResult::BrokerRegistered {
        broker_epoch,
        changed,
        ..
    } = result
    else {
        panic!("{result:?}")
    };
    assert!(broker_epoch > old_epoch);
    assert_eq!(changed, refs(&[("t", 0), ("t", 1)]));
    let b = image.broker(1).unwrap();
    assert!(b.fenced);
    assert_eq!(b.incarnation, incarnation(1, 1));
    assert_eq!(image.leader_of("t", 0), Some(2));
    assert_eq!(part(&image, "t", 0).isr, [2, 3]);
    assert_eq!(part(&image, "t", 1).isr, [2, 3]);
}

#[test]
fn registration_validation() {
    let mut image = MetadataImage::default();
    let base = |f: &dyn Fn(&mut ControllerCommand)| {
        let mut cmd = register_cmd(1, 0);
        f(&mut cmd);
        cmd
    };
    let cases: Vec<ControllerCommand> = vec![
        base(&|c| {
            if let C::RegisterBroker { id, .. } = c {
                *id = -1
            }
        }),
        base(&|c| {
            if let C::RegisterBroker { host, .. } = c {
                host.clear()
            }
        }),
        base(&|c| {
            if let C::RegisterBroker { port, .. } = c {
                *port = 0
            }
        }),
        base(&|c| {
            if let C::RegisterBroker { port, .. } = c {
                *port = 70000
            }
        }),
        base(&|c| {
            if let C::RegisterBroker { rpc_address, .. } = c {
                rpc_address.clear()
            }
        }),
        base(&|c| {
            if let C::RegisterBroker { rack, .. } = c {
                *rack = Some(String::new())
            }
        }),
    ];
    for cmd in cases {
        refused(&mut image, cmd, ResponseError::InvalidRequest);
    }
}

// ---- FenceBroker ----

#[test]
fn fencing_moves_leadership_to_next_live_isr_member_in_replica_order() {
    let mut image = cluster(3);
    ok(
        &mut image,
        assign_cmd("t", &[&[1, 3, 2], &[2, 1, 3], &[3, 2, 1]]),
    );
    let result = ok(&mut image, C::FenceBroker { id: 1 });
    assert_eq!(
        result,
        CommandResult::BrokerFenced {
            broker_id: 1,
            changed: refs(&[("t", 0), ("t", 1), ("t", 2)])
        }
    );
    // Led by 1: the next ISR member in replica order (3) takes over, both epochs grow.
    let p0 = part(&image, "t", 0);
    assert_eq!((p0.leader, p0.leader_epoch, p0.partition_epoch), (3, 1, 1));
    assert_eq!(p0.isr, [3, 2]);
    // 1 was a follower: only the ISR shrinks, only the partition epoch grows.
    let p1 = part(&image, "t", 1);
    assert_eq!((p1.leader, p1.leader_epoch, p1.partition_epoch), (2, 0, 1));
    assert_eq!(p1.isr, [2, 3]);
    assert!(image.partitions_led_by(1).next().is_none());
}

#[test]
fn fencing_skips_isr_members_that_are_not_live() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3]]));
    // Broker 2 leaves the ISR (lagging), so when 1 goes, 3 leads even though 2 is live.
    alter_ok(&mut image, "t", 0, &[1, 3]);
    ok(&mut image, C::FenceBroker { id: 1 });
    assert_eq!(image.leader_of("t", 0), Some(3));
    assert_eq!(part(&image, "t", 0).isr, [3]);
}

#[test]
fn fencing_the_last_isr_member_leaves_no_leader() {
    let mut image = cluster(2);
    ok(&mut image, assign_cmd("t", &[&[1, 2]]));
    alter_ok(&mut image, "t", 0, &[1]);
    let before = part(&image, "t", 0).clone();
    ok(&mut image, C::FenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!(p.leader, NO_LEADER);
    assert_eq!(p.isr, [1], "the ISR never becomes empty");
    assert_eq!(p.leader_epoch, before.leader_epoch + 1);
    assert_eq!(p.partition_epoch, before.partition_epoch + 1);
    assert_eq!(
        image
            .offline_partitions()
            .map(|(t, p)| (t.name.clone(), p.index))
            .collect::<Vec<_>>(),
        [("t".to_string(), 0)]
    );
}

#[test]
fn fencing_the_last_isr_member_elects_uncleanly_when_enabled() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3]]));
    ok(
        &mut image,
        C::AlterConfigs {
            topic: "t".into(),
            configs: configs(&[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]),
        },
    );
    alter_ok(&mut image, "t", 0, &[1]);
    ok(&mut image, C::FenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!(p.leader, 2);
    assert_eq!(p.isr, [2]);
}

#[test]
fn fencing_is_idempotent_and_needs_a_registered_broker() {
    let mut image = cluster(2);
    ok(&mut image, create_cmd("t", 4, 2));
    ok(&mut image, C::FenceBroker { id: 2 });
    let after_first = image.clone();
    assert_eq!(
        ok(&mut image, C::FenceBroker { id: 2 }),
        CommandResult::BrokerFenced {
            broker_id: 2,
            changed: vec![]
        }
    );
    assert_eq!(image, after_first);
    refused(
        &mut image,
        C::FenceBroker { id: 9 },
        ResponseError::BrokerNotAvailable,
    );
}

// ---- UnfenceBroker ----

#[test]
fn unfencing_gives_leaderless_partitions_a_leader_from_their_isr() {
    let mut image = cluster(2);
    ok(&mut image, assign_cmd("t", &[&[1, 2], &[2, 1]]));
    alter_ok(&mut image, "t", 0, &[1]);
    ok(&mut image, C::FenceBroker { id: 1 });
    ok(&mut image, C::FenceBroker { id: 2 });
    assert_eq!(image.offline_partitions().count(), 2);
    // Partition 0's ISR is [1]; partition 1's is [2] (2 was the last member).
    let result = ok(&mut image, C::UnfenceBroker { id: 2 });
    assert_eq!(
        result,
        CommandResult::BrokerUnfenced {
            broker_id: 2,
            changed: refs(&[("t", 1)])
        }
    );
    assert_eq!(image.leader_of("t", 1), Some(2));
    assert_eq!(
        image.leader_of("t", 0),
        None,
        "2 is not in partition 0's ISR"
    );
    ok(&mut image, C::UnfenceBroker { id: 1 });
    assert_eq!(image.leader_of("t", 0), Some(1));
    let p0 = part(&image, "t", 0);
    assert_eq!(p0.isr, [1]);
    // Each leader change bumped the leader epoch: 1 -> none -> 1.
    assert_eq!(p0.leader_epoch, 2);
}

#[test]
fn unfencing_does_not_rejoin_isrs() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3]]));
    ok(&mut image, C::FenceBroker { id: 3 });
    let before = image.topics.clone();
    let result = ok(&mut image, C::UnfenceBroker { id: 3 });
    assert_eq!(
        result,
        CommandResult::BrokerUnfenced {
            broker_id: 3,
            changed: vec![]
        }
    );
    assert_eq!(image.topics, before);
    assert!(image.is_live(3));
    // The leader adds it back through AlterPartition.
    alter_ok(&mut image, "t", 0, &[1, 2, 3]);
    assert_eq!(part(&image, "t", 0).isr, [1, 2, 3]);
}

#[test]
fn unfencing_elects_an_out_of_sync_replica_only_with_unclean_election() {
    let mut image = cluster(2);
    ok(&mut image, assign_cmd("clean", &[&[1, 2]]));
    ok(&mut image, assign_cmd("dirty", &[&[1, 2]]));
    ok(
        &mut image,
        C::AlterConfigs {
            topic: "dirty".into(),
            configs: configs(&[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]),
        },
    );
    ok(&mut image, C::FenceBroker { id: 2 });
    ok(&mut image, C::FenceBroker { id: 1 });
    assert_eq!(image.offline_partitions().count(), 2);
    ok(&mut image, C::UnfenceBroker { id: 2 });
    assert_eq!(image.leader_of("clean", 0), None);
    assert_eq!(image.leader_of("dirty", 0), Some(2));
    assert_eq!(part(&image, "dirty", 0).isr, [2]);
}

#[test]
fn unfencing_is_idempotent_and_needs_a_registered_broker() {
    let mut image = cluster(1);
    let before = image.clone();
    assert_eq!(
        ok(&mut image, C::UnfenceBroker { id: 1 }),
        CommandResult::BrokerUnfenced {
            broker_id: 1,
            changed: vec![]
        }
    );
    assert_eq!(image, before);
    refused(
        &mut image,
        C::UnfenceBroker { id: 5 },
        ResponseError::BrokerNotAvailable,
    );
}

// ---- CreateTopic ----

#[test]
fn create_topic_spreads_replicas_over_live_brokers() {
    let mut image = cluster(3);
    let result = ok(&mut image, create_cmd("orders", 6, 2));
    let CommandResult::TopicCreated(topic) = result else {
        panic!("{result:?}")
    };
    assert_eq!(image.topic("orders"), Some(&topic));
    assert_eq!(topic.id, id_of("orders"));
    assert_eq!(topic.partitions.len(), 6);
    let mut leaders = BTreeMap::new();
    for (i, p) in topic.partitions.iter().enumerate() {
        assert_eq!(p.index, i as i32);
        assert_eq!(p.replicas.len(), 2);
        assert_ne!(p.replicas[0], p.replicas[1]);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
}

#[test]
fn create_topic_uses_only_unfenced_brokers() {
    let mut image = cluster(3);
    ok(&mut image, C::FenceBroker { id: 2 });
    ok(&mut image, create_cmd("t", 10, 2));
    for (_, p) in image.all_partitions() {
        assert!(!p.replicas.contains(&2), "{p:?}");
    }
    refused(
        &mut image,
        create_cmd("u", 1, 3),
        ResponseError::InvalidReplicationFactor,
    );
}

#[test]
fn create_topic_rack_aware() {
    let mut image = MetadataImage::new("c");
    for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b")] {
        ok(
            &mut image,
            C::RegisterBroker {
                id,
                incarnation: incarnation(id, 0),
                host: "h".into(),
                port: 9092,
                listeners: Vec::new(),
                rpc_address: "h:1".into(),
                rack: Some(rack.into()),
                directory_id: None,
                previous_broker_epoch: None,
            },
        );
        ok(&mut image, C::UnfenceBroker { id });
    }
    ok(&mut image, create_cmd("t", 8, 2));
    for (_, p) in image.all_partitions() {
        let racks: Vec<&str> = p
            .replicas
            .iter()
            .map(|&r| image.broker(r).unwrap().rack.as_deref().unwrap())
            .collect();
        assert_ne!(racks[0], racks[1], "{p:?}");
    }
}

#[test]
fn create_topic_is_deterministic_and_seeded_by_the_id() {
    let mut a = cluster(5);
    let mut b = cluster(5);
    assert_eq!(
        ok(&mut a, create_cmd("t", 7, 3)),
        ok(&mut b, create_cmd("t", 7, 3))
    );
    assert_eq!(a, b);
    // Different ids start the round-robin at different brokers.
    let firsts: std::collections::BTreeSet<i32> = (0..20u128)
        .map(|i| {
            let mut image = cluster(5);
            let cmd = C::CreateTopic {
                name: "x".into(),
                id: Uuid::from_u128(i * 7 + 1),
                partitions: 1,
                replication_factor: 1,
                assignment: None,
                configs: BTreeMap::new(),
            };
            ok(&mut image, cmd);
            image.leader_of("x", 0).unwrap()
        })
        .collect();
    assert!(firsts.len() > 1, "{firsts:?}");
}

#[test]
fn create_topic_errors() {
    let mut image = cluster(2);
    ok(&mut image, create_cmd("a.b", 1, 1));
    refused(
        &mut image,
        create_cmd("a.b", 1, 1),
        ResponseError::TopicAlreadyExists,
    );
    refused(
        &mut image,
        create_cmd("a_b", 1, 1),
        ResponseError::InvalidTopicException,
    );
    refused(
        &mut image,
        create_cmd("bad name", 1, 1),
        ResponseError::InvalidTopicException,
    );
    refused(
        &mut image,
        create_cmd("", 1, 1),
        ResponseError::InvalidTopicException,
    );
    refused(
        &mut image,
        create_cmd("z", 0, 1),
        ResponseError::InvalidPartitions,
    );
    refused(
        &mut image,
        create_cmd("z", -1, 1),
        ResponseError::InvalidPartitions,
    );
    refused(
        &mut image,
        create_cmd("z", MAX_PARTITIONS_PER_TOPIC + 1, 1),
        ResponseError::InvalidPartitions,
    );
    refused(
        &mut image,
        create_cmd("z", 1, 0),
        ResponseError::InvalidReplicationFactor,
    );
    refused(
        &mut image,
        create_cmd("z", 1, -1),
        ResponseError::InvalidReplicationFactor,
    );
    refused(
        &mut image,
        create_cmd("z", 1, 3),
        ResponseError::InvalidReplicationFactor,
    );
    let with_id = |id: Uuid| C::CreateTopic {
        name: "z".into(),
        id,
        partitions: 1,
        replication_factor: 1,
        assignment: None,
        configs: BTreeMap::new(),
    };
    refused(
        &mut image,
        with_id(Uuid::nil()),
        ResponseError::InvalidRequest,
    );
    refused(
        &mut image,
        with_id(id_of("a.b")),
        ResponseError::TopicAlreadyExists,
    );
    let with_configs = |c: BTreeMap<String, String>| C::CreateTopic {
        name: "z".into(),
        id: id_of("z"),
        partitions: 1,
        replication_factor: 1,
        assignment: None,
        configs: c,
    };
    refused(
        &mut image,
        with_configs(configs(&[(UNCLEAN_LEADER_ELECTION_ENABLE, "yes")])),
        ResponseError::InvalidConfig,
    );
    refused(
        &mut image,
        with_configs(configs(&[("", "1")])),
        ResponseError::InvalidConfig,
    );
    let CommandResult::TopicCreated(t) = ok(
        &mut image,
        with_configs(configs(&[("retention.ms", "100")])),
    ) else {
        panic!()
    };
    assert_eq!(t.configs, configs(&[("retention.ms", "100")]));
}

#[test]
fn create_topic_with_assignment() {
    let mut image = cluster(3);
    ok(&mut image, C::FenceBroker { id: 1 });
    let result = ok(&mut image, assign_cmd("t", &[&[1, 2], &[3, 1]]));
    let CommandResult::TopicCreated(t) = result else {
        panic!()
    };
    // Fenced replicas are not in the initial ISR; the first live replica leads.
    assert_eq!(t.partitions[0].isr, [2]);
    assert_eq!(t.partitions[0].leader, 2);
    assert_eq!(t.partitions[1].isr, [3]);
    assert_eq!(t.partitions[1].leader, 3);
    assert_eq!(t.partitions[0].replicas, [1, 2]);

    // Counts may be given if they match.
    let matching = C::CreateTopic {
        name: "m".into(),
        id: id_of("m"),
        partitions: 2,
        replication_factor: 1,
        assignment: Some(vec![vec![2], vec![3]]),
        configs: BTreeMap::new(),
    };
    ok(&mut image, matching);
    // An empty assignment means none.
    let empty = C::CreateTopic {
        name: "e".into(),
        id: id_of("e"),
        partitions: 2,
        replication_factor: 2,
        assignment: Some(vec![]),
        configs: BTreeMap::new(),
    };
    ok(&mut image, empty);
    assert_eq!(image.topic("e").unwrap().partitions.len(), 2);
}

#[test]
fn create_topic_assignment_errors() {
    let mut image = cluster(3);
    ok(&mut image, C::FenceBroker { id: 3 });
    let bad = ResponseError::InvalidReplicaAssignment;
    refused(&mut image, assign_cmd("t", &[&[1, 1]]), bad);
    refused(&mut image, assign_cmd("t", &[&[1, 9]]), bad);
    refused(&mut image, assign_cmd("t", &[&[3]]), bad);
    refused(&mut image, assign_cmd("t", &[&[1, 2], &[1]]), bad);
    refused(&mut image, assign_cmd("t", &[&[1], &[]]), bad);
    let mismatch = |partitions: i32, rf: i16| C::CreateTopic {
        name: "t".into(),
        id: id_of("t"),
        partitions,
        replication_factor: rf,
        assignment: Some(vec![vec![1, 2]]),
        configs: BTreeMap::new(),
    };
    refused(&mut image, mismatch(2, -1), ResponseError::InvalidRequest);
    refused(&mut image, mismatch(-1, 1), ResponseError::InvalidRequest);
    ok(&mut image, mismatch(1, 2));
}

// ---- DeleteTopic ----

#[test]
fn delete_topic() {
    let mut image = cluster(1);
    ok(&mut image, create_cmd("t", 2, 1));
    assert_eq!(
        ok(&mut image, C::DeleteTopic { name: "t".into() }),
        CommandResult::TopicDeleted {
            name: "t".into(),
            id: id_of("t")
        }
    );
    assert!(image.topic("t").is_none());
    refused(
        &mut image,
        C::DeleteTopic { name: "t".into() },
        ResponseError::UnknownTopicOrPartition,
    );
    // The name can be used again.
    ok(&mut image, create_cmd("t", 1, 1));
}

// ---- CreatePartitions ----

#[test]
fn create_partitions_continues_the_placement() {
    let mut image = cluster(3);
    ok(&mut image, create_cmd("t", 2, 2));
    let result = ok(
        &mut image,
        C::CreatePartitions {
            name: "t".into(),
            total: 6,
            assignment: None,
        },
    );
    let CommandResult::PartitionsCreated { name, partitions } = result else {
        panic!()
    };
    assert_eq!(name, "t");
    assert_eq!(
        partitions.iter().map(|p| p.index).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    let t = image.topic("t").unwrap();
    assert_eq!(t.partitions.len(), 6);
    let mut leaders = BTreeMap::new();
    for p in &t.partitions {
        assert_eq!(p.replicas.len(), 2);
        assert_ne!(p.replicas[0], p.replicas[1]);
        assert_eq!(p.leader, p.replicas[0]);
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(leaders.len(), 3, "{leaders:?}");
}

#[test]
fn create_partitions_with_assignment() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2]]));
    ok(
        &mut image,
        C::CreatePartitions {
            name: "t".into(),
            total: 3,
            assignment: Some(vec![vec![3, 1], vec![2, 3]]),
        },
    );
    assert_eq!(part(&image, "t", 1).replicas, [3, 1]);
    assert_eq!(part(&image, "t", 2).replicas, [2, 3]);
    assert_eq!(image.leader_of("t", 2), Some(2));
}

#[test]
fn create_partitions_errors() {
    let mut image = cluster(3);
    ok(&mut image, create_cmd("t", 2, 2));
    let grow = |total: i32, assignment: Option<Vec<Vec<i32>>>| C::CreatePartitions {
        name: "t".into(),
        total,
        assignment,
    };
    refused(&mut image, grow(2, None), ResponseError::InvalidPartitions);
    refused(&mut image, grow(1, None), ResponseError::InvalidPartitions);
    refused(&mut image, grow(-4, None), ResponseError::InvalidPartitions);
    refused(
        &mut image,
        grow(MAX_PARTITIONS_PER_TOPIC + 1, None),
        ResponseError::InvalidPartitions,
    );
    refused(
        &mut image,
        C::CreatePartitions {
            name: "nope".into(),
            total: 3,
            assignment: None,
        },
        ResponseError::UnknownTopicOrPartition,
    );
    let bad = ResponseError::InvalidReplicaAssignment;
    refused(&mut image, grow(4, Some(vec![vec![1, 2]])), bad);
    refused(&mut image, grow(3, Some(vec![vec![1]])), bad);
    refused(&mut image, grow(3, Some(vec![vec![1, 2, 3]])), bad);
    refused(&mut image, grow(3, Some(vec![vec![2, 2]])), bad);
    refused(&mut image, grow(3, Some(vec![vec![2, 7]])), bad);
    ok(&mut image, C::FenceBroker { id: 2 });
    ok(&mut image, C::FenceBroker { id: 3 });
    refused(&mut image, grow(3, Some(vec![vec![2, 3]])), bad);
    refused(
        &mut image,
        grow(3, None),
        ResponseError::InvalidReplicationFactor,
    );
}

// ---- AlterPartition ----

#[test]
fn alter_partition_shrinks_and_expands_the_isr() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3]]));
    let result = alter_ok(&mut image, "t", 0, &[1, 3]);
    let p = part(&image, "t", 0).clone();
    assert_eq!(result, CommandResult::PartitionAltered(p.clone()));
    assert_eq!(p.isr, [1, 3]);
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1));
    assert_eq!(
        image
            .under_replicated_partitions()
            .map(|(_, p)| p.index)
            .collect::<Vec<_>>(),
        [0]
    );
    // Members given in any order are kept in replica order.
    alter_ok(&mut image, "t", 0, &[3, 2, 1]);
    let p = part(&image, "t", 0);
    assert_eq!(p.isr, [1, 2, 3]);
    assert_eq!(p.partition_epoch, 2);
    assert_eq!(image.under_replicated_partitions().count(), 0);
}

#[test]
fn alter_partition_without_change_keeps_the_epochs() {
    let mut image = cluster(2);
    ok(&mut image, assign_cmd("t", &[&[1, 2]]));
    let before = image.clone();
    let result = alter_ok(&mut image, "t", 0, &[2, 1]);
    assert_eq!(image, before);
    assert_eq!(
        result,
        CommandResult::PartitionAltered(part(&image, "t", 0).clone())
    );
}

#[test]
fn alter_partition_errors() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3]]));
    alter_ok(&mut image, "t", 0, &[1, 2]);
    let base = alter(&image, "t", 0, &[1, 2, 3]);
    let cmd = |f: &dyn Fn(&mut ControllerCommand)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    macro_rules! with {
        ($field:ident = $value:expr) => {
            cmd(&|c| {
                if let C::AlterPartition { $field, .. } = c {
                    *$field = $value;
                }
            })
        };
    }
    let cases = vec![
        (with!(leader_epoch = -1), ResponseError::FencedLeaderEpoch),
        (with!(leader_epoch = 1), ResponseError::UnknownLeaderEpoch),
        (with!(leader_id = 2), ResponseError::NotLeaderOrFollower),
        (
            with!(partition_epoch = 0),
            ResponseError::InvalidUpdateVersion,
        ),
        (
            with!(partition_epoch = 2),
            ResponseError::InvalidUpdateVersion,
        ),
        (with!(new_isr = vec![]), ResponseError::InvalidRequest),
        (with!(new_isr = vec![1, 1]), ResponseError::InvalidRequest),
        (with!(new_isr = vec![1, 4]), ResponseError::InvalidRequest),
        (with!(new_isr = vec![2, 3]), ResponseError::InvalidRequest),
        (
            with!(topic = "nope".into()),
            ResponseError::UnknownTopicOrPartition,
        ),
        (with!(partition = 1), ResponseError::UnknownTopicOrPartition),
        (
            with!(partition = -1),
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            with!(topic_id = Some(Uuid::from_u128(5))),
            ResponseError::UnknownTopicId,
        ),
    ];
    for (c, code) in cases {
        refused(&mut image, c, code);
    }
    ok(&mut image, with!(topic_id = Some(id_of("t"))));

    // A fenced broker cannot join the ISR.
    alter_ok(&mut image, "t", 0, &[1]);
    ok(&mut image, C::FenceBroker { id: 3 });
    alter_refused(
        &mut image,
        "t",
        0,
        &[1, 3],
        ResponseError::IneligibleReplica,
    );
    ok(&mut image, C::UnfenceBroker { id: 3 });
    alter_ok(&mut image, "t", 0, &[1, 3]);
}

/// KIP-903: an expansion vouched for by a fetch from an older incarnation of the joining
/// broker is refused; one under its current epoch is accepted.
#[test]
fn isr_join_needs_the_current_broker_epoch() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3]]));
    alter_ok(&mut image, "t", 0, &[1, 2]);
    let old_epoch = image.brokers[&3].epoch;
    ok(&mut image, register_cmd(3, 1));
    ok(&mut image, C::UnfenceBroker { id: 3 });
    let new_epoch = image.brokers[&3].epoch;
    assert!(new_epoch > old_epoch);
    let join = |image: &MetadataImage, epoch: i64| {
        let mut cmd = alter(image, "t", 0, &[1, 2, 3]);
        if let C::AlterPartition {
            joining_broker_epochs,
            ..
        } = &mut cmd
        {
            *joining_broker_epochs = vec![(3, epoch)];
        }
        cmd
    };
    let stale = join(&image, old_epoch);
    let err = refused(&mut image, stale, ResponseError::IneligibleReplica);
    assert!(err.message().contains("epoch"), "{err}");
    let current = join(&image, new_epoch);
    ok(&mut image, current);
    assert_eq!(part(&image, "t", 0).isr, [1, 2, 3]);
}

#[test]
fn deposed_leader_is_fenced_by_its_epoch() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3]]));
    let stale = alter(&image, "t", 0, &[1, 2]);
    ok(&mut image, C::FenceBroker { id: 1 });
    ok(&mut image, C::UnfenceBroker { id: 1 });
    refused(&mut image, stale, ResponseError::FencedLeaderEpoch);
    // The new leader's change built before another change is refused by the partition epoch.
    let stale = alter(&image, "t", 0, &[2]);
    alter_ok(&mut image, "t", 0, &[2, 3, 1]);
    refused(&mut image, stale, ResponseError::InvalidUpdateVersion);
}

// ---- ElectLeaders ----

fn elect(
    image: &mut MetadataImage,
    partitions: Option<&[(&str, i32)]>,
    election: ElectionType,
) -> Vec<ElectionResult> {
    let cmd = C::ElectLeaders {
        topic_partitions: partitions.map(refs),
        election,
    };
    match ok(image, cmd) {
        CommandResult::LeadersElected(results) => results,
        other => panic!("{other:?}"),
    }
}

fn codes_of(results: &[ElectionResult]) -> Vec<(String, i32, Result<i32, ResponseError>)> {
    results
        .iter()
        .map(|r| {
            (
                r.topic.clone(),
                r.partition,
                r.result.clone().map_err(|e| e.code()),
            )
        })
        .collect()
}

#[test]
fn preferred_election_restores_the_first_replica() {
    let mut image = cluster(3);
    ok(
        &mut image,
        assign_cmd("t", &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]),
    );
    ok(&mut image, C::FenceBroker { id: 1 });
    ok(&mut image, C::UnfenceBroker { id: 1 });
    // 1 is live but not yet back in the ISR.
    let results = elect(&mut image, Some(&[("t", 0)]), ElectionType::Preferred);
    assert_eq!(
        codes_of(&results),
        [(
            "t".into(),
            0,
            Err(ResponseError::PreferredLeaderNotAvailable)
        )]
    );
    alter_ok(&mut image, "t", 0, &[1, 2, 3]);
    let before = part(&image, "t", 0).clone();
    let results = elect(
        &mut image,
        Some(&[("t", 0), ("t", 1), ("t", 9), ("nope", 0)]),
        ElectionType::Preferred,
    );
    assert_eq!(
        codes_of(&results),
        [
            ("t".into(), 0, Ok(1)),
            ("t".into(), 1, Err(ResponseError::ElectionNotNeeded)),
            ("t".into(), 9, Err(ResponseError::UnknownTopicOrPartition)),
            (
                "nope".into(),
                0,
                Err(ResponseError::UnknownTopicOrPartition)
            ),
        ]
    );
    let p = part(&image, "t", 0);
    assert_eq!(p.leader, 1);
    assert_eq!(p.isr, before.isr);
    assert_eq!(p.leader_epoch, before.leader_epoch + 1);
    assert_eq!(p.partition_epoch, before.partition_epoch + 1);
}

#[test]
fn preferred_election_of_everything_lists_only_partitions_that_needed_one() {
    let mut image = cluster(2);
    ok(&mut image, assign_cmd("a", &[&[1, 2], &[2, 1]]));
    ok(&mut image, assign_cmd("b", &[&[1, 2]]));
    ok(&mut image, C::FenceBroker { id: 1 });
    ok(&mut image, C::UnfenceBroker { id: 1 });
    alter_ok(&mut image, "a", 0, &[1, 2]);
    let results = elect(&mut image, None, ElectionType::Preferred);
    assert_eq!(
        codes_of(&results),
        [
            ("a".into(), 0, Ok(1)),
            (
                "b".into(),
                0,
                Err(ResponseError::PreferredLeaderNotAvailable)
            ),
        ]
    );
    // The preferred replica fenced: not available.
    ok(&mut image, C::FenceBroker { id: 1 });
    let results = elect(&mut image, Some(&[("a", 0)]), ElectionType::Preferred);
    assert_eq!(
        codes_of(&results),
        [(
            "a".into(),
            0,
            Err(ResponseError::PreferredLeaderNotAvailable)
        )]
    );
}

#[test]
fn unclean_election() {
    let mut image = cluster(3);
    ok(&mut image, assign_cmd("t", &[&[1, 2, 3], &[1, 2, 3]]));
    alter_ok(&mut image, "t", 0, &[1]);
    alter_ok(&mut image, "t", 1, &[1]);
    ok(&mut image, C::FenceBroker { id: 1 });
    assert_eq!(image.offline_partitions().count(), 2);
    let results = elect(&mut image, Some(&[("t", 0)]), ElectionType::Unclean);
    assert_eq!(codes_of(&results), [("t".into(), 0, Ok(2))]);
    assert_eq!(part(&image, "t", 0).isr, [2]);
    let results = elect(&mut image, Some(&[("t", 0)]), ElectionType::Unclean);
    assert_eq!(
        codes_of(&results),
        [("t".into(), 0, Err(ResponseError::ElectionNotNeeded))]
    );
    ok(&mut image, C::FenceBroker { id: 2 });
    ok(&mut image, C::FenceBroker { id: 3 });
    let results = elect(&mut image, None, ElectionType::Unclean);
    assert_eq!(
        codes_of(&results),
        [
            (
                "t".into(),
                0,
                Err(ResponseError::EligibleLeadersNotAvailable)
            ),
            (
                "t".into(),
                1,
                Err(ResponseError::EligibleLeadersNotAvailable)
            ),
        ]
    );
}

#[test]
fn election_type_from_kafka() {
    assert_eq!(ElectionType::from_kafka(0), Some(ElectionType::Preferred));
    assert_eq!(ElectionType::from_kafka(1), Some(ElectionType::Unclean));
    assert_eq!(ElectionType::from_kafka(2), None);
}

// ---- AlterConfigs ----

#[test]
fn alter_configs_replaces_the_overrides() {
    let mut image = cluster(1);
    let mut create = create_cmd("t", 1, 1);
    if let C::CreateTopic { configs: c, .. } = &mut create {
        *c = configs(&[("retention.ms", "1"), ("segment.bytes", "1000")]);
    }
    ok(&mut image, create);
    let result = ok(
        &mut image,
        C::AlterConfigs {
            topic: "t".into(),
            configs: configs(&[("cleanup.policy", "compact")]),
        },
    );
    assert_eq!(
        result,
        CommandResult::ConfigsAltered {
            topic: "t".into(),
            changed: vec![]
        }
    );
    assert_eq!(
        image.topic("t").unwrap().configs,
        configs(&[("cleanup.policy", "compact")])
    );
    refused(
        &mut image,
        C::AlterConfigs {
            topic: "nope".into(),
            configs: BTreeMap::new(),
        },
        ResponseError::UnknownTopicOrPartition,
    );
    refused(
        &mut image,
        C::AlterConfigs {
            topic: "t".into(),
            configs: configs(&[(UNCLEAN_LEADER_ELECTION_ENABLE, "maybe")]),
        },
        ResponseError::InvalidConfig,
    );
}

#[test]
fn enabling_unclean_election_elects_leaderless_partitions() {
    let mut image = cluster(2);
    ok(&mut image, assign_cmd("t", &[&[1, 2]]));
    ok(&mut image, assign_cmd("other", &[&[1, 2]]));
    alter_ok(&mut image, "t", 0, &[1]);
    alter_ok(&mut image, "other", 0, &[1]);
    ok(&mut image, C::FenceBroker { id: 1 });
    assert_eq!(image.offline_partitions().count(), 2);
    let result = ok(
        &mut image,
        C::AlterConfigs {
            topic: "t".into(),
            configs: configs(&[(UNCLEAN_LEADER_ELECTION_ENABLE, "True")]),
        },
    );
    assert_eq!(
        result,
        CommandResult::ConfigsAltered {
            topic: "t".into(),
            changed: refs(&[("t", 0)])
        }
    );
    assert_eq!(image.leader_of("t", 0), Some(2));
    assert_eq!(image.leader_of("other", 0), None);
}

// ---- AllocateProducerIds ----

#[test]
fn producer_id_blocks_never_overlap() {
    let mut image = cluster(2);
    let a = ok(
        &mut image,
        C::AllocateProducerIds {
            broker_id: 1,
            count: 1000,
        },
    );
    let b = ok(
        &mut image,
        C::AllocateProducerIds {
            broker_id: 2,
            count: 10,
        },
    );
    assert_eq!(
        a,
        CommandResult::ProducerIdsAllocated(ProducerIdBlock {
            broker_id: 1,
            first: 0,
            size: 1000
        })
    );
    assert_eq!(
        b,
        CommandResult::ProducerIdsAllocated(ProducerIdBlock {
            broker_id: 2,
            first: 1000,
            size: 10
        })
    );
    assert_eq!(image.next_producer_id, 1010);
    // A fenced but registered broker may still get ids.
    ok(&mut image, C::FenceBroker { id: 2 });
    ok(
        &mut image,
        C::AllocateProducerIds {
            broker_id: 2,
            count: 1,
        },
    );
}

#[test]
fn producer_id_errors() {
    let mut image = cluster(1);
    let alloc = |broker_id, count| C::AllocateProducerIds { broker_id, count };
    refused(&mut image, alloc(7, 10), ResponseError::BrokerNotAvailable);
    refused(&mut image, alloc(1, 0), ResponseError::InvalidRequest);
    refused(&mut image, alloc(1, -5), ResponseError::InvalidRequest);
    refused(
        &mut image,
        alloc(1, MAX_PRODUCER_ID_BLOCK + 1),
        ResponseError::InvalidRequest,
    );
    image.next_producer_id = i64::MAX - 5;
    refused(&mut image, alloc(1, 10), ResponseError::UnknownServerError);
    ok(&mut image, alloc(1, 5));
}

// ---- Serialization ----

#[test]
fn commands_and_results_round_trip_through_json() {
    let commands = vec![
        C::InitCluster {
            cluster_id: "c".into(),
        },
        register_cmd(1, 0),
        C::FenceBroker { id: 1 },
        C::UnfenceBroker { id: 1 },
        create_cmd("t", 3, 1),
        assign_cmd("u", &[&[1]]),
        C::CreatePartitions {
            name: "t".into(),
            total: 4,
            assignment: Some(vec![vec![1]]),
        },
        C::AlterPartition {
            topic: "t".into(),
            topic_id: Some(id_of("t")),
            partition: 0,
            leader_id: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![1],
            joining_broker_epochs: Vec::new(),
        },
        C::ElectLeaders {
            topic_partitions: Some(refs(&[("t", 0)])),
            election: ElectionType::Preferred,
        },
        C::ElectLeaders {
            topic_partitions: None,
            election: ElectionType::Unclean,
        },
        C::AlterConfigs {
            topic: "t".into(),
            configs: configs(&[("retention.ms", "5")]),
        },
        C::AllocateProducerIds {
            broker_id: 1,
            count: 1000,
        },
        C::DeleteTopic { name: "u".into() },
    ];
    let mut image = MetadataImage::default();
    for cmd in &commands {
        let json = serde_json::to_string(cmd).unwrap();
        assert_eq!(
            &serde_json::from_str::<ControllerCommand>(&json).unwrap(),
            cmd
        );
        let result = apply(&mut image, cmd);
        let json = serde_json::to_string(&result).unwrap();
        let back: Result<CommandResult, ControllerError> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, result);
    }
    // AlterPartition without topic_id (older encoders) still decodes.
    let json = r#"{"AlterPartition":{"topic":"t","partition":0,"leader_id":1,"leader_epoch":0,"partition_epoch":0,"new_isr":[1]}}"#;
    let cmd: ControllerCommand = serde_json::from_str(json).unwrap();
    assert!(matches!(cmd, C::AlterPartition { topic_id: None, .. }));
    let json = serde_json::to_string(&image).unwrap();
    assert_eq!(serde_json::from_str::<MetadataImage>(&json).unwrap(), image);
}

#[test]
fn method_and_function_agree() {
    let mut a = cluster(2);
    let mut b = a.clone();
    let cmd = create_cmd("t", 3, 2);
    assert_eq!(a.apply(&cmd), apply(&mut b, &cmd));
    assert_eq!(a, b);
    let _: Option<&TopicInfo> = a.topic("t");
}

// --- eligible leader replicas (KIP-966) and unclean restarts --------------------------------

/// Brokers 1..=3 with ELR enabled, and topic `t` on [1, 2, 3] with min.insync.replicas=2.
fn elr_cluster() -> MetadataImage {
    let mut image = cluster(3);
    ok(&mut image, C::SetMinInsyncReplicas { value: 1 });
    let mut cmd = assign_cmd("t", &[&[1, 2, 3]]);
    if let C::CreateTopic { configs: c, .. } = &mut cmd {
        *c = configs(&[("min.insync.replicas", "2")]);
    }
    ok(&mut image, cmd);
    image
}

/// A restart of `id` as a new process: `previous_epoch` from its clean-shutdown marker (-1
/// without one), `dir` its directory id.
fn restart_cmd(id: i32, generation: u32, previous_epoch: i64, dir: u128) -> ControllerCommand {
    let mut cmd = register_cmd(id, generation);
    if let C::RegisterBroker {
        directory_id,
        previous_broker_epoch,
        ..
    } = &mut cmd
    {
        *directory_id = Some(Uuid::from_u128(dir));
        *previous_broker_epoch = Some(previous_epoch);
    }
    cmd
}

/// The ISR shrinks 1,2,3 -> 1,2 -> 1 (leader 1), then 1 is fenced.
fn last_replica_standing() -> MetadataImage {
    let mut image = elr_cluster();
    alter_ok(&mut image, "t", 0, &[1, 2]);
    assert!(
        part(&image, "t", 0).elr.is_empty(),
        "the ISR still meets min ISR"
    );
    ok(&mut image, C::FenceBroker { id: 3 });
    alter_ok(&mut image, "t", 0, &[1]);
    assert_eq!(part(&image, "t", 0).elr, [2], "2 left an ISR below min ISR");
    ok(&mut image, C::FenceBroker { id: 2 });
    ok(&mut image, C::FenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (NO_LEADER, vec![], vec![1, 2])
    );
    assert_eq!(p.last_known_leader, Some(1));
    image
}

#[test]
fn elr_member_is_elected_when_the_isr_is_empty() {
    let mut image = last_replica_standing();
    ok(&mut image, C::UnfenceBroker { id: 2 });
    let p = part(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (2, vec![2], vec![1])
    );
    assert_eq!(p.last_known_leader, None);
    // Never broker 3: it left while the ISR still met min ISR, so it may lack records.
    ok(&mut image, C::UnfenceBroker { id: 3 });
    assert_eq!(part(&image, "t", 0).leader, 2);
}

#[test]
fn unclean_restart_of_the_last_isr_member_does_not_lead() {
    let mut image = last_replica_standing();
    let epoch = image.brokers[&1].epoch;
    // Killed: no clean-shutdown marker.
    ok(&mut image, restart_cmd(1, 1, -1, 1));
    ok(&mut image, C::UnfenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (NO_LEADER, vec![], vec![2])
    );
    ok(&mut image, C::UnfenceBroker { id: 2 });
    assert_eq!(part(&image, "t", 0).leader, 2);
    // A stale marker (of an older epoch) is no proof either.
    let mut image = last_replica_standing();
    ok(&mut image, restart_cmd(1, 1, epoch - 1, 1));
    assert_eq!(part(&image, "t", 0).elr, [2]);
}

#[test]
fn clean_restart_of_the_last_isr_member_leads_again() {
    let mut image = last_replica_standing();
    let epoch = image.brokers[&1].epoch;
    ok(&mut image, restart_cmd(1, 1, epoch, 0));
    // Registered before with no directory id: nothing to compare, the marker decides.
    assert_eq!(part(&image, "t", 0).elr, [1, 2]);
    ok(&mut image, C::UnfenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (1, vec![1], vec![2])
    );
}

#[test]
fn a_new_directory_id_is_an_empty_disk_even_after_a_clean_shutdown() {
    let mut image = last_replica_standing();
    let epoch = image.brokers[&1].epoch;
    ok(&mut image, restart_cmd(1, 1, epoch, 7));
    ok(&mut image, C::UnfenceBroker { id: 1 });
    let epoch = image.brokers[&1].epoch;
    ok(&mut image, C::FenceBroker { id: 1 });
    assert_eq!(
        part(&image, "t", 0).elr,
        [1, 2],
        "a clean restart keeps it eligible"
    );
    // Restarted cleanly, but on another disk.
    ok(&mut image, restart_cmd(1, 2, epoch, 8));
    ok(&mut image, C::UnfenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!((p.leader, p.elr.clone()), (NO_LEADER, vec![2]));
}

#[test]
fn last_known_leader_leads_when_isr_and_elr_are_empty() {
    let mut image = last_replica_standing();
    ok(&mut image, restart_cmd(2, 1, -1, 2));
    ok(&mut image, restart_cmd(1, 1, -1, 1));
    let p = part(&image, "t", 0);
    assert_eq!((p.isr.clone(), p.elr.clone()), (vec![], vec![]));
    // Nothing better is known (Kafka's balanced recovery): the last leader comes back.
    ok(&mut image, C::UnfenceBroker { id: 2 });
    assert_eq!(part(&image, "t", 0).leader, NO_LEADER);
    ok(&mut image, C::UnfenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.last_known_leader),
        (1, vec![1], None)
    );
}

#[test]
fn elr_ends_when_the_isr_meets_min_isr_again() {
    let mut image = elr_cluster();
    alter_ok(&mut image, "t", 0, &[1]);
    assert_eq!(part(&image, "t", 0).elr, [2, 3]);
    let leader_epoch = part(&image, "t", 0).leader_epoch;
    alter_ok(&mut image, "t", 0, &[1, 3]);
    let p = part(&image, "t", 0);
    assert!(p.elr.is_empty());
    assert_eq!(
        p.leader_epoch, leader_epoch,
        "ISR and ELR changes keep the leader epoch"
    );
    // A lower topic min ISR the ISR meets ends the ELR too.
    alter_ok(&mut image, "t", 0, &[1]);
    assert_eq!(part(&image, "t", 0).elr, [3], "2 was not in the ISR");
    ok(
        &mut image,
        C::AlterConfigs {
            topic: "t".into(),
            configs: configs(&[("min.insync.replicas", "1")]),
        },
    );
    assert!(part(&image, "t", 0).elr.is_empty());
}

#[test]
fn without_a_cluster_min_isr_fencing_keeps_the_last_isr_member() {
    let mut image = cluster(2);
    ok(&mut image, assign_cmd("t", &[&[1, 2]]));
    alter_ok(&mut image, "t", 0, &[1]);
    ok(&mut image, C::FenceBroker { id: 1 });
    let p = part(&image, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (NO_LEADER, vec![1], vec![])
    );
    // And a changed cluster value clears every ELR (as Kafka does).
    let mut image = last_replica_standing();
    ok(&mut image, C::SetMinInsyncReplicas { value: 1 });
    assert!(
        !part(&image, "t", 0).elr.is_empty(),
        "the same value changes nothing"
    );
    ok(&mut image, C::SetMinInsyncReplicas { value: 2 });
    assert!(part(&image, "t", 0).elr.is_empty());
    refused(
        &mut image,
        C::SetMinInsyncReplicas { value: 0 },
        ResponseError::InvalidConfig,
    );
}
