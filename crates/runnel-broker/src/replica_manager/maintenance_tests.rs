//! Tests of the high-watermark checkpoint as maintenance writes it.

use std::fs;

use runnel_storage::batch::testing::build_batch;

use super::*;
use crate::replica_manager::tests::{create, manager};

#[test]
fn checkpoint_follows_high_watermarks_and_keeps_unopened_partitions() {
    let dir = tempfile::tempdir().unwrap();
    // A partition the checkpoint names but no image has opened yet (a stale image at start).
    checkpoint::write(
        dir.path(),
        &checkpoint::Checkpoint::from([(("old".into(), 0), 7)]),
    )
    .unwrap();
    let rm = manager(dir.path());
    create(&rm, "t", 1);
    let p = rm.partition("t", 0).unwrap();
    p.append(&mut build_batch(3, 10), 0).unwrap();
    rm.checkpoint_high_watermarks();
    let written = checkpoint::read(dir.path());
    assert_eq!(written.get(&("t".into(), 0)), Some(&3));
    assert_eq!(written.get(&("old".into(), 0)), Some(&7));
    // Nothing moved: the file is not rewritten.
    let path = dir.path().join(checkpoint::FILE_NAME);
    fs::remove_file(&path).unwrap();
    rm.checkpoint_high_watermarks();
    assert!(!path.exists());
    p.append(&mut build_batch(1, 10), 0).unwrap();
    rm.flush_all();
    assert_eq!(checkpoint::read(dir.path()).get(&("t".into(), 0)), Some(&4));
}
