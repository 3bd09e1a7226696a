//! Tests of the facade (leadership queries) and, through it, of the producer state every
//! partition keeps; the parts' own tests sit beside them (`registry_tests.rs`, ...). The
//! helpers here are shared with those.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use futures::executor::block_on;
use runnel_controller::command::ControllerCommand;
use runnel_storage::batch::testing::build_batch;
use uuid::Uuid;

use super::*;
use crate::testing::LocalController;

pub(super) fn manager(dir: &Path) -> Arc<ReplicaManager> {
    LocalController::start(dir, 1, BrokerConfig::default()).1
}

/// Drops `rm` and opens the data dir again on the same (in-memory) controller.
pub(super) fn reopen(
    rm: Arc<ReplicaManager>,
    controller: &Arc<LocalController>,
) -> Arc<ReplicaManager> {
    let dir = rm.registry.data_dir().to_path_buf();
    drop(rm);
    controller.start_broker(&dir, 1, BrokerConfig::default())
}

pub(super) fn create(rm: &ReplicaManager, name: &str, partitions: i32) -> TopicInfo {
    block_on(rm.create_topic(name, partitions, -1, BTreeMap::new(), false)).unwrap()
}

#[test]
fn leadership_follows_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let controller = LocalController::new(&[1, 2]);
    let rm = controller.start_broker(dir.path(), 1, BrokerConfig::default());
    controller
        .apply(ControllerCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: -1,
            replication_factor: -1,
            assignment: Some(vec![vec![2, 1], vec![1, 2]]),
            configs: BTreeMap::new(),
        })
        .unwrap();
    // A follower keeps a (for now empty) log but serves nothing.
    assert!(rm.partition("t", 0).is_ok());
    assert!(matches!(
        rm.leader_partition("t", 0),
        Err(BrokerError::NotLeader { .. })
    ));
    assert_eq!(rm.leader_partition("t", 1).unwrap().1, 0);
    assert!(matches!(
        rm.leader_epoch("t", 5),
        Err(BrokerError::UnknownPartition { .. })
    ));
    assert!(matches!(
        rm.leader_epoch("x", 0),
        Err(BrokerError::UnknownTopic(_))
    ));
    controller
        .apply(ControllerCommand::FenceBroker { id: 2 })
        .unwrap();
    let (_, epoch) = rm.leader_partition("t", 0).unwrap();
    assert!(epoch > 0);
    assert_eq!(rm.active_controller(), None);
    rm.set_active_controller(Some(3));
    assert_eq!(rm.active_controller(), Some(3));
}

