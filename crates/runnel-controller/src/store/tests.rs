//! Tests of the sled storage with a small key-value state machine: openraft's conformance
//! suite, reopening, snapshots, errors on open, and a model check of the log's boundaries.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::storage::StorageHelper;
use openraft::testing::log_id;
use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::Membership;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::StorageError;
use openraft::Vote;
use proptest::prelude::*;
use serde::Deserialize;
use serde::Serialize;
use tempfile::TempDir;

use super::open_with;
use super::LogStore;
use super::RaftNode;
use super::StateMachineData;
use super::StateMachineStore;
use super::StoreError;
use super::StoreTypes;

/// A key-value map: the smallest state machine whose state shows which commands were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Kv {
    /// The value last set for each key.
    entries: BTreeMap<String, String>,
}

/// The one command of [`Kv`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Set {
    /// The key to set.
    key: String,
    /// Its new value.
    value: String,
}

impl StateMachineData for Kv {
    type Command = Set;
    /// The value the key had before.
    type Response = Option<String>;

    fn apply(&mut self, command: &Set) -> Option<String> {
        self.entries
            .insert(command.key.clone(), command.value.clone())
    }

    fn response_without_command() -> Option<String> {
        None
    }
}

openraft::declare_raft_types!(
    /// The type config of the tests.
    TestConfig:
        D = Set,
        R = Option<String>,
        NodeId = u64,
        Node = RaftNode,
        Entry = Entry<TestConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

impl StoreTypes for TestConfig {
    type Data = Kv;
}

type Log = LogStore<TestConfig>;
type Sm = StateMachineStore<TestConfig>;

/// Opens a fresh store in a temporary directory for each test of the suite.
struct SledBuilder;

impl StoreBuilder<TestConfig, Log, Sm, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, Log, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (log, sm) = open_with(dir.path()).expect("open a fresh store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    // The suite runs each test on its own tokio runtime, so this is a plain test.
    Suite::test_all(SledBuilder).expect("openraft's storage suite passes");
}

/// An entry setting `key` to `value` at `index` (term 1, leader 1).
fn set(index: u64, key: &str, value: &str) -> Entry<TestConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Set {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// A membership entry of three voters with their addresses, at `index`.
fn three_voters(index: u64) -> Entry<TestConfig> {
    let nodes: BTreeMap<u64, RaftNode> = (1..=3)
        .map(|id| {
            let node = RaftNode {
                rpc_addr: format!("127.0.0.1:{}", 9000 + id),
            };
            (id, node)
        })
        .collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

/// Opens the store in `dir`, panicking on failure.
fn open_at(dir: &Path) -> (Log, Sm) {
    open_with(dir).expect("open the store")
}

#[tokio::test]
async fn reopening_restores_vote_log_commit_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        // openraft starts a log at index 0 with the initial membership.
        three_voters(0),
        set(1, "a", "1"),
        set(2, "b", "2"),
        set(3, "a", "3"),
        set(4, "c", "4"),
    ];
    let vote = Vote::new_committed(1, 1);
    let snapshot_meta;
    {
        let (mut log, mut sm) = open_at(dir.path());
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 4))).await.unwrap();

        // Apply up to 2 and snapshot there, then apply the rest without a snapshot.
        sm.apply(entries[..3].to_vec()).await.unwrap();
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        snapshot_meta = snapshot.meta;
        assert_eq!(snapshot_meta.last_log_id, Some(log_id(1, 1, 2)));
        let replies = sm.apply(entries[3..].to_vec()).await.unwrap();
        assert_eq!(replies, vec![Some("1".to_owned()), None]);
    }

    let (mut log, mut sm) = open_at(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 4)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 4)));
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries);

    // The state machine starts from the snapshot...
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 2)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 0)));
    let addresses: Vec<_> = membership
        .nodes()
        .map(|(_, n)| n.rpc_addr.clone())
        .collect();
    assert_eq!(
        addresses,
        ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    );
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(current.meta, snapshot_meta);
    let mut subscriber = sm.subscribe();

    // ...and openraft replays the committed log after it.
    let initial = StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(initial.vote_ref(), &vote);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 4)));
    let want: BTreeMap<String, String> = [("a", "3"), ("b", "2"), ("c", "4")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(sm.applied().data.entries, want);
    assert!(subscriber.has_changed().unwrap());
    let published = subscriber.borrow_and_update().clone();
    assert_eq!(published.last_applied, Some(log_id(1, 1, 4)));
    assert_eq!(published.data.entries, want);
}

