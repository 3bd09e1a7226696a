//! Tests of image application: logs and configs follow the image, applied offsets only move
//! forward, roles wait for an image that knows this process, failed role transitions are
//! retried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use runnel_controller::command::ControllerCommand;
use runnel_storage::batch::testing::build_batch;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::replica_manager::tests::create;
use crate::replica_manager::ReplicaManager;
use crate::testing::LocalController;

#[test]
fn roles_wait_for_an_image_that_knows_this_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
    create(&rm, "t", 1);
    let offset = rm.applied_offset();
    drop(rm);
    // A restart: the replayed image still has the previous incarnation of broker 1.
    let incarnation = Uuid::new_v4();
    let rm = ReplicaManager::open(
        dir.path(),
        1,
        BrokerConfig::default(),
        controller.clone(),
        offset,
        Arc::new(controller.image()),
        Some(incarnation),
    )
    .unwrap();
    let (p, epoch) = rm.leader_partition("t", 0).unwrap();
    assert!(
        p.append(&mut build_batch(1, 10), epoch).is_err(),
        "no role from an old image"
    );
    controller
        .apply(ControllerCommand::RegisterBroker {
            id: 1,
            incarnation,
            host: "localhost".into(),
            port: 9092,
            listeners: Vec::new(),
            rpc_address: "localhost:9093".into(),
            rack: None,
            directory_id: None,
            previous_broker_epoch: None,
        })
        .unwrap();
    controller
        .apply(ControllerCommand::UnfenceBroker { id: 1 })
        .unwrap();
    rm.apply_image(offset + 2, Arc::new(controller.image()))
        .unwrap();
    let (p, epoch) = rm.leader_partition("t", 0).unwrap();
    p.append(&mut build_batch(1, 10), epoch).unwrap();
}

#[test]
fn apply_image_follows_creates_deletes_and_configs() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
    create(&rm, "t", 1);
    block_on(rm.create_partitions("t", 3, false)).unwrap();
    for i in 0..3 {
        assert!(rm.partition("t", i).is_ok());
        assert!(dir.path().join(format!("t-{i}")).is_dir());
    }
    let configs = BTreeMap::from([("retention.ms".to_string(), "1234".to_string())]);
    block_on(rm.set_topic_configs("t", configs, false)).unwrap();
    let p = rm.partition("t", 2).unwrap();
    assert_eq!(p.with_log(|l| Ok(l.config().retention_ms)).unwrap(), 1234);
    // Deleted and re-created in one step, as a broker that missed the log between sees it.
    let offset = rm.applied_offset();
    let mut image = controller.image();
    let mut topic = image.topics["t"].clone();
    topic.id = Uuid::new_v4();
    topic.partitions.truncate(1);
    image.topics.insert("t".into(), topic);
    p.append(&mut build_batch(2, 10), 0).unwrap();
    rm.partition("t", 0)
        .unwrap()
        .append(&mut build_batch(2, 10), 0)
        .unwrap();
    rm.apply_image(offset + 1, Arc::new(image.clone())).unwrap();
    assert!(!dir.path().join("t-1").exists() && !dir.path().join("t-2").exists());
    assert_eq!(rm.partition("t", 0).unwrap().log_end_offset().unwrap(), 0);
    assert!(p.append(&mut build_batch(1, 10), 0).is_err());
    // An offset already applied changes nothing.
    image.topics.clear();
    rm.apply_image(offset + 1, Arc::new(image)).unwrap();
    assert!(rm.partition("t", 0).is_ok());
    assert_eq!(rm.applied_offset(), offset + 1);
}

#[tokio::test]
async fn a_disk_error_in_a_leader_transition_takes_the_data_dir_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
    create(&rm, "t", 1);
    // A directory in the way of the leader-epoch checkpoint's temporary file fails the new
    // epoch's write: an I/O error of the data dir, which Kafka takes offline.
    let blocker = dir.path().join("t-0").join("leader-epoch-checkpoint.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let mut image = controller.image();
    image.topics.get_mut("t").unwrap().partitions[0].leader_epoch += 1;
    rm.apply_image(rm.applied_offset() + 1, Arc::new(image))
        .unwrap();
    assert!(rm.log_dir().is_offline());
    let refused = rm.leader_partition("t", 0).err().expect("refused");
    assert_eq!(
        refused.code(),
        kafka_protocol::ResponseError::KafkaStorageError
    );
    // It stays offline: the role retries do not take the leadership back.
    std::fs::remove_dir(&blocker).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let retries = tokio::spawn(rm.clone().run_role_retries(shutdown));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = rm.leader_partition("t", 0).err().expect("still refused");
    assert_eq!(
        refused.code(),
        kafka_protocol::ResponseError::KafkaStorageError
    );
    stop.send(true).unwrap();
    retries.await.unwrap();
}

/// A full disk is no disk failure: the leader transition that failed on it is retried
/// without a new image and succeeds once space is back.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn failpoint_a_full_disk_in_a_leader_transition_is_retried_without_a_new_image() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
    create(&rm, "t", 1);
    fail::cfg(
        runnel_storage::failpoints::CHECKPOINT_WRITE,
        "return(enospc)",
    )
    .unwrap();
    let mut image = controller.image();
    image.topics.get_mut("t").unwrap().partitions[0].leader_epoch += 1;
    rm.apply_image(rm.applied_offset() + 1, Arc::new(image))
        .unwrap();
    let (p, epoch) = rm.leader_partition("t", 0).unwrap();
    assert!(p.append(&mut build_batch(1, 10), epoch).is_err());

    let (stop, shutdown) = watch::channel(false);
    let retries = tokio::spawn(rm.clone().run_role_retries(shutdown));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.append(&mut build_batch(1, 10), epoch).is_err());
    fail::remove(runnel_storage::failpoints::CHECKPOINT_WRITE);
    let mut waited = Duration::ZERO;
    while p.append(&mut build_batch(1, 10), epoch).is_err() {
        assert!(
            waited < Duration::from_secs(10),
            "the transition was not retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert!(!rm.log_dir().is_offline());
    stop.send(true).unwrap();
    retries.await.unwrap();
}
