//! Property tests: random sequences of commands keep the image's invariants, and replaying
//! the same commands gives the same image.
//!
//! A generated [`Op`] is turned into a concrete command against the current image (so an
//! AlterPartition can carry the current epochs, or deliberately stale ones); the commands
//! actually applied are recorded and replayed on a fresh image.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use uuid::Uuid;

use crate::command::{apply, CommandResult, ControllerCommand, ElectionType, PartitionRef};
use crate::error::ControllerError;
use crate::image::{MetadataImage, NO_LEADER, UNCLEAN_LEADER_ELECTION_ENABLE};

const BROKERS: i32 = 5;
const TOPICS: &[&str] = &["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    Register {
        id: i32,
        generation: u8,
        rack: Option<u8>,
    },
    Fence(i32),
    Unfence(i32),
    Create {
        topic: usize,
        seed: u128,
        partitions: i32,
        rf: i16,
        unclean: bool,
    },
    CreateAssigned {
        topic: usize,
        assignment: Vec<Vec<i32>>,
    },
    Delete(usize),
    Grow {
        topic: usize,
        by: i32,
    },
    Alter {
        /// Picks among the existing topics and partitions unless `missing` is set.
        topic: usize,
        partition: i32,
        /// Aim at a topic and partition that may not exist.
        missing: bool,
        /// Which replicas are in the new ISR (bit i: replica i).
        mask: u8,
        /// Whether to add the leader to the ISR.
        keep_leader: bool,
        /// Whether to leave fenced replicas out (what a real leader does).
        live_only: bool,
        /// Extra broker id thrown in (may be a non-replica).
        extra: Option<i32>,
        /// Offsets from the current epochs (0 = current).
        leader_epoch_delta: i32,
        partition_epoch_delta: i32,
        /// Send as another broker than the leader.
        sender: Option<i32>,
    },
    Elect {
        unclean: bool,
        targets: Option<Vec<(usize, i32)>>,
    },
    Configs {
        topic: usize,
        unclean: bool,
    },
    Allocate {
        broker: i32,
        count: i32,
    },
}

fn broker_id() -> impl Strategy<Value = i32> {
    0..=BROKERS
}

fn topic() -> impl Strategy<Value = usize> {
    0..TOPICS.len()
}

fn epoch_delta() -> impl Strategy<Value = i32> {
    prop_oneof![6 => Just(0), 1 => Just(-1), 1 => Just(1)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (broker_id(), 0..3u8, proptest::option::of(0..2u8))
            .prop_map(|(id, generation, rack)| Op::Register { id, generation, rack }),
        3 => broker_id().prop_map(Op::Fence),
        3 => broker_id().prop_map(Op::Unfence),
        3 => (topic(), any::<u128>(), 1..5i32, 1..4i16, proptest::bool::weighted(0.3))
            .prop_map(|(topic, seed, partitions, rf, unclean)| Op::Create {
                topic, seed, partitions, rf, unclean
            }),
        1 => (topic(), proptest::collection::vec(
                proptest::collection::vec(broker_id(), 1..4), 1..4))
            .prop_map(|(topic, assignment)| Op::CreateAssigned { topic, assignment }),
        1 => topic().prop_map(Op::Delete),
        1 => (topic(), 1..3i32).prop_map(|(topic, by)| Op::Grow { topic, by }),
        8 => (
                (topic(), 0..5i32, proptest::bool::weighted(0.05)),
                any::<u8>(),
                proptest::bool::weighted(0.9),
                proptest::bool::weighted(0.8),
                proptest::option::weighted(0.1, broker_id()),
                epoch_delta(),
                epoch_delta(),
                proptest::option::weighted(0.1, broker_id()),
            )
            .prop_map(
                |((topic, partition, missing), mask, keep_leader, live_only, extra, led, ped, sender)| Op::Alter {
                    topic,
                    partition,
                    missing,
                    mask,
                    keep_leader,
                    live_only,
                    extra,
                    leader_epoch_delta: led,
                    partition_epoch_delta: ped,
                    sender,
                }
            ),
        2 => (any::<bool>(), proptest::option::of(
                proptest::collection::vec((topic(), 0..5i32), 0..4)))
            .prop_map(|(unclean, targets)| Op::Elect { unclean, targets }),
        1 => (topic(), any::<bool>()).prop_map(|(topic, unclean)| Op::Configs { topic, unclean }),
        1 => (broker_id(), -1..2000i32).prop_map(|(broker, count)| Op::Allocate { broker, count }),
    ]
}

