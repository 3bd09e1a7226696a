//! A partition's replication roles, driven directly (no gRPC): a leader and a follower
//! replica in one process, the "fetches" being calls between them as the service and the
//! fetcher make them.

use std::time::Duration;

use runnel_storage::batch::testing::build_batch;
use runnel_storage::{LogConfig, PartitionLog};
use uuid::Uuid;

use super::*;

fn replica(dir: &std::path::Path) -> Partition {
    let log = PartitionLog::open(dir, LogConfig::default(), now_ms()).unwrap();
    Partition::new("t".into(), Uuid::nil(), 0, log, 60_000, None, test_dir())
}

fn test_dir() -> std::sync::Arc<crate::log_dir::LogDir> {
    std::sync::Arc::new(crate::log_dir::LogDir::new(std::path::Path::new("test")))
}

fn info(leader: i32, leader_epoch: i32, isr: &[i32]) -> PartitionInfo {
    PartitionInfo {
        index: 0,
        replicas: vec![1, 2],
        isr: isr.to_vec(),
        leader,
        leader_epoch,
        partition_epoch: leader_epoch,
        elr: Vec::new(),
        last_known_leader: None,
    }
}

/// What the follower's fetcher does with one answer of the leader's service.
fn replicate(leader: &Partition, follower: &Partition, follower_id: i32, epoch: i32) {
    let pos = follower.fetch_position().unwrap();
    let outcome = leader
        .on_follower_fetch(
            follower_id,
            epoch,
            pos.log_end_offset,
            pos.last_fetched_epoch,
            now_ms(),
            Some(0),
        )
        .unwrap();
    assert!(
        matches!(outcome, FollowerFetch::Serve { .. }),
        "{outcome:?}"
    );
    let read = leader
        .read_to_log_end(pos.log_end_offset, 1 << 20, true)
        .unwrap();
    follower
        .append_as_follower(epoch, &read.records, leader.high_watermark())
        .unwrap();
}

#[tokio::test]
async fn acks_all_waits_for_the_follower_and_fails_on_demotion() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (replica(d1.path()), replica(d2.path()));
    assert_eq!(
        leader.sync_role(&info(1, 0, &[1, 2]), 1, now_ms()).unwrap(),
        RoleChange::BecameLeader
    );
    assert_eq!(
        follower
            .sync_role(&info(1, 0, &[1, 2]), 2, now_ms())
            .unwrap(),
        RoleChange::BecameFollower
    );
    assert!(
        follower.append(&mut build_batch(1, 10), 0).is_err(),
        "a follower takes no produce"
    );

    let appended = leader.append(&mut build_batch(3, 10), 0).unwrap();
    assert_eq!((appended.base_offset, appended.last_offset), (0, 2));
    assert_eq!(
        leader.high_watermark(),
        0,
        "the follower does not have it yet"
    );
    let quick = leader
        .wait_committed(3, 0, 2, Duration::from_millis(20))
        .await;
    assert_eq!(
        quick.unwrap_err().code(),
        kafka_protocol::ResponseError::RequestTimedOut
    );

    // The follower copies the records; its next fetch acknowledges them.
    replicate(&leader, &follower, 2, 0);
    assert_eq!(follower.log_end_offset().unwrap(), 3);
    replicate(&leader, &follower, 2, 0);
    assert_eq!(leader.high_watermark(), 3);
    leader
        .wait_committed(3, 0, 2, Duration::from_secs(5))
        .await
        .unwrap();
    // The answer to that fetch carries the moved high watermark.
    assert_eq!(follower.high_watermark(), 3);

    // A parked acks=all request fails as soon as the leader is demoted.
    leader.append(&mut build_batch(1, 10), 0).unwrap();
    let parked = leader.wait_committed(4, 0, 2, Duration::from_secs(30));
    let demote = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.sync_role(&info(2, 1, &[2]), 1, now_ms()).unwrap();
    };
    let (result, ()) = tokio::join!(parked, demote);
    assert_eq!(
        result.unwrap_err().code(),
        kafka_protocol::ResponseError::NotLeaderOrFollower
    );
    assert!(
        leader.append(&mut build_batch(1, 10), 0).is_err(),
        "a demoted leader takes no produce"
    );
}