#[tokio::test]
async fn purge_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open_at(dir.path());
        let entries: Vec<_> = (1..=6).map(|i| set(i, "k", &i.to_string())).collect();
        log.blocking_append(entries).await.unwrap();
        log.purge(log_id(1, 1, 4)).await.unwrap();
    }
    let (mut log, _sm) = open_at(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 6)));
    let indexes: Vec<u64> = log
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, [5, 6]);
}

#[tokio::test]
async fn installed_snapshot_replaces_state_and_survives_reopen() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_leader_log, mut leader) = open_at(leader_dir.path());
    leader
        .apply([three_voters(1), set(2, "x", "1"), set(3, "y", "2")])
        .await
        .unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    {
        let (_log, mut follower) = open_at(follower_dir.path());
        // State the snapshot must replace, not merge with.
        follower.apply([set(1, "stale", "0")]).await.unwrap();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        *receiving = *snapshot.snapshot.clone();
        follower
            .install_snapshot(&snapshot.meta, receiving)
            .await
            .unwrap();
        assert_eq!(
            follower.applied().data.as_ref(),
            leader.applied().data.as_ref()
        );
    }

    let (_log, mut follower) = open_at(follower_dir.path());
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    assert_eq!(
        follower.applied().data.as_ref(),
        leader.applied().data.as_ref()
    );
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
}

#[tokio::test]
async fn an_unreadable_snapshot_is_refused_and_the_old_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_at(dir.path());
    sm.apply([set(1, "k", "v")]).await.unwrap();
    let good = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let mut meta = good.meta.clone();
    meta.last_log_id = Some(log_id(2, 1, 9));
    meta.snapshot_id = "garbage".to_owned();
    let garbage = Box::new(Cursor::new(b"not json".to_vec()));
    assert!(sm.install_snapshot(&meta, garbage).await.is_err());

    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, good.meta);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 1)));
}

#[tokio::test]
async fn a_late_builder_does_not_roll_the_snapshot_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_at(dir.path());
    sm.apply([set(1, "k", "1")]).await.unwrap();
    let mut early = sm.get_snapshot_builder().await;
    sm.apply([set(2, "k", "2")]).await.unwrap();
    let late = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(late.meta.last_log_id, Some(log_id(1, 1, 2)));

    // The builder taken first sees the state it was taken at, but finishing last must not
    // replace the newer snapshot.
    let early = early.build_snapshot().await.unwrap();
    assert_eq!(early.meta.last_log_id, Some(log_id(1, 1, 1)));
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, late.meta);
    assert_ne!(early.meta.snapshot_id, late.meta.snapshot_id);
}

#[test]
fn a_second_open_reports_the_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open_at(dir.path());
    let err = open_with::<TestConfig>(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "controller data in {} is in use by another process",
            dir.path().display()
        )
    );
}

#[test]
fn an_undecodable_vote_reports_the_store_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("raft_meta")
            .unwrap()
            .insert("vote", "{not json")
            .unwrap();
        db.flush().unwrap();
    }
    let err = open_with::<TestConfig>(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let prefix = format!("controller data in {} is corrupt", dir.path().display());
    assert!(err.to_string().starts_with(&prefix), "{err}");
}