/// Turns an op into a command against the current image.
fn to_command(image: &MetadataImage, op: &Op) -> ControllerCommand {
    use ControllerCommand as C;
    match op.clone() {
        Op::Register {
            id,
            generation,
            rack,
        } => C::RegisterBroker {
            id,
            incarnation: Uuid::from_u128(((id as u128) << 8 | generation as u128) + 1),
            host: format!("node{id}"),
            port: 9092,
            listeners: Vec::new(),
            rpc_address: format!("node{id}:9093"),
            rack: rack.map(|r| format!("rack{r}")),
            directory_id: None,
            previous_broker_epoch: None,
        },
        Op::Fence(id) => C::FenceBroker { id },
        Op::Unfence(id) => C::UnfenceBroker { id },
        Op::Create {
            topic,
            seed,
            partitions,
            rf,
            unclean,
        } => C::CreateTopic {
            name: TOPICS[topic].into(),
            id: Uuid::from_u128(seed | 1),
            partitions,
            replication_factor: rf,
            assignment: None,
            configs: if unclean {
                BTreeMap::from([(UNCLEAN_LEADER_ELECTION_ENABLE.into(), "true".into())])
            } else {
                BTreeMap::new()
            },
        },
        Op::CreateAssigned { topic, assignment } => C::CreateTopic {
            name: TOPICS[topic].into(),
            id: Uuid::from_u128(0xfeed_0000 + topic as u128),
            partitions: -1,
            replication_factor: -1,
            assignment: Some(assignment),
            configs: BTreeMap::new(),
        },
        Op::Delete(topic) => C::DeleteTopic {
            name: TOPICS[topic].into(),
        },
        Op::Grow { topic, by } => C::CreatePartitions {
            name: TOPICS[topic].into(),
            total: image
                .topic(TOPICS[topic])
                .map_or(1, |t| t.partitions.len() as i32 + by),
            assignment: None,
        },
        Op::Alter {
            topic,
            partition,
            missing,
            mask,
            keep_leader,
            live_only,
            extra,
            leader_epoch_delta,
            partition_epoch_delta,
            sender,
        } => {
            let existing: Vec<&crate::image::TopicInfo> = image.topics.values().collect();
            let (name, partition) = if missing || existing.is_empty() {
                (TOPICS[topic], partition)
            } else {
                let t = existing[topic % existing.len()];
                (t.name.as_str(), partition % t.partitions.len() as i32)
            };
            let (leader, leader_epoch, partition_epoch, new_isr) =
                match image.partition(name, partition) {
                    Some(p) => {
                        let mut isr: Vec<i32> = p
                            .replicas
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, &r)| r)
                            .filter(|&r| !live_only || image.is_live(r))
                            .collect();
                        if keep_leader && p.leader != NO_LEADER && !isr.contains(&p.leader) {
                            isr.push(p.leader);
                        }
                        isr.extend(extra);
                        (p.leader, p.leader_epoch, p.partition_epoch, isr)
                    }
                    None => (1, 0, 0, vec![1]),
                };
            C::AlterPartition {
                topic: name.into(),
                topic_id: None,
                partition,
                leader_id: sender.unwrap_or(leader),
                leader_epoch: leader_epoch + leader_epoch_delta,
                partition_epoch: partition_epoch + partition_epoch_delta,
                new_isr,
                joining_broker_epochs: Vec::new(),
            }
        }
        Op::Elect { unclean, targets } => C::ElectLeaders {
            topic_partitions: targets.map(|list| {
                list.into_iter()
                    .map(|(t, p)| PartitionRef::new(TOPICS[t], p))
                    .collect()
            }),
            election: if unclean {
                ElectionType::Unclean
            } else {
                ElectionType::Preferred
            },
        },
        Op::Configs { topic, unclean } => C::AlterConfigs {
            topic: TOPICS[topic].into(),
            configs: BTreeMap::from([(UNCLEAN_LEADER_ELECTION_ENABLE.into(), unclean.to_string())]),
        },
        Op::Allocate { broker, count } => C::AllocateProducerIds {
            broker_id: broker,
            count,
        },
    }
}

