//! Leaders and ISRs (Kafka's `ReplicationControlManager` and `PartitionChangeBuilder`):
//! moving leadership off fenced brokers, electing leaders for leaderless partitions,
//! AlterPartition from partition leaders, and ElectLeaders.
//!
//! Epoch rules: the partition epoch grows on every change of a partition; the leader epoch
//! grows when the leader changes (including to and from no leader). An ISR change alone does
//! not bump the leader epoch (as in current Kafka), so followers keep fetching.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::command::{CommandResult, ElectionResult, ElectionType, PartitionRef};
use crate::error::ControllerError;
use crate::image::{BrokerInfo, MetadataImage, PartitionInfo, NO_LEADER};

/// Whether the broker is registered and unfenced.
fn live(brokers: &BTreeMap<i32, BrokerInfo>, id: i32) -> bool {
    brokers.get(&id).is_some_and(|b| !b.fenced)
}

/// The leader and ISR a partition gets with `isr` as its ISR: the current leader if it is
/// still live and in the ISR, else the first live ISR member in replica order, else (with
/// `unclean`) the first live replica with an ISR of just itself, else no leader.
fn choose_leader(
    p: &PartitionInfo,
    isr: Vec<i32>,
    brokers: &BTreeMap<i32, BrokerInfo>,
    unclean: bool,
) -> (i32, Vec<i32>) {
    if p.leader != NO_LEADER && live(brokers, p.leader) && isr.contains(&p.leader) {
        return (p.leader, isr);
    }
    if let Some(&leader) = p
        .replicas
        .iter()
        .find(|&&r| isr.contains(&r) && live(brokers, r))
    {
        return (leader, isr);
    }
    if unclean {
        if let Some(&leader) = p.replicas.iter().find(|&&r| live(brokers, r)) {
            return (leader, vec![leader]);
        }
    }
    (NO_LEADER, isr)
}

/// Sets leader and ISR, bumping the epochs. Returns whether anything changed.
fn change(p: &mut PartitionInfo, leader: i32, isr: Vec<i32>) -> bool {
    if p.leader == leader && p.isr == isr {
        return false;
    }
    if p.leader != leader {
        p.leader = leader;
        p.leader_epoch += 1;
    }
    p.isr = isr;
    p.partition_epoch += 1;
    true
}

/// Takes a broker that is now fenced out of every ISR and leadership. It stays in an ISR it is
/// the last member of (the partition then has no leader, unless the topic allows unclean
/// election and another replica is live).
pub(crate) fn fence_out(image: &mut MetadataImage, broker: i32) -> Vec<PartitionRef> {
    debug_assert!(!image.is_live(broker));
    let brokers = &image.brokers;
    let mut changed = Vec::new();
    for topic in image.topics.values_mut() {
        let unclean = topic.unclean_leader_election();
        for p in &mut topic.partitions {
            if !p.isr.contains(&broker) && p.leader != broker {
                continue;
            }
            let mut isr: Vec<i32> = p.isr.iter().copied().filter(|&r| r != broker).collect();
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            let (leader, isr) = choose_leader(p, isr, brokers, unclean);
            if change(p, leader, isr) {
                changed.push(PartitionRef::new(&topic.name, p.index));
            }
        }
    }
    changed
}

/// Elects a leader for every leaderless partition (of one topic, or of all) that can have
/// one: a live ISR member, or a live replica when the topic allows unclean election.
pub(crate) fn elect_leaderless(image: &mut MetadataImage, only: Option<&str>) -> Vec<PartitionRef> {
    let brokers = &image.brokers;
    let mut changed = Vec::new();
    for topic in image.topics.values_mut() {
        if only.is_some_and(|name| name != topic.name) {
            continue;
        }
        let unclean = topic.unclean_leader_election();
        for p in &mut topic.partitions {
            if p.has_leader() {
                continue;
            }
            let (leader, isr) = choose_leader(p, p.isr.clone(), brokers, unclean);
            if leader != NO_LEADER && change(p, leader, isr) {
                changed.push(PartitionRef::new(&topic.name, p.index));
            }
        }
    }
    changed
}

/// The fields of an AlterPartition command.
pub(crate) struct AlterPartition<'a> {
    pub(crate) topic: &'a str,
    pub(crate) topic_id: Option<Uuid>,
    pub(crate) partition: i32,
    pub(crate) leader_id: i32,
    pub(crate) leader_epoch: i32,
    pub(crate) partition_epoch: i32,
    pub(crate) new_isr: &'a [i32],
    pub(crate) joining_broker_epochs: &'a [(i32, i64)],
}

