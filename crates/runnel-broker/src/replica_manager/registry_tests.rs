//! Tests of the partition registry: logs survive a restart, a topic re-created while the
//! node was down starts empty, stray directories go once the node has caught up.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_controller::command::ControllerCommand;
use runnel_storage::batch::testing::build_batch;
use uuid::Uuid;

use super::*;
use crate::replica_manager::tests::{create, reopen};
use crate::replica_manager::ReplicaManager;
use crate::testing::LocalController;

#[test]
fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
    create(&rm, "t", 2);
    let p = rm.partition("t", 1).unwrap();
    let mut batch = build_batch(3, 10);
    let info = p.append(&mut batch, 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 2));
    assert_eq!(p.high_watermark(), 3);
    assert!(!p.read(0, 1 << 20, true).unwrap().records.is_empty());
    drop(p);
    let rm = reopen(rm, &controller);
    assert_eq!(rm.partition("t", 1).unwrap().log_end_offset().unwrap(), 3);
    assert!(matches!(
        rm.partition("t", 2),
        Err(BrokerError::UnknownPartition { .. })
    ));
    assert!(matches!(
        rm.partition("u", 0),
        Err(BrokerError::UnknownTopic(_))
    ));
}

#[test]
fn recreated_while_down_starts_empty_and_strays_wait_for_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
    create(&rm, "t", 1);
    create(&rm, "gone", 1);
    rm.partition("t", 0)
        .unwrap()
        .append(&mut build_batch(2, 10), 0)
        .unwrap();
    let stale = Arc::new(controller.image());
    drop(rm);
    // While the node is down: "t" is deleted and re-created, "gone" is deleted.
    let up = |c: ControllerCommand| controller.apply(c).unwrap();
    up(ControllerCommand::DeleteTopic { name: "t".into() });
    up(ControllerCommand::DeleteTopic {
        name: "gone".into(),
    });
    up(ControllerCommand::CreateTopic {
        name: "t".into(),
        id: Uuid::new_v4(),
        partitions: 1,
        replication_factor: 1,
        assignment: None,
        configs: BTreeMap::new(),
    });
    // Opening at an old image keeps every directory.
    let rm = ReplicaManager::open(
        dir.path(),
        1,
        BrokerConfig::default(),
        controller.clone(),
        1,
        stale,
        None,
    )
    .unwrap();
    assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 2);
    rm.remove_stray_dirs();
    assert!(dir.path().join("gone-0").exists());
    // Caught up: the new "t" starts empty and the strays go.
    rm.apply_image(99, Arc::new(controller.image())).unwrap();
    assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 0);
    assert!(!dir.path().join("gone-0").exists());
    std::fs::create_dir(dir.path().join("old-7")).unwrap();
    assert!(has_partition_logs(dir.path()));
    rm.remove_stray_dirs();
    assert!(!dir.path().join("old-7").exists());
    assert!(dir.path().join("t-0").exists());
    let empty = tempfile::tempdir().unwrap();
    assert!(!has_partition_logs(empty.path()));
}

#[test]
fn partition_dir_names_parse() {
    assert_eq!(parse_partition_dir("a-b-3"), Some(("a-b", 3)));
    assert_eq!(parse_partition_dir("meta"), None);
    assert_eq!(parse_partition_dir("-3"), None);
}