#[test]
fn an_entry_under_the_wrong_index_reports_the_store_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let entry = serde_json::to_vec(&set(7, "k", "v")).unwrap();
        db.open_tree("raft_log")
            .unwrap()
            .insert(3u64.to_be_bytes(), entry)
            .unwrap();
        db.flush().unwrap();
    }
    let err = open_with::<TestConfig>(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_damaged_database_file_is_reported_and_not_opened_silently() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_at(dir.path()));
    for name in ["conf", "db"] {
        std::fs::write(dir.path().join(name), b"this is not a sled file").unwrap();
    }
    let err = open_with::<TestConfig>(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

/// One operation on the log, for the model check.
#[derive(Debug, Clone)]
enum LogOp {
    /// Append `n` entries after the last one.
    Append(u64),
    /// Truncate from the index at this fraction (per mille) of the log on.
    Truncate(u64),
    /// Purge up to the index at this fraction (per mille) of the log (may pass its end).
    Purge(u64),
}

fn log_op() -> impl Strategy<Value = LogOp> {
    prop_oneof![
        3 => (1u64..5).prop_map(LogOp::Append),
        1 => (0u64..1000).prop_map(LogOp::Truncate),
        1 => (0u64..1200).prop_map(LogOp::Purge),
    ]
}

/// The log as openraft expects it to behave: entries by index, and the last purged id.
#[derive(Debug, Default)]
struct ModelLog {
    entries: BTreeMap<u64, LogId<u64>>,
    last_purged: Option<LogId<u64>>,
}

impl ModelLog {
    fn last(&self) -> Option<LogId<u64>> {
        self.entries
            .values()
            .next_back()
            .copied()
            .or(self.last_purged)
    }

    /// The index `per_mille` of the way from the first live index to the last one.
    fn index_at(&self, per_mille: u64) -> u64 {
        let first = self.last_purged.map_or(0, |l| l.index + 1);
        let last = self.last().map_or(0, |l| l.index);
        first + (last.saturating_sub(first) * per_mille) / 1000
    }
}

/// Runs `ops` on a store and on the model, comparing after each and after a reopen.
async fn check_log_against_model(ops: Vec<LogOp>) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = ModelLog::default();
    let mut term = 1;
    {
        let (mut log, _sm) = open_at(dir.path());
        for op in ops {
            match op {
                LogOp::Append(n) => {
                    let start = model.last().map_or(0, |l| l.index + 1);
                    let entries: Vec<_> = (start..start + n)
                        .map(|i| Entry {
                            log_id: log_id(term, 1, i),
                            payload: EntryPayload::Blank,
                        })
                        .collect();
                    for e in &entries {
                        model.entries.insert(e.log_id.index, e.log_id);
                    }
                    log.blocking_append(entries).await.unwrap();
                }
                LogOp::Truncate(per_mille) => {
                    let index = model.index_at(per_mille);
                    let Some(&at) = model.entries.get(&index) else {
                        continue;
                    };
                    model.entries.split_off(&index);
                    log.truncate(at).await.unwrap();
                    // A new leader's entries follow a truncation.
                    term += 1;
                }
                LogOp::Purge(per_mille) => {
                    let index = model.index_at(per_mille);
                    let past_end = match model.last() {
                        Some(last) => index > last.index,
                        None => true,
                    };
                    let id = match model.entries.get(&index) {
                        Some(&id) => id,
                        // Past the end: purging to a snapshot installed from the leader.
                        None if past_end => log_id(term, 1, index),
                        None => continue,
                    };
                    model.entries = model.entries.split_off(&(index + 1));
                    model.last_purged = Some(id);
                    log.purge(id).await.unwrap();
                }
            }
            compare(&mut log, &model).await;
        }
    }
    let (mut log, _sm) = open_at(dir.path());
    compare(&mut log, &model).await;
}

async fn compare(log: &mut Log, model: &ModelLog) {
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, model.last_purged);
    assert_eq!(state.last_log_id, model.last());
    let ids: Vec<_> = log
        .try_get_log_entries(..)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.log_id)
        .collect();
    let want: Vec<_> = model.entries.values().copied().collect();
    assert_eq!(ids, want);
    // A bounded read at the edges returns exactly the entries inside.
    if let (Some(&first), Some(&last)) = (
        model.entries.keys().next(),
        model.entries.keys().next_back(),
    ) {
        let got = log.try_get_log_entries(first..=last).await.unwrap();
        assert_eq!(got.len(), model.entries.len());
        let got = log.try_get_log_entries(first + 1..last).await.unwrap();
        assert_eq!(got.len() as u64, (last - first).saturating_sub(1));
        assert!(log
            .try_get_log_entries(last + 1..)
            .await
            .unwrap()
            .is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn log_matches_a_model_through_appends_truncations_and_purges(
        ops in proptest::collection::vec(log_op(), 1..24)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check_log_against_model(ops));
    }
}
