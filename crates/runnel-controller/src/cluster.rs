//! Brokers (Kafka's `ClusterControlManager`): the cluster id, registration, fencing and
//! unfencing. Liveness itself (heartbeats, the session timeout) is the active controller's
//! job; it proposes FenceBroker / UnfenceBroker, and this module only replays them.

use uuid::Uuid;

use crate::command::CommandResult;
use crate::error::ControllerError;
use crate::image::{BrokerInfo, Endpoint, MetadataImage};
use crate::replication;

pub(crate) fn init_cluster(
    image: &mut MetadataImage,
    cluster_id: &str,
) -> Result<CommandResult, ControllerError> {
    if cluster_id.is_empty() {
        return Err(ControllerError::InvalidRequest(
            "the cluster id is empty".to_string(),
        ));
    }
    if !image.cluster_id.is_empty() && image.cluster_id != cluster_id {
        return Err(ControllerError::InconsistentClusterId(format!(
            "the cluster id is already {}, not {cluster_id}",
            image.cluster_id
        )));
    }
    image.cluster_id = cluster_id.to_string();
    Ok(CommandResult::ClusterInitialized {
        cluster_id: cluster_id.to_string(),
    })
}

/// The fields of a RegisterBroker command.
pub(crate) struct Registration<'a> {
    pub(crate) id: i32,
    pub(crate) incarnation: Uuid,
    pub(crate) host: &'a str,
    pub(crate) port: i32,
    pub(crate) listeners: &'a [Endpoint],
    pub(crate) rpc_address: &'a str,
    pub(crate) rack: Option<&'a str>,
    pub(crate) directory_id: Option<Uuid>,
    pub(crate) previous_broker_epoch: Option<i64>,
}

pub(crate) fn register_broker(
    image: &mut MetadataImage,
    reg: Registration<'_>,
) -> Result<CommandResult, ControllerError> {
    let invalid = |why: String| {
        Err(ControllerError::InvalidRequest(format!(
            "cannot register broker {}: {why}",
            reg.id
        )))
    };
    if reg.id < 0 {
        return invalid("broker ids are not negative".to_string());
    }
    if reg.host.is_empty() {
        return invalid("the host is empty".to_string());
    }
    if !(1..=65535).contains(&reg.port) {
        return invalid(format!("port {} is out of range", reg.port));
    }
    for (i, listener) in reg.listeners.iter().enumerate() {
        if listener.name.is_empty() || listener.host.is_empty() {
            return invalid(format!("listener {i} has an empty name or host"));
        }
        if !(1..=65535).contains(&listener.port) {
            return invalid(format!(
                "listener {} has port {}, out of range",
                listener.name, listener.port
            ));
        }
        if reg.listeners[..i].iter().any(|l| l.name == listener.name) {
            return invalid(format!("listener {} is named twice", listener.name));
        }
    }
    if reg.rpc_address.is_empty() {
        return invalid("the RPC address is empty".to_string());
    }
    if reg.rack == Some("") {
        return invalid("the rack is an empty string (leave it unset instead)".to_string());
    }

    let addresses = |b: &mut BrokerInfo| {
        b.host = reg.host.to_string();
        b.port = reg.port;
        b.listeners = reg.listeners.to_vec();
        b.rpc_address = reg.rpc_address.to_string();
        b.rack = reg.rack.map(str::to_string);
    };
    if let Some(existing) = image.brokers.get_mut(&reg.id) {
        if existing.incarnation == reg.incarnation {
            // A retry from the same process: keep its epoch and fencing state.
            addresses(existing);
            if existing.directory_id.is_none() {
                existing.directory_id = reg.directory_id;
            }
            return Ok(CommandResult::BrokerRegistered {
                broker_id: reg.id,
                broker_epoch: existing.epoch,
                changed: Vec::new(),
            });
        }
    }

    // A new broker, or a restart: the old incarnation may have lost unflushed records, so it
    // leaves every ISR it can leave and leads nothing.
    let mut changed = Vec::new();
    let mut unclean = false;
    if let Some(existing) = image.brokers.get_mut(&reg.id) {
        // KIP-966: only a marker of the registered epoch proves the logs were flushed at
        // shutdown; KIP-858: another directory id is a disk that holds nothing.
        let lost_tail = reg
            .previous_broker_epoch
            .is_some_and(|prev| prev != existing.epoch);
        let new_disk = matches!(
            (existing.directory_id, reg.directory_id),
            (Some(old), Some(new)) if old != new
        );
        unclean = lost_tail || new_disk;
        if !existing.fenced {
            existing.fenced = true;
            changed = replication::fence_out(image, reg.id);
        }
    }
    if unclean {
        changed.extend(replication::remove_unclean(image, reg.id));
        changed.sort();
        changed.dedup();
    }
    let epoch = image.next_broker_epoch;
    image.next_broker_epoch += 1;
    let mut broker = BrokerInfo {
        id: reg.id,
        host: String::new(),
        port: 0,
        listeners: Vec::new(),
        rpc_address: String::new(),
        rack: None,
        incarnation: reg.incarnation,
        fenced: true,
        epoch,
        directory_id: reg.directory_id,
    };
    addresses(&mut broker);
    image.brokers.insert(reg.id, broker);
    Ok(CommandResult::BrokerRegistered {
        broker_id: reg.id,
        broker_epoch: epoch,
        changed,
    })
}

pub(crate) fn set_min_insync_replicas(
    image: &mut MetadataImage,
    value: i32,
) -> Result<CommandResult, ControllerError> {
    if value < 1 {
        return Err(ControllerError::InvalidConfig(format!(
            "min.insync.replicas={value}: must be at least 1"
        )));
    }
    let changed = replication::set_min_insync_replicas(image, value);
    Ok(CommandResult::MinInsyncReplicasSet { value, changed })
}

fn registered(image: &mut MetadataImage, id: i32) -> Result<&mut BrokerInfo, ControllerError> {
    image.brokers.get_mut(&id).ok_or_else(|| {
        ControllerError::BrokerNotAvailable(format!("broker {id} is not registered"))
    })
}

pub(crate) fn fence_broker(
    image: &mut MetadataImage,
    id: i32,
) -> Result<CommandResult, ControllerError> {
    let broker = registered(image, id)?;
    let changed = if broker.fenced {
        Vec::new()
    } else {
        broker.fenced = true;
        replication::fence_out(image, id)
    };
    Ok(CommandResult::BrokerFenced {
        broker_id: id,
        changed,
    })
}

pub(crate) fn unfence_broker(
    image: &mut MetadataImage,
    id: i32,
) -> Result<CommandResult, ControllerError> {
    let broker = registered(image, id)?;
    let changed = if broker.fenced {
        broker.fenced = false;
        replication::elect_leaderless(image, None)
    } else {
        Vec::new()
    };
    Ok(CommandResult::BrokerUnfenced {
        broker_id: id,
        changed,
    })
}
