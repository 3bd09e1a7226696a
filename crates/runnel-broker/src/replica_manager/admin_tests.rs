//! Tests of topic administration: local checks, the controller's refusals, deletes.

use std::collections::BTreeMap;

use futures::executor::block_on;
use kafka_protocol::ResponseError;
use runnel_storage::batch::testing::build_batch;

use crate::error::BrokerError;
use crate::metadata::TopicInfo;
use crate::replica_manager::tests::{create, manager};

#[test]
fn admin_errors_come_from_local_checks_or_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let rm = manager(dir.path());
    create(&rm, "a.b", 1);
    let code = |r: Result<TopicInfo, BrokerError>| r.unwrap_err().code();
    let topic = |name: &str, p: i32, rf: i16, validate: bool| {
        block_on(rm.create_topic(name, p, rf, BTreeMap::new(), validate))
    };
    assert_eq!(
        code(topic("a b", 1, 1, false)),
        ResponseError::InvalidTopicException
    );
    assert_eq!(
        code(topic("a_b", 1, 1, false)),
        ResponseError::InvalidTopicException
    );
    assert_eq!(
        code(topic("a.b", 1, 1, false)),
        ResponseError::TopicAlreadyExists
    );
    assert_eq!(
        code(topic("a.b", 1, 1, true)),
        ResponseError::TopicAlreadyExists
    );
    assert_eq!(
        code(topic("z", 0, 1, false)),
        ResponseError::InvalidPartitions
    );
    // One broker: RF 2 is refused by validate_only here and by the controller otherwise.
    assert_eq!(
        code(topic("z", 1, 2, true)),
        ResponseError::InvalidReplicationFactor
    );
    assert_eq!(
        code(topic("z", 1, 2, false)),
        ResponseError::InvalidReplicationFactor
    );
    assert!(topic("z", 1, 1, true).is_ok());
    assert!(rm.image().topic("z").is_none());
    assert!(block_on(rm.create_partitions("a.b", 1, false)).is_err());
    assert!(block_on(rm.create_partitions("a.b", 3, true)).is_ok());
    assert_eq!(rm.image().topic("a.b").unwrap().partitions.len(), 1);
    // A lost auto-create race is success.
    assert!(block_on(rm.auto_create_topic("a.b")).unwrap().is_some());
}

#[test]
fn delete_removes_logs_and_recreate_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let rm = manager(dir.path());
    let old = create(&rm, "t", 1);
    let p = rm.partition("t", 0).unwrap();
    p.append(&mut build_batch(2, 10), 0).unwrap();
    assert_eq!(block_on(rm.delete_topic("t")).unwrap(), old.id);
    assert!(!dir.path().join("t-0").exists());
    assert!(p.append(&mut build_batch(1, 10), 0).is_err());
    create(&rm, "t", 1);
    assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 0);
    assert!(block_on(rm.delete_topic("missing")).is_err());
}