/// Checks every invariant of a single image.
fn check_invariants(image: &MetadataImage) -> Result<(), TestCaseError> {
    let epochs: BTreeSet<i64> = image.brokers.values().map(|b| b.epoch).collect();
    prop_assert_eq!(
        epochs.len(),
        image.brokers.len(),
        "broker epochs are unique"
    );
    for (id, b) in &image.brokers {
        prop_assert_eq!(*id, b.id);
        prop_assert!(b.epoch < image.next_broker_epoch);
    }
    let ids: BTreeSet<Uuid> = image.topics.values().map(|t| t.id).collect();
    prop_assert_eq!(ids.len(), image.topics.len(), "topic ids are unique");
    for (name, t) in &image.topics {
        prop_assert_eq!(name, &t.name);
        prop_assert!(!t.partitions.is_empty());
        let rf = t.replication_factor();
        for (i, p) in t.partitions.iter().enumerate() {
            let tp = format!("{name}-{i}: {p:?}");
            prop_assert_eq!(p.index, i as i32, "{}", tp);
            prop_assert_eq!(p.replicas.len(), rf, "same RF everywhere: {}", tp);
            let replicas: BTreeSet<i32> = p.replicas.iter().copied().collect();
            prop_assert_eq!(
                replicas.len(),
                p.replicas.len(),
                "no duplicate replicas: {}",
                tp
            );
            for r in &p.replicas {
                prop_assert!(image.broker(*r).is_some(), "replica registered: {}", tp);
            }
            prop_assert!(!p.isr.is_empty(), "ISR never empty: {}", tp);
            let isr: BTreeSet<i32> = p.isr.iter().copied().collect();
            prop_assert_eq!(isr.len(), p.isr.len(), "no duplicate ISR members: {}", tp);
            prop_assert!(isr.is_subset(&replicas), "ISR within replicas: {}", tp);
            prop_assert!(p.leader_epoch >= 0 && p.partition_epoch >= 0);
            if p.leader == NO_LEADER {
                // Nobody electable was left out: the ISR is the one fenced last member.
                prop_assert_eq!(p.isr.len(), 1, "{}", tp);
                prop_assert!(
                    !image.is_live(p.isr[0]),
                    "a live ISR member would lead: {}",
                    tp
                );
                if t.unclean_leader_election() {
                    prop_assert!(
                        p.replicas.iter().all(|&r| !image.is_live(r)),
                        "unclean election would have picked a live replica: {}",
                        tp
                    );
                }
            } else {
                prop_assert!(isr.contains(&p.leader), "leader in ISR: {}", tp);
                prop_assert!(image.is_live(p.leader), "leader unfenced: {}", tp);
                for r in &p.isr {
                    prop_assert!(
                        image.is_live(*r),
                        "ISR members of a led partition are live: {}",
                        tp
                    );
                }
            }
        }
    }
    Ok(())
}