mod idempotence {
    use super::*;
    use crate::partition::producer_batches;
    use crate::producer_state::ProducerEntry;
    use kafka_protocol::ResponseError;
    use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};
    use runnel_storage::AppendInfo;

    fn idem(pid: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
        build_batch_with(&BatchSpec {
            base_timestamp: now_ms(),
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records: vec![
                TestRecord {
                    value: Some(b"v".to_vec()),
                    ..TestRecord::default()
                };
                records
            ],
            ..BatchSpec::default()
        })
    }

    fn code(r: Result<AppendInfo, BrokerError>) -> ResponseError {
        r.expect_err("an error").code()
    }

    fn state(p: &Partition) -> HashMap<i64, ProducerEntry> {
        p.producers.lock().producers().clone()
    }

    fn snapshots(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".snapshot"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let rm = manager(dir.path());
        create(&rm, "t", 1);
        let p = rm.partition("t", 0).unwrap();
        p.append(&mut build_batch(2, 10), 0).unwrap(); // offsets 0-1, no producer
        let first = p.append(&mut idem(5, 0, 0, 3), 0).unwrap();
        assert_eq!((first.base_offset, first.last_offset), (2, 4));
        p.append(&mut idem(5, 0, 3, 2), 0).unwrap(); // 5-6
                                                     // The retry of the first batch: success, original offsets, nothing appended.
        let dup = p.append(&mut idem(5, 0, 0, 3), 0).unwrap();
        assert_eq!(
            (dup.base_offset, dup.last_offset, dup.record_count),
            (2, 4, 0)
        );
        assert_eq!(p.log_end_offset().unwrap(), 7);
        assert_eq!(p.high_watermark(), 7);
        // A gap, an old epoch, a new epoch not starting at 0.
        assert_eq!(
            code(p.append(&mut idem(5, 0, 9, 1), 0)),
            ResponseError::OutOfOrderSequenceNumber
        );
        p.append(&mut idem(5, 1, 0, 1), 0).unwrap(); // bump: 7
        assert_eq!(
            code(p.append(&mut idem(5, 0, 5, 1), 0)),
            ResponseError::InvalidProducerEpoch
        );
        assert_eq!(
            code(p.append(&mut idem(5, 2, 4, 1), 0)),
            ResponseError::OutOfOrderSequenceNumber
        );
        assert_eq!(p.log_end_offset().unwrap(), 8);
        // A corrupt retry is rejected as corrupt, not answered as a duplicate.
        let mut bad = idem(5, 1, 0, 1);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(code(p.append(&mut bad, 0)), ResponseError::CorruptMessage);
        // Non-idempotent batches leave no state.
        assert_eq!(state(&p).len(), 1);
    }

    #[test]
    fn several_batches_in_one_request() {
        let dir = tempfile::tempdir().unwrap();
        let rm = manager(dir.path());
        create(&rm, "t", 1);
        let p = rm.partition("t", 0).unwrap();
        let mut two = idem(1, 0, 0, 2);
        two.extend(idem(1, 0, 2, 3));
        let info = p.append(&mut two, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 4));
        let e = &state(&p)[&1];
        assert_eq!(e.batches.len(), 2);
        assert_eq!(
            (e.batches[1].first_offset, e.batches[1].last_offset),
            (2, 4)
        );
        // A request with a gap between its batches appends nothing.
        let mut gap = idem(1, 0, 5, 1);
        gap.extend(idem(1, 0, 7, 1));
        assert!(p.append(&mut gap, 0).is_err());
        assert_eq!(p.log_end_offset().unwrap(), 5);
        // The retry of the whole first request is a duplicate.
        let mut again = idem(1, 0, 0, 2);
        again.extend(idem(1, 0, 2, 3));
        assert_eq!(p.append(&mut again, 0).unwrap().base_offset, 0);
        assert_eq!(p.log_end_offset().unwrap(), 5);
    }

    fn produce_some(p: &Partition, producers: i64, batches: i32) {
        for i in 0..batches {
            for pid in 0..producers {
                p.append(&mut idem(pid, 0, i * 2, 2), 0).unwrap();
            }
            p.append(&mut build_batch(1, 10), 0).unwrap();
        }
    }

    #[test]
    fn rebuilt_from_the_log_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let live;
        let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
        create(&rm, "t", 1);
        {
            let p = rm.partition("t", 0).unwrap();
            produce_some(&p, 4, 8);
            live = state(&p);
        } // no flush_all: a crash, no snapshot
        assert!(snapshots(&dir.path().join("t-0")).is_empty());
        let rm = reopen(rm, &controller);
        let p = rm.partition("t", 0).unwrap();
        assert_eq!(state(&p), live);
        let end = p.log_end_offset().unwrap();
        let dup = p.append(&mut idem(3, 0, 14, 2), 0).unwrap();
        assert_eq!(dup.record_count, 0);
        assert_eq!(p.log_end_offset().unwrap(), end);
    }

    #[test]
    fn snapshot_at_shutdown_then_headers_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("t-0");
        let live;
        let (controller, rm) = LocalController::start(dir.path(), 1, BrokerConfig::default());
        create(&rm, "t", 1);
        {
            let p = rm.partition("t", 0).unwrap();
            produce_some(&p, 3, 4);
            rm.flush_all();
            assert_eq!(snapshots(&pdir), vec![format!("{:020}.snapshot", 28)]);
            // More after the snapshot, then a crash.
            p.append(&mut idem(0, 0, 8, 1), 0).unwrap();
            p.append(&mut idem(9, 0, 0, 1), 0).unwrap();
            live = state(&p);
        }
        let rm = reopen(rm, &controller);
        let p = rm.partition("t", 0).unwrap();
        assert_eq!(state(&p), live);
        rm.flush_all();
        assert_eq!(snapshots(&pdir).len(), 2);
        rm.flush_all(); // nothing new: no third file
        drop(p);
        let dir_path = rm.registry.data_dir().to_path_buf();
        drop(rm);
        // A torn newest snapshot and one past the log end are deleted; the older is used.
        let newest = pdir.join(format!("{:020}.snapshot", 30));
        let bytes = fs::read(&newest).unwrap();
        fs::write(&newest, &bytes[..bytes.len() - 3]).unwrap();
        fs::write(pdir.join(format!("{:020}.snapshot", 999)), &bytes).unwrap();
        let rm = controller.start_broker(&dir_path, 1, BrokerConfig::default());
        let p = rm.partition("t", 0).unwrap();
        assert_eq!(state(&p), live);
        assert_eq!(snapshots(&pdir), vec![format!("{:020}.snapshot", 28)]);
    }

    #[test]
    fn periodic_snapshot_after_enough_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let rm = manager(dir.path());
        create(&rm, "t", 1);
        let p = rm.partition("t", 0).unwrap();
        p.append(&mut idem(1, 0, 0, 1), 0).unwrap();
        let chunk = 512 << 10;
        let mut n = 1;
        while snapshots(&dir.path().join("t-0")).is_empty() {
            assert!(n < 40, "no snapshot after {n} appends of {chunk} bytes");
            p.append(&mut build_batch(1, chunk), 0).unwrap();
            n += 1;
        }
        assert!(n as u64 * chunk as u64 >= crate::producer_state::SNAPSHOT_INTERVAL_BYTES);
        let snaps = snapshots(&dir.path().join("t-0"));
        assert_eq!(snaps, vec![format!("{n:020}.snapshot")]);
    }

    #[test]
    fn non_idempotent_batches_skip_the_state() {
        assert!(producer_batches(&build_batch(3, 10)).is_none());
        let mut two = build_batch(1, 10);
        two.extend(idem(4, 0, 0, 1));
        let got = producer_batches(&two).unwrap();
        assert_eq!(got.len(), 2);
        assert!(!got[0].is_idempotent() && got[1].is_idempotent());
        assert!(producer_batches(&two[..two.len() - 1]).is_none());
    }
}
