//! The storage with the real state machine: metadata commands in the log, the metadata image
//! in the state machine and its snapshots.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::storage::StorageHelper;
use openraft::testing::log_id;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::Membership;
use openraft::RaftSnapshotBuilder;
use uuid::Uuid;

use super::open;
use super::RaftNode;
use super::TypeConfig;
use crate::command::CommandResult;
use crate::command::ControllerCommand;
use crate::error::ControllerError;
use crate::image::MetadataImage;

/// An entry carrying `command` at `index`.
fn command(index: u64, command: ControllerCommand) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(command),
    }
}

/// The commands that bring up a three-broker cluster with one topic, from index 1 on.
fn cluster_commands() -> Vec<Entry<TypeConfig>> {
    let mut commands = vec![ControllerCommand::InitCluster {
        cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".to_owned(),
    }];
    for id in 1..=3 {
        commands.push(ControllerCommand::RegisterBroker {
            id,
            incarnation: Uuid::from_u128(id as u128),
            host: "127.0.0.1".to_owned(),
            port: 9092 + 100 * (id - 1),
            listeners: Vec::new(),
            rpc_address: format!("127.0.0.1:{}", 9093 + 100 * (id - 1)),
            rack: None,
            directory_id: None,
            previous_broker_epoch: None,
        });
        commands.push(ControllerCommand::UnfenceBroker { id });
    }
    commands.push(ControllerCommand::CreateTopic {
        name: "orders".to_owned(),
        id: Uuid::from_u128(42),
        partitions: 3,
        replication_factor: 3,
        assignment: None,
        configs: BTreeMap::new(),
    });
    commands
        .into_iter()
        .zip(1..)
        .map(|(c, index)| command(index, c))
        .collect()
}

#[tokio::test]
async fn metadata_image_is_snapshotted_and_replayed_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let voters: BTreeSet<u64> = [1].into();
    let nodes = BTreeMap::from([(
        1,
        RaftNode {
            rpc_addr: "127.0.0.1:9093".to_owned(),
        },
    )]);
    let mut entries = vec![Entry {
        log_id: log_id(1, 1, 0),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }];
    entries.extend(cluster_commands());
    let topic_index = entries.len() as u64 - 1;
    // Refused (no such topic), yet applied: a no-op answered with the error.
    entries.push(command(
        topic_index + 1,
        ControllerCommand::DeleteTopic {
            name: "no-such-topic".to_owned(),
        },
    ));
    entries.push(command(
        topic_index + 2,
        ControllerCommand::AllocateProducerIds {
            broker_id: 1,
            count: 1000,
        },
    ));
    let last = entries.len() as u64 - 1;

    let want: MetadataImage;
    {
        let (mut log, mut sm) = open(dir.path()).unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_committed(Some(log_id(1, 1, last))).await.unwrap();

        // Snapshot after the topic is created; the last two commands only in the log.
        let split = topic_index as usize + 1;
        let replies = sm.apply(entries[..split].to_vec()).await.unwrap();
        assert!(matches!(
            replies[1],
            Ok(CommandResult::ClusterInitialized { .. })
        ));
        assert!(
            matches!(replies[split - 1], Ok(CommandResult::TopicCreated(_))),
            "{:?}",
            replies[split - 1]
        );
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let replies = sm.apply(entries[split..].to_vec()).await.unwrap();
        assert!(
            matches!(replies[0], Err(ControllerError::UnknownTopicOrPartition(_))),
            "{:?}",
            replies[0]
        );
        assert!(matches!(
            replies[1],
            Ok(CommandResult::ProducerIdsAllocated(_))
        ));
        want = sm.applied().data.as_ref().clone();
        assert_eq!(want.brokers.len(), 3);
        assert!(want.topics.contains_key("orders"));
    }

    let (mut log, mut sm) = open(dir.path()).unwrap();
    let snapshotted = sm.applied().data.clone();
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        Some(log_id(1, 1, topic_index))
    );
    assert_ne!(
        *snapshotted, want,
        "the producer ids came after the snapshot"
    );
    StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(sm.applied().data.as_ref(), &want);
    assert_eq!(sm.subscribe().borrow().data.as_ref(), &want);
}
