//! Leaders and ISRs (Kafka's `ReplicationControlManager` and `PartitionChangeBuilder`):
//! moving leadership off fenced brokers, electing leaders for leaderless partitions,
//! AlterPartition from partition leaders, and ElectLeaders.
//!
//! Epoch rules: the partition epoch grows on every change of a partition; the leader epoch
//! grows when the leader changes (including to and from no leader). An ISR change alone does
//! not bump the leader epoch (as in current Kafka), so followers keep fetching.
//!
//! Eligible leader replicas (KIP-966), once the cluster has a min.insync.replicas
//! ([`MetadataImage::min_insync_replicas`]): a replica leaving an ISR that is then smaller
//! than min.insync.replicas joins the partition's ELR, since the high watermark stops while
//! the ISR is that small and the replica holds every committed record. The last ISR member
//! leaves the ISR too when fenced (the ISR may be empty). Election takes a live ISR member,
//! else (ISR empty) a live ELR member, else (ISR and ELR empty) the last known leader, else
//! with unclean election any live replica. A broker that restarts uncleanly or with another
//! data dir leaves every ISR and ELR ([`remove_unclean`]).

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::command::{CommandResult, ElectionResult, ElectionType, PartitionRef};
use crate::error::ControllerError;
use crate::image::{BrokerInfo, MetadataImage, PartitionInfo, TopicInfo, NO_LEADER};

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

/// What a partition change under KIP-966 needs besides the partition.
struct Elr<'a> {
    brokers: &'a BTreeMap<i32, BrokerInfo>,
    min_isr: usize,
    unclean_election: bool,
    /// A broker that restarted uncleanly: it leaves the ISR and the ELR.
    unclean_shutdown: Option<i32>,
}

/// Kafka's `PartitionChangeBuilder.build` with ELR: sets the ISR to `isr`, keeps the ELR,
/// elects a leader if the current one cannot stay (only when `elect`), remembers the last
/// known leader, and bumps the epochs. Returns whether anything changed.
fn change_with_elr(p: &mut PartitionInfo, mut isr: Vec<i32>, ctx: &Elr<'_>, elect: bool) -> bool {
    let live = |r: i32| live(ctx.brokers, r);
    if let Some(b) = ctx.unclean_shutdown {
        isr.retain(|&r| r != b);
    }
    let mut elr: Vec<i32>;
    let mut last_known_leader = p.last_known_leader;
    if isr.len() >= ctx.min_isr {
        elr = Vec::new();
        last_known_leader = None;
    } else {
        elr = p
            .replicas
            .iter()
            .copied()
            .filter(|r| (p.elr.contains(r) || p.isr.contains(r)) && !isr.contains(r))
            .filter(|&r| Some(r) != ctx.unclean_shutdown)
            .collect();
    }
    let mut leader = p.leader;
    if !(leader != NO_LEADER && live(leader) && isr.contains(&leader)) {
        leader = NO_LEADER;
        if elect {
            if let Some(&r) = p.replicas.iter().find(|&&r| isr.contains(&r) && live(r)) {
                leader = r;
            } else if isr.is_empty() {
                if let Some(&r) = p.replicas.iter().find(|&&r| elr.contains(&r) && live(r)) {
                    leader = r;
                    isr = vec![r];
                    elr.retain(|&x| x != r);
                } else if let Some(r) = last_known_leader.filter(|&r| elr.is_empty() && live(r)) {
                    // Nothing better is known; it may lack records (Kafka's balanced recovery).
                    leader = r;
                    isr = vec![r];
                }
            }
            if leader == NO_LEADER && ctx.unclean_election {
                if let Some(&r) = p.replicas.iter().find(|&&r| live(r)) {
                    leader = r;
                    isr = vec![r];
                    elr.clear();
                    last_known_leader = None;
                }
            }
        }
    }
    if isr.is_empty() {
        if p.leader != NO_LEADER {
            last_known_leader = Some(p.leader);
        }
    } else if leader != NO_LEADER {
        last_known_leader = None;
    }
    if isr.len() >= ctx.min_isr {
        elr.clear();
    }
    let elr_changed = p.elr != elr || p.last_known_leader != last_known_leader;
    p.elr = elr;
    p.last_known_leader = last_known_leader;
    if change(p, leader, isr) {
        return true;
    }
    if elr_changed {
        // An ELR change alone needs no new leader epoch (KIP-966).
        p.partition_epoch += 1;
    }
    elr_changed
}

/// Elects a leader for a leaderless partition under the ELR rules; the partition changes
/// only when one is found. Returns whether it was.
fn elect_with_elr(
    p: &mut PartitionInfo,
    brokers: &BTreeMap<i32, BrokerInfo>,
    min_isr: usize,
    unclean_election: bool,
) -> bool {
    let ctx = Elr {
        brokers,
        min_isr,
        unclean_election,
        unclean_shutdown: None,
    };
    let mut next = p.clone();
    let isr = p.isr.clone();
    change_with_elr(&mut next, isr, &ctx, true);
    if !next.has_leader() {
        return false;
    }
    *p = next;
    true
}

/// The partition's topic settings for [`change_with_elr`], or `None` while the cluster has
/// not enabled eligible leader replicas.
fn elr_min_isr(topic: &TopicInfo, cluster: Option<i32>) -> Option<usize> {
    topic.min_insync_replicas(cluster)
}