#[test]
fn a_new_leaders_follower_truncates_its_divergent_tail() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (old, new) = (replica(d1.path()), replica(d2.path()));
    old.sync_role(&info(1, 0, &[1, 2]), 1, now_ms()).unwrap();
    new.sync_role(&info(1, 0, &[1, 2]), 2, now_ms()).unwrap();
    old.append(&mut build_batch(2, 10), 0).unwrap();
    replicate(&old, &new, 2, 0);
    // The old leader appends two more records nobody copies, then loses leadership.
    old.append(&mut build_batch(2, 10), 0).unwrap();
    assert_eq!(
        new.sync_role(&info(2, 1, &[2]), 2, now_ms()).unwrap(),
        RoleChange::BecameLeader
    );
    new.append(&mut build_batch(1, 10), 1).unwrap();
    assert_eq!(
        old.sync_role(&info(2, 1, &[2]), 1, now_ms()).unwrap(),
        RoleChange::BecameFollower
    );

    // Epoch 0 ends at offset 2 on the new leader; the old one holds it up to 4.
    let pos = old.fetch_position().unwrap();
    assert_eq!((pos.log_end_offset, pos.last_fetched_epoch), (4, 0));
    let end = new.leader_end_offset_for_epoch(1, 0).unwrap();
    assert_eq!((end.epoch, end.end_offset), (0, 2));
    let outcome = new
        .on_follower_fetch(1, 1, 4, 0, now_ms(), Some(0))
        .unwrap();
    assert!(
        matches!(outcome, FollowerFetch::Diverging(e) if e.end_offset == 2),
        "{outcome:?}"
    );
    // Fencing: a stale epoch is refused, a newer one is unknown.
    assert_eq!(
        new.on_follower_fetch(1, 0, 2, 0, now_ms(), Some(0))
            .unwrap_err(),
        ReplicaRefusal::FencedLeaderEpoch { leader_epoch: 1 }
    );
    assert_eq!(
        new.on_follower_fetch(1, 2, 2, 0, now_ms(), Some(0))
            .unwrap_err(),
        ReplicaRefusal::UnknownLeaderEpoch
    );

    old.truncate_as_follower(1, end.end_offset).unwrap();
    replicate(&new, &old, 1, 1);
    assert_eq!(old.log_end_offset().unwrap(), 3);
    assert_eq!(
        old.read_to_log_end(0, 1 << 20, true).unwrap().records,
        new.read_to_log_end(0, 1 << 20, true).unwrap().records,
        "both logs hold the same batches"
    );
    // A write for the superseded epoch never lands in the follower's log.
    assert!(old.append_as_follower(0, &[], 0).is_err());
}

#[test]
fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (replica(d1.path()), replica(d2.path()));
    leader.sync_role(&info(1, 0, &[1, 2]), 1, now_ms()).unwrap();
    follower
        .sync_role(&info(1, 0, &[1, 2]), 2, now_ms())
        .unwrap();
    follower
        .with_log(|log| {
            Ok(log.append_as_follower(&{
                let mut b = build_batch(2, 10);
                runnel_storage::batch::set_partition_leader_epoch(&mut b, 0);
                b
            })?)
        })
        .unwrap();
    // Retention on the leader deleted everything below 10.
    leader
        .with_log(|log| Ok(log.truncate_fully_and_start_at(10)?))
        .unwrap();
    leader.append(&mut build_batch(1, 10), 0).unwrap();
    let read = leader.read_to_log_end(2, 1 << 20, true);
    assert_eq!(
        read.unwrap_err().code(),
        kafka_protocol::ResponseError::OffsetOutOfRange
    );
    follower
        .reset_as_follower(0, leader.log_start_offset().unwrap())
        .unwrap();
    assert_eq!(follower.log_end_offset().unwrap(), 10);
    replicate(&leader, &follower, 2, 0);
    assert_eq!(follower.log_end_offset().unwrap(), 11);
}

