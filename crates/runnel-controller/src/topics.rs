//! Topics (Kafka's topic half of `ReplicationControlManager` plus `ConfigurationControl`):
//! create, delete, add partitions, replace config overrides.
//!
//! Config values are checked fully by the request handlers (the broker's config table knows
//! every topic config and its type); the controller checks what it interprets itself
//! (`unclean.leader.election.enable`) and that names are not empty.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::command::{CommandResult, MAX_PARTITIONS_PER_TOPIC};
use crate::error::ControllerError;
use crate::image::{
    validate_topic_name, MetadataImage, PartitionInfo, TopicInfo, UNCLEAN_LEADER_ELECTION_ENABLE,
};
use crate::placement::{assign_replicas, Candidate, Seed};
use crate::replication;

fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), ControllerError> {
    if configs.keys().any(String::is_empty) {
        return Err(ControllerError::InvalidConfig(
            "a config name is empty".to_string(),
        ));
    }
    if let Some(v) = configs.get(UNCLEAN_LEADER_ELECTION_ENABLE) {
        if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
            return Err(ControllerError::InvalidConfig(format!(
                "{UNCLEAN_LEADER_ELECTION_ENABLE}={v}: expected true or false"
            )));
        }
    }
    Ok(())
}

/// Checks explicit replica lists: each non-empty, `rf` long, without duplicates, on
/// registered brokers, with at least one unfenced broker to lead.
fn validate_assignment(
    image: &MetadataImage,
    name: &str,
    assignment: &[Vec<i32>],
    rf: usize,
    first_partition: usize,
) -> Result<(), ControllerError> {
    for (i, replicas) in assignment.iter().enumerate() {
        let partition = first_partition + i;
        let invalid = |why: String| {
            Err(ControllerError::InvalidReplicaAssignment(format!(
                "partition {name}-{partition}: {why}"
            )))
        };
        if replicas.is_empty() {
            return invalid("no replicas".to_string());
        }
        if replicas.len() != rf {
            return invalid(format!(
                "{} replicas, but the topic's partitions have {rf}",
                replicas.len()
            ));
        }
        for (j, r) in replicas.iter().enumerate() {
            if replicas[..j].contains(r) {
                return invalid(format!("broker {r} appears twice in {replicas:?}"));
            }
            if image.broker(*r).is_none() {
                return invalid(format!("broker {r} is not registered"));
            }
        }
        if !replicas.iter().any(|&r| image.is_live(r)) {
            return invalid(format!("every broker of {replicas:?} is fenced"));
        }
    }
    Ok(())
}

/// Replica lists for `count` new partitions from `first_partition` on, spread over the
/// unfenced brokers.
fn place(
    image: &MetadataImage,
    count: usize,
    rf: usize,
    first_partition: usize,
    seed: impl FnOnce(&[Candidate<'_>]) -> Seed,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    let brokers: Vec<Candidate<'_>> = image
        .live_brokers()
        .map(|b| Candidate {
            id: b.id,
            rack: b.rack.as_deref(),
        })
        .collect();
    if rf > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor {rf} is larger than the {} available broker(s)",
            brokers.len()
        )));
    }
    let seed = seed(&brokers);
    Ok(assign_replicas(&brokers, count, rf, first_partition, seed))
}

/// A new partition: the unfenced replicas form the ISR, the first of them leads.
fn new_partition(image: &MetadataImage, index: usize, replicas: Vec<i32>) -> PartitionInfo {
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|&r| image.is_live(r))
        .collect();
    PartitionInfo {
        index: index as i32,
        leader: isr[0],
        leader_epoch: 0,
        partition_epoch: 0,
        replicas,
        isr,
        elr: Vec::new(),
        last_known_leader: None,
    }
}

fn check_partition_count(name: &str, count: i64) -> Result<(), ControllerError> {
    if count < 1 {
        return Err(ControllerError::InvalidPartitions(format!(
            "topic '{name}' needs at least 1 partition, got {count}"
        )));
    }
    if count > i64::from(MAX_PARTITIONS_PER_TOPIC) {
        return Err(ControllerError::InvalidPartitions(format!(
            "topic '{name}' may have at most {MAX_PARTITIONS_PER_TOPIC} partitions, got {count}"
        )));
    }
    Ok(())
}