/// Checks what one applied command may change.
fn check_step(
    before: &MetadataImage,
    after: &MetadataImage,
    command: &ControllerCommand,
    result: &Result<CommandResult, ControllerError>,
) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert_eq!(
            before,
            after,
            "refused {:?} ({}) changed the image",
            command,
            e
        );
    }
    prop_assert!(after.next_producer_id >= before.next_producer_id);
    prop_assert!(after.next_broker_epoch >= before.next_broker_epoch);
    for (name, t) in &after.topics {
        let Some(old) = before.topics.get(name).filter(|old| old.id == t.id) else {
            continue;
        };
        prop_assert!(t.partitions.len() >= old.partitions.len());
        for (p, q) in old.partitions.iter().zip(&t.partitions) {
            prop_assert_eq!(&p.replicas, &q.replicas, "replicas never change");
            prop_assert!(q.leader_epoch >= p.leader_epoch, "leader epoch went back");
            prop_assert!(
                q.partition_epoch >= p.partition_epoch,
                "partition epoch went back"
            );
            if q.leader != p.leader {
                prop_assert!(q.leader_epoch > p.leader_epoch, "new leader, same epoch");
            }
            if q != p {
                prop_assert!(q.partition_epoch > p.partition_epoch, "change without bump");
            } else {
                prop_assert_eq!(q.partition_epoch, p.partition_epoch);
            }
        }
    }
    if let Ok(CommandResult::ProducerIdsAllocated(block)) = result {
        prop_assert_eq!(block.first, before.next_producer_id);
        prop_assert_eq!(block.first + i64::from(block.size), after.next_producer_id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_commands_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let mut image = MetadataImage::new("prop");
        let mut applied = Vec::new();
        let mut results = Vec::new();
        // Start from a few live brokers so most commands have something to work on.
        let prelude = (1..BROKERS).flat_map(|id| {
            [Op::Register { id, generation: 0, rack: None }, Op::Unfence(id)]
        });
        for op in prelude.chain(ops) {
            let op = &op;
            let command = to_command(&image, op);
            let before = image.clone();
            let result = apply(&mut image, &command);
            check_step(&before, &image, &command, &result)?;
            check_invariants(&image)?;
            applied.push(command);
            results.push(result);
        }

        // Determinism: the same commands on a fresh image give the same results and image.
        let mut replay = MetadataImage::new("prop");
        for (command, result) in applied.iter().zip(&results) {
            prop_assert_eq!(&apply(&mut replay, command), result);
        }
        prop_assert_eq!(&replay, &image);

        // Serialization round-trips, for the image and for every command and result.
        let json = serde_json::to_string(&image).unwrap();
        prop_assert_eq!(&serde_json::from_str::<MetadataImage>(&json).unwrap(), &image);
        for (command, result) in applied.iter().zip(&results) {
            let c = serde_json::to_string(command).unwrap();
            prop_assert_eq!(&serde_json::from_str::<ControllerCommand>(&c).unwrap(), command);
            let r = serde_json::to_string(result).unwrap();
            let back: Result<CommandResult, ControllerError> = serde_json::from_str(&r).unwrap();
            prop_assert_eq!(&back, result);
        }
    }

    /// A cluster where every broker is up and in sync stays fully led: fencing and unfencing
    /// brokers one at a time (with leaders re-adding returning replicas) never leaves a
    /// partition offline while some replica is live and was in sync.
    #[test]
    fn rolling_restarts_keep_partitions_led(
        seed in any::<u128>(),
        order in proptest::collection::vec(1..=3i32, 1..20),
    ) {
        let mut image = MetadataImage::new("roll");
        for id in 1..=3 {
            let reg = ControllerCommand::RegisterBroker {
                id,
                incarnation: Uuid::from_u128(id as u128 + 1),
                host: "h".into(),
                port: 9092,
                listeners: Vec::new(),
                rpc_address: "h:1".into(),
                rack: None,
                directory_id: None,
                previous_broker_epoch: None,
            };
            apply(&mut image, &reg).unwrap();
            apply(&mut image, &ControllerCommand::UnfenceBroker { id }).unwrap();
        }
        apply(&mut image, &ControllerCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::from_u128(seed | 1),
            partitions: 6,
            replication_factor: 3,
            assignment: None,
            configs: BTreeMap::new(),
        }).unwrap();
        for id in order {
            apply(&mut image, &ControllerCommand::FenceBroker { id }).unwrap();
            prop_assert_eq!(image.offline_partitions().count(), 0);
            apply(&mut image, &ControllerCommand::UnfenceBroker { id }).unwrap();
            // Leaders re-add the returning broker once it caught up.
            let parts: Vec<_> = image.topic("t").unwrap().partitions.clone();
            for p in parts {
                apply(&mut image, &ControllerCommand::AlterPartition {
                    topic: "t".into(),
                    topic_id: None,
                    partition: p.index,
                    leader_id: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    new_isr: p.replicas.clone(),
                    joining_broker_epochs: Vec::new(),
                }).unwrap();
            }
            prop_assert_eq!(image.under_replicated_partitions().count(), 0);
            check_invariants(&image)?;
        }
        // Preferred election restores every preferred leader.
        apply(&mut image, &ControllerCommand::ElectLeaders {
            topic_partitions: None,
            election: ElectionType::Preferred,
        }).unwrap();
        for (_, p) in image.all_partitions() {
            prop_assert_eq!(p.leader, p.replicas[0]);
        }
    }
}