#[test]
fn a_follower_copies_a_compacted_leader_across_its_gaps() {
    use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let compacted = LogConfig {
        cleanup_compact: true,
        segment_bytes: 300,
        min_cleanable_dirty_ratio: 0.01,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(d1.path(), compacted, now_ms()).unwrap();
    let leader = Partition::new("t".into(), Uuid::nil(), 0, log, 60_000, None, test_dir());
    let follower = replica(d2.path());
    // The follower is out of the ISR: the leader's high watermark, up to which it cleans,
    // moves on without it.
    leader.sync_role(&info(1, 0, &[1]), 1, now_ms()).unwrap();
    follower.sync_role(&info(1, 0, &[1]), 2, now_ms()).unwrap();
    let put = |i: usize| {
        let mut b = build_batch_with(&BatchSpec {
            base_timestamp: now_ms(),
            records: vec![TestRecord {
                key: Some(format!("k{}", i % 2).into_bytes()),
                value: Some(format!("v{i}").into_bytes()),
                ..TestRecord::default()
            }],
            ..BatchSpec::default()
        });
        leader.append(&mut b, 0).unwrap();
    };
    put(0);
    replicate(&leader, &follower, 2, 0);
    assert_eq!(follower.log_end_offset().unwrap(), 1);
    for i in 1..40 {
        put(i);
    }
    assert!(leader.compact().unwrap().cleaned);
    // The batches from the follower's log end on were cleaned away: the leader answers its
    // next fetch with a batch further on.
    let read = leader.read_to_log_end(1, 1 << 20, true).unwrap();
    let first =
        runnel_storage::batch::validate_stored_batches(&read.records).unwrap()[0].base_offset;
    assert!(first > 1, "the leader still has offset {first}");
    replicate(&leader, &follower, 2, 0);
    assert_eq!(follower.log_end_offset().unwrap(), 40);
    assert_eq!(
        follower.read_to_log_end(1, 1 << 20, true).unwrap().records,
        read.records,
        "the follower holds what the leader had from there"
    );
}

#[test]
fn an_empty_leadership_leaves_no_epoch_behind() {
    use crate::replication::truncation_offset;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(d1.path()), replica(d2.path()));
    a.sync_role(&info(1, 0, &[1, 2]), 1, now_ms()).unwrap();
    b.sync_role(&info(1, 0, &[1, 2]), 2, now_ms()).unwrap();
    a.append(&mut build_batch(2, 10), 0).unwrap();
    replicate(&a, &b, 2, 0);
    // b leads epoch 1 and writes nothing; then a leads again at epoch 2.
    b.sync_role(&info(2, 1, &[1, 2]), 2, now_ms()).unwrap();
    a.sync_role(&info(2, 1, &[1, 2]), 1, now_ms()).unwrap();
    a.sync_role(&info(1, 2, &[1, 2]), 1, now_ms()).unwrap();
    b.sync_role(&info(1, 2, &[1, 2]), 2, now_ms()).unwrap();
    let at = b.epochs_and_offsets().unwrap();
    assert_eq!(at.epochs, vec![(0, 0), (1, 2)]);
    let answer = a.leader_end_offset_for_epoch(2, 1).unwrap();
    let t = truncation_offset(at.log_end_offset, at.high_watermark, &at.epochs, answer);
    assert_eq!((t.offset, t.complete), (2, true));
    b.truncate_as_follower(2, t.offset).unwrap();
    // The epoch b never wrote in is gone, so its fetch no longer diverges.
    assert_eq!(b.fetch_position().unwrap().last_fetched_epoch, 0);
    replicate(&a, &b, 2, 2);
}

#[tokio::test]
async fn an_isr_shrunk_below_min_insync_fails_the_wait_after_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let leader = replica(dir.path());
    leader.sync_role(&info(1, 0, &[1, 2]), 1, now_ms()).unwrap();
    leader.append(&mut build_batch(2, 10), 0).unwrap();
    // The controller drops the silent follower from the ISR: the high watermark jumps to
    // the log end, but only one replica has the records.
    let mut shrunk = info(1, 0, &[1]);
    shrunk.partition_epoch = 1;
    leader.sync_role(&shrunk, 1, now_ms()).unwrap();
    assert_eq!(leader.high_watermark(), 2);
    let err = leader
        .wait_committed(2, 0, 2, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        kafka_protocol::ResponseError::NotEnoughReplicasAfterAppend
    );
    leader
        .wait_committed(2, 0, 1, Duration::from_secs(5))
        .await
        .unwrap();
}

#[test]
fn a_stale_image_does_not_make_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path());
    p.sync_role(&info(1, 3, &[1, 2]), 1, now_ms()).unwrap();
    p.append(&mut build_batch(1, 10), 3).unwrap();
    p.sync_role(&info(2, 4, &[2]), 1, now_ms()).unwrap();
    // Metadata older than the log's epochs (a restart replaying its metadata log).
    assert!(p.sync_role(&info(1, 2, &[1, 2]), 1, now_ms()).is_err());
    assert!(p.append(&mut build_batch(1, 10), 2).is_err());
}