/// A leader's ISR change, checked like Kafka's AlterPartition: the sender must be the leader
/// at the current leader epoch, must have seen the current partition epoch, and every new ISR
/// member must be a live replica. Changing nothing is accepted without an epoch bump.
pub(crate) fn alter_partition(
    image: &mut MetadataImage,
    req: AlterPartition<'_>,
) -> Result<CommandResult, ControllerError> {
    let AlterPartition {
        topic: name,
        topic_id,
        partition,
        leader_id,
        leader_epoch,
        partition_epoch,
        new_isr,
        joining_broker_epochs,
    } = req;
    let brokers = &image.brokers;
    let topic = image.topics.get_mut(name).ok_or_else(|| {
        ControllerError::UnknownTopicOrPartition(format!("topic '{name}' does not exist"))
    })?;
    if let Some(id) = topic_id {
        if id != topic.id {
            return Err(ControllerError::UnknownTopicId(format!(
                "topic '{name}' has id {}, not {id}",
                topic.id
            )));
        }
    }
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| topic.partitions.get_mut(i))
        .ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition(format!(
                "topic '{name}' has no partition {partition}"
            ))
        })?;
    let tp = format!("{name}-{partition}");
    if leader_epoch < p.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch(format!(
            "{tp}: leader epoch {leader_epoch} is older than the current {}",
            p.leader_epoch
        )));
    }
    if leader_epoch > p.leader_epoch {
        return Err(ControllerError::UnknownLeaderEpoch(format!(
            "{tp}: leader epoch {leader_epoch} is newer than the current {}",
            p.leader_epoch
        )));
    }
    if leader_id != p.leader {
        return Err(ControllerError::NotLeaderOrFollower(format!(
            "{tp}: broker {leader_id} is not the leader (the leader is {})",
            p.leader
        )));
    }
    if partition_epoch != p.partition_epoch {
        return Err(ControllerError::InvalidUpdateVersion(format!(
            "{tp}: partition epoch {partition_epoch} does not match the current {}",
            p.partition_epoch
        )));
    }
    if new_isr.is_empty() {
        return Err(ControllerError::InvalidRequest(format!(
            "{tp}: the new ISR is empty"
        )));
    }
    for (i, r) in new_isr.iter().enumerate() {
        if new_isr[..i].contains(r) {
            return Err(ControllerError::InvalidRequest(format!(
                "{tp}: broker {r} appears twice in the new ISR"
            )));
        }
        if !p.replicas.contains(r) {
            return Err(ControllerError::InvalidRequest(format!(
                "{tp}: broker {r} in the new ISR is not a replica (replicas {:?})",
                p.replicas
            )));
        }
    }
    if !new_isr.contains(&p.leader) {
        return Err(ControllerError::InvalidRequest(format!(
            "{tp}: the new ISR {new_isr:?} leaves out the leader {}",
            p.leader
        )));
    }
    if let Some(r) = new_isr.iter().find(|&&r| !live(brokers, r)) {
        return Err(ControllerError::IneligibleReplica(format!(
            "{tp}: broker {r} cannot join the ISR: it is fenced or not registered"
        )));
    }
    for &(r, epoch) in joining_broker_epochs {
        let current = brokers.get(&r).map_or(-1, |b| b.epoch);
        if new_isr.contains(&r) && !p.isr.contains(&r) && current != epoch {
            return Err(ControllerError::IneligibleReplica(format!(
                "{tp}: broker {r} cannot join the ISR: the fetch that qualified it came from \
                 broker epoch {epoch}, and the broker has registered as epoch {current} since"
            )));
        }
    }
    // Keep the ISR in replica order so equal sets compare equal.
    let isr: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| new_isr.contains(r))
        .collect();
    let leader = p.leader;
    change(p, leader, isr);
    Ok(CommandResult::PartitionAltered(p.clone()))
}

/// Preferred or unclean election for the given partitions (or all). Each partition gets its
/// own result; with `None`, partitions that need no election are left out.
pub(crate) fn elect_leaders(
    image: &mut MetadataImage,
    partitions: Option<&[PartitionRef]>,
    election: ElectionType,
) -> CommandResult {
    let targets: Vec<PartitionRef> = match partitions {
        Some(list) => list.to_vec(),
        None => image
            .all_partitions()
            .map(|(t, p)| PartitionRef::new(&t.name, p.index))
            .collect(),
    };
    let mut results = Vec::with_capacity(targets.len());
    for PartitionRef { topic, partition } in targets {
        let result = elect_one(image, &topic, partition, election);
        if partitions.is_none() && matches!(result, Err(ControllerError::ElectionNotNeeded(_))) {
            continue;
        }
        results.push(ElectionResult {
            topic,
            partition,
            result,
        });
    }
    CommandResult::LeadersElected(results)
}

fn elect_one(
    image: &mut MetadataImage,
    name: &str,
    partition: i32,
    election: ElectionType,
) -> Result<i32, ControllerError> {
    let brokers = &image.brokers;
    let p = image
        .topics
        .get_mut(name)
        .and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
        })
        .ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition(format!(
                "partition {name}-{partition} does not exist"
            ))
        })?;
    let tp = format!("{name}-{partition}");
    match election {
        ElectionType::Preferred => {
            let preferred = p.preferred_leader();
            if p.leader == preferred {
                return Err(ControllerError::ElectionNotNeeded(format!(
                    "{tp}: the preferred replica {preferred} already leads"
                )));
            }
            if !live(brokers, preferred) || !p.isr.contains(&preferred) {
                return Err(ControllerError::PreferredLeaderNotAvailable(format!(
                    "{tp}: the preferred replica {preferred} is fenced or not in the ISR {:?}",
                    p.isr
                )));
            }
            let isr = p.isr.clone();
            change(p, preferred, isr);
            Ok(preferred)
        }
        ElectionType::Unclean => {
            if p.has_leader() {
                return Err(ControllerError::ElectionNotNeeded(format!(
                    "{tp}: broker {} already leads",
                    p.leader
                )));
            }
            let (leader, isr) = choose_leader(p, p.isr.clone(), brokers, true);
            if leader == NO_LEADER {
                return Err(ControllerError::EligibleLeadersNotAvailable(format!(
                    "{tp}: no replica of {:?} is live",
                    p.replicas
                )));
            }
            change(p, leader, isr);
            Ok(leader)
        }
    }
}