/// A broker restarted after an unclean shutdown (or with another data dir): its log may miss
/// committed records, so it leaves every ISR and ELR and rejoins only by catching up.
pub(crate) fn remove_unclean(image: &mut MetadataImage, broker: i32) -> Vec<PartitionRef> {
    let cluster = image.min_insync_replicas;
    let brokers = &image.brokers;
    let mut changed = Vec::new();
    for topic in image.topics.values_mut() {
        let Some(min_isr) = elr_min_isr(topic, cluster) else {
            continue;
        };
        let ctx = Elr {
            brokers,
            min_isr,
            unclean_election: topic.unclean_leader_election(),
            unclean_shutdown: Some(broker),
        };
        for p in &mut topic.partitions {
            if !p.isr.contains(&broker) && !p.elr.contains(&broker) {
                continue;
            }
            let isr = p.isr.clone();
            if change_with_elr(p, isr, &ctx, true) {
                changed.push(PartitionRef::new(&topic.name, p.index));
            }
        }
    }
    changed
}

/// Ends the ELR of the topic's partitions whose ISR meets min.insync.replicas (after the
/// topic's value changed).
pub(crate) fn clear_met_elr(image: &mut MetadataImage, name: &str) -> Vec<PartitionRef> {
    let cluster = image.min_insync_replicas;
    let mut changed = Vec::new();
    let Some(topic) = image.topics.get_mut(name) else {
        return changed;
    };
    let Some(min_isr) = elr_min_isr(topic, cluster) else {
        return changed;
    };
    for p in &mut topic.partitions {
        if p.isr.len() >= min_isr && forget_elr(p) {
            changed.push(PartitionRef::new(&topic.name, p.index));
        }
    }
    changed
}

/// Empties the partition's ELR and last known leader; returns whether there was one (then
/// the partition epoch moves on).
fn forget_elr(p: &mut PartitionInfo) -> bool {
    if p.elr.is_empty() && p.last_known_leader.is_none() {
        return false;
    }
    p.elr.clear();
    p.last_known_leader = None;
    p.partition_epoch += 1;
    true
}

/// A new cluster min.insync.replicas: enables ELR, and (as Kafka does on a change) clears
/// every ELR, since they were kept against the old value.
pub(crate) fn set_min_insync_replicas(image: &mut MetadataImage, value: i32) -> Vec<PartitionRef> {
    let old = image.min_insync_replicas.replace(value);
    let mut changed = Vec::new();
    if old.is_none_or(|o| o == value) {
        return changed;
    }
    for topic in image.topics.values_mut() {
        for p in &mut topic.partitions {
            if forget_elr(p) {
                changed.push(PartitionRef::new(&topic.name, p.index));
            }
        }
    }
    changed
}

/// Takes a broker that is now fenced out of every ISR and leadership. Without ELR it stays in
/// an ISR it is the last member of (the partition then has no leader, unless the topic allows
/// unclean election and another replica is live); with ELR it leaves for the ELR.
pub(crate) fn fence_out(image: &mut MetadataImage, broker: i32) -> Vec<PartitionRef> {
    debug_assert!(!image.is_live(broker));
    let cluster = image.min_insync_replicas;
    let brokers = &image.brokers;
    let mut changed = Vec::new();
    for topic in image.topics.values_mut() {
        let unclean = topic.unclean_leader_election();
        let min_isr = elr_min_isr(topic, cluster);
        for p in &mut topic.partitions {
            if !p.isr.contains(&broker) && p.leader != broker {
                continue;
            }
            let mut isr: Vec<i32> = p.isr.iter().copied().filter(|&r| r != broker).collect();
            if let Some(min_isr) = min_isr {
                let ctx = Elr {
                    brokers,
                    min_isr,
                    unclean_election: unclean,
                    unclean_shutdown: None,
                };
                if change_with_elr(p, isr, &ctx, true) {
                    changed.push(PartitionRef::new(&topic.name, p.index));
                }
                continue;
            }
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
    let cluster = image.min_insync_replicas;
    let brokers = &image.brokers;
    let mut changed = Vec::new();
    for topic in image.topics.values_mut() {
        if only.is_some_and(|name| name != topic.name) {
            continue;
        }
        let unclean = topic.unclean_leader_election();
        let min_isr = elr_min_isr(topic, cluster);
        for p in &mut topic.partitions {
            if p.has_leader() {
                continue;
            }
            if let Some(min_isr) = min_isr {
                if elect_with_elr(p, brokers, min_isr, unclean) {
                    changed.push(PartitionRef::new(&topic.name, p.index));
                }
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
    let cluster = image.min_insync_replicas;
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
    let min_isr = elr_min_isr(topic, cluster);
    let unclean_election = topic.unclean_leader_election();
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
    match min_isr {
        Some(min_isr) => {
            let ctx = Elr {
                brokers,
                min_isr,
                unclean_election,
                unclean_shutdown: None,
            };
            change_with_elr(p, isr, &ctx, false);
        }
        None => {
            let leader = p.leader;
            change(p, leader, isr);
        }
    }
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
    let cluster = image.min_insync_replicas;
    let min_isr = image.topics.get(name).and_then(|t| elr_min_isr(t, cluster));
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
            if let Some(min_isr) = min_isr {
                if elect_with_elr(p, brokers, min_isr, true) {
                    return Ok(p.leader);
                }
                return Err(ControllerError::EligibleLeadersNotAvailable(format!(
                    "{tp}: no replica of {:?} is live",
                    p.replicas
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