pub(crate) fn create_topic(
    image: &mut MetadataImage,
    name: &str,
    id: Uuid,
    partitions: i32,
    replication_factor: i16,
    assignment: Option<&[Vec<i32>]>,
    configs: &BTreeMap<String, String>,
) -> Result<CommandResult, ControllerError> {
    validate_topic_name(name)?;
    if image.topics.contains_key(name) {
        return Err(ControllerError::TopicAlreadyExists(format!(
            "topic '{name}' already exists"
        )));
    }
    // Kafka forbids names that differ only by '.' vs '_' (they collide in metric names).
    let normalized = name.replace('.', "_");
    if let Some(other) = image
        .topics
        .keys()
        .find(|t| t.replace('.', "_") == normalized)
    {
        return Err(ControllerError::InvalidTopic(format!(
            "topic '{name}' collides with existing topic '{other}' ('.' and '_' are treated alike)"
        )));
    }
    if id.is_nil() {
        return Err(ControllerError::InvalidRequest(format!(
            "topic '{name}' needs a non-zero id"
        )));
    }
    if let Some(other) = image.topic_by_id(id) {
        return Err(ControllerError::TopicAlreadyExists(format!(
            "topic id {id} is already used by topic '{}'",
            other.name
        )));
    }
    validate_configs(configs)?;

    let assignment = match assignment.filter(|a| !a.is_empty()) {
        Some(assignment) => {
            check_partition_count(name, assignment.len() as i64)?;
            if partitions != -1 && partitions as usize != assignment.len() {
                return Err(ControllerError::InvalidRequest(format!(
                    "topic '{name}': {partitions} partitions requested but the assignment has {}",
                    assignment.len()
                )));
            }
            let rf = assignment[0].len();
            if replication_factor != -1 && replication_factor as usize != rf {
                return Err(ControllerError::InvalidRequest(format!(
                    "topic '{name}': replication factor {replication_factor} requested but \
                     the assignment has {rf} replicas per partition"
                )));
            }
            validate_assignment(image, name, assignment, rf, 0)?;
            assignment.to_vec()
        }
        None => {
            check_partition_count(name, i64::from(partitions))?;
            if replication_factor < 1 {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "topic '{name}': the replication factor must be at least 1, got \
                     {replication_factor}"
                )));
            }
            place(
                image,
                partitions as usize,
                replication_factor as usize,
                0,
                |brokers| Seed::from_topic_id(id, brokers.len()),
            )?
        }
    };

    let topic = TopicInfo {
        name: name.to_string(),
        id,
        configs: configs.clone(),
        partitions: assignment
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| new_partition(image, i, replicas))
            .collect(),
    };
    image.topics.insert(name.to_string(), topic.clone());
    Ok(CommandResult::TopicCreated(topic))
}

fn unknown_topic(name: &str) -> ControllerError {
    ControllerError::UnknownTopicOrPartition(format!("topic '{name}' does not exist"))
}

pub(crate) fn delete_topic(
    image: &mut MetadataImage,
    name: &str,
) -> Result<CommandResult, ControllerError> {
    let topic = image
        .topics
        .remove(name)
        .ok_or_else(|| unknown_topic(name))?;
    Ok(CommandResult::TopicDeleted {
        name: topic.name,
        id: topic.id,
    })
}

pub(crate) fn create_partitions(
    image: &mut MetadataImage,
    name: &str,
    total: i32,
    assignment: Option<&[Vec<i32>]>,
) -> Result<CommandResult, ControllerError> {
    let topic = image.topics.get(name).ok_or_else(|| unknown_topic(name))?;
    let current = topic.partitions.len();
    if i64::from(total) <= current as i64 {
        return Err(ControllerError::InvalidPartitions(format!(
            "topic '{name}' has {current} partitions; the new count must be larger, got {total}"
        )));
    }
    check_partition_count(name, i64::from(total))?;
    let added = total as usize - current;
    let rf = topic.replication_factor();
    let assignment = match assignment.filter(|a| !a.is_empty()) {
        Some(assignment) => {
            if assignment.len() != added {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "topic '{name}' grows by {added} partitions but the assignment lists {}",
                    assignment.len()
                )));
            }
            validate_assignment(image, name, assignment, rf, current)?;
            assignment.to_vec()
        }
        None => {
            let partition0_leader = topic.partitions[0].preferred_leader();
            let fallback = |n| Seed::from_topic_id(topic.id, n);
            place(image, added, rf, current, |brokers| {
                Seed::for_added_partitions(brokers, partition0_leader, fallback(brokers.len()))
            })?
        }
    };
    let new: Vec<PartitionInfo> = assignment
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| new_partition(image, current + i, replicas))
        .collect();
    let topic = image.topics.get_mut(name).expect("checked above");
    topic.partitions.extend(new.iter().cloned());
    Ok(CommandResult::PartitionsCreated {
        name: name.to_string(),
        partitions: new,
    })
}

pub(crate) fn alter_configs(
    image: &mut MetadataImage,
    name: &str,
    configs: &BTreeMap<String, String>,
) -> Result<CommandResult, ControllerError> {
    validate_configs(configs)?;
    let topic = image
        .topics
        .get_mut(name)
        .ok_or_else(|| unknown_topic(name))?;
    topic.configs = configs.clone();
    // A lower min.insync.replicas the ISR now meets ends its ELR.
    let mut changed = replication::clear_met_elr(image, name);
    // Enabling unclean election gives leaderless partitions a leader at once if a replica is
    // live (Kafka's controller does the same on its next unclean-election pass).
    if image.topics[name].unclean_leader_election() {
        changed.extend(replication::elect_leaderless(image, Some(name)));
        changed.sort();
        changed.dedup();
    }
    Ok(CommandResult::ConfigsAltered {
        topic: name.to_string(),
        changed,
    })
}
