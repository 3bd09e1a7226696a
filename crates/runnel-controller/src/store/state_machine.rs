//! The state machine: the applied state in memory, its snapshots in sled.
//!
//! The applied state (last applied log id, last membership, the data) lives in memory only. A
//! snapshot is the data serialized as JSON; the current one is kept in the `raft_snapshot` tree
//! (its meta and its bytes, written together) and flushed before it is reported built or
//! installed, because openraft purges the log up to a snapshot it has been told about. On open
//! the state machine starts from the current snapshot and openraft replays the log after it
//! (up to the saved commit point, then whatever the leader commits).
//!
//! The data sits behind an `Arc`: snapshot builders and readers of the applied state take a
//! clone of the `Arc`, and `apply` copies the data only if one of them still holds the old one
//! (`Arc::make_mut`).

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::storage::Snapshot;
use openraft::AnyError;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::SnapshotMeta;
use openraft::StorageIOError;
use openraft::StoredMembership;
use sled::transaction::ConflictableTransactionError;
use sled::transaction::TransactionError;
use tokio::sync::watch;

use super::types::RaftNode;
use super::types::StateMachineData;
use super::types::StorageResult;
use super::types::StoreTypes;
use super::types::TypeConfig;
use crate::image::MetadataImage;

/// Name of the tree holding the current snapshot.
const SNAPSHOT_TREE: &str = "raft_snapshot";
/// Key of the current snapshot's meta (JSON) in [`SNAPSHOT_TREE`].
const SNAPSHOT_META_KEY: &[u8] = b"meta";
/// Key of the current snapshot's bytes in [`SNAPSHOT_TREE`].
const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// Snapshot meta as openraft defines it for our node type.
type Meta = SnapshotMeta<u64, RaftNode>;

/// The state after applying the log up to `last_applied`, as the rest of the controller sees
/// it (through [`StateMachineStore::subscribe`]).
#[derive(Debug)]
pub struct AppliedState<D = MetadataImage> {
    /// The last entry applied, `None` before the first; brokers compare it with the leader's
    /// to know they have caught up with the metadata log.
    pub last_applied: Option<LogId<u64>>,
    /// The last membership applied: the voters and learners with their addresses.
    pub last_membership: StoredMembership<u64, RaftNode>,
    /// The replicated data (the metadata image), shared, never mutated once published.
    pub data: Arc<D>,
}

// By hand: a derive would require `D: Clone`, which sharing through `Arc` does not need.
impl<D> Clone for AppliedState<D> {
    fn clone(&self) -> Self {
        Self {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            data: Arc::clone(&self.data),
        }
    }
}

impl<D: Default> Default for AppliedState<D> {
    fn default() -> Self {
        Self {
            last_applied: None,
            last_membership: StoredMembership::default(),
            data: Arc::default(),
        }
    }
}

/// openraft's state machine over a [`StateMachineData`], with snapshots in sled.
pub struct StateMachineStore<C: StoreTypes = TypeConfig> {
    /// The applied state, changed by `apply` and `install_snapshot` only.
    state: AppliedState<C::Data>,
    /// Publishes `state` after every change, for the rest of the controller to read.
    published: watch::Sender<AppliedState<C::Data>>,
    /// Where snapshots are stored (and their ids generated).
    snapshots: SnapshotFiles,
}

impl<C: StoreTypes> Debug for StateMachineStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("last_applied", &self.state.last_applied)
            .field("last_membership", &self.state.last_membership)
            .finish_non_exhaustive()
    }
}

impl<C: StoreTypes> StateMachineStore<C> {
    /// Opens the snapshot tree in `db` and restores the state from the current snapshot, if
    /// there is one.
    pub(crate) fn new(db: &sled::Db) -> StorageResult<Self> {
        let snapshots = SnapshotFiles {
            db: db.clone(),
            tree: db
                .open_tree(SNAPSHOT_TREE)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?,
        };
        let state = match snapshots.current()? {
            Some((meta, bytes)) => restore::<C::Data>(&meta, &bytes)?,
            None => AppliedState::default(),
        };
        let (published, _) = watch::channel(state.clone());
        Ok(Self {
            state,
            published,
            snapshots,
        })
    }

    /// The applied state now and after every change: a broker watches it to follow the
    /// metadata image. Holding a value for long makes the next `apply` copy the data once.
    pub fn subscribe(&self) -> watch::Receiver<AppliedState<C::Data>> {
        self.published.subscribe()
    }

    /// The applied state now.
    pub fn applied(&self) -> &AppliedState<C::Data> {
        &self.state
    }

    /// Tells subscribers about the current state.
    fn publish(&self) {
        self.published.send_replace(self.state.clone());
    }
}

impl<C: StoreTypes> RaftStateMachine<C> for StateMachineStore<C> {
    type SnapshotBuilder = SnapshotBuilder<C>;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, RaftNode>)> {
        Ok((self.state.last_applied, self.state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<C::R>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            self.state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => C::Data::response_without_command(),
                EntryPayload::Normal(command) => {
                    Arc::make_mut(&mut self.state.data).apply(&command)
                }
                EntryPayload::Membership(membership) => {
                    self.state.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    C::Data::response_without_command()
                }
            };
            responses.push(response);
        }
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        // Decode before storing: a snapshot that cannot be read must not replace a good one.
        let state = restore::<C::Data>(meta, &bytes)?;
        self.snapshots.store(meta, &bytes, Replace::Always).await?;
        tracing::info!(snapshot = %meta, "installed a controller snapshot");
        self.state = state;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<C>>> {
        Ok(self.snapshots.current()?.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Builds a snapshot of the state as it was when openraft asked for the builder, while the
/// state machine goes on applying.
pub struct SnapshotBuilder<C: StoreTypes = TypeConfig> {
    /// The state to snapshot (sharing the data with the state machine until it changes).
    state: AppliedState<C::Data>,
    /// Where the snapshot is stored.
    snapshots: SnapshotFiles,
}

impl<C: StoreTypes> RaftSnapshotBuilder<C> for SnapshotBuilder<C> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<C>> {
        let bytes = serde_json::to_vec(&*self.state.data)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        // sled's generated ids grow across restarts, so ids never repeat.
        let sequence = self
            .snapshots
            .db
            .generate_id()
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match self.state.last_applied {
            Some(log_id) => format!("{}-{}-{sequence}", log_id.leader_id, log_id.index),
            None => format!("none-{sequence}"),
        };
        let meta = Meta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.last_membership.clone(),
            snapshot_id,
        };
        self.snapshots
            .store(&meta, &bytes, Replace::IfNotOlder)
            .await?;
        tracing::info!(snapshot = %meta, size = bytes.len(), "built a controller snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

/// When storing a snapshot replaces the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Always (installing a snapshot from the leader: the state is now that snapshot's).
    Always,
    /// Unless the current one covers more of the log (a builder that started before another
    /// one finished, or before a snapshot was installed, must not roll the snapshot back).
    IfNotOlder,
}

/// The sled tree holding the current snapshot.
#[derive(Clone)]
struct SnapshotFiles {
    /// The database, to flush it and to generate snapshot ids.
    db: sled::Db,
    /// The snapshot tree: meta and bytes under two keys, always written together.
    tree: sled::Tree,
}

impl SnapshotFiles {
    /// The current snapshot's meta and bytes.
    fn current(&self) -> StorageResult<Option<(Meta, Vec<u8>)>> {
        let read = |key: &[u8]| {
            self.tree
                .get(key)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))
        };
        let (meta, bytes) = match (read(SNAPSHOT_META_KEY)?, read(SNAPSHOT_DATA_KEY)?) {
            (None, None) => return Ok(None),
            (Some(meta), Some(bytes)) => (meta, bytes),
            _ => {
                return Err(StorageIOError::read_snapshot(
                    None,
                    AnyError::error("snapshot meta and data are not both present"),
                )
                .into())
            }
        };
        let meta: Meta =
            serde_json::from_slice(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some((meta, bytes.to_vec())))
    }

    /// Stores a snapshot as the current one (subject to `replace`) and flushes it.
    async fn store(&self, meta: &Meta, bytes: &[u8], replace: Replace) -> StorageResult<()> {
        let signature = || Some(meta.signature());
        let meta_bytes = serde_json::to_vec(meta)
            .map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
        self.tree
            .transaction(|tree| {
                if replace == Replace::IfNotOlder {
                    if let Some(current) = tree.get(SNAPSHOT_META_KEY)? {
                        let current: Meta = serde_json::from_slice(&current)
                            .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
                        if current.last_log_id > meta.last_log_id {
                            return Ok(());
                        }
                    }
                }
                tree.insert(SNAPSHOT_META_KEY, meta_bytes.as_slice())?;
                tree.insert(SNAPSHOT_DATA_KEY, bytes)?;
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StorageIOError::write_snapshot(signature(), &e),
                TransactionError::Abort(reason) => StorageIOError::write_snapshot(
                    signature(),
                    AnyError::error(format!("current snapshot meta is unreadable: {reason}")),
                ),
            })?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
        Ok(())
    }
}

/// The applied state a snapshot holds.
fn restore<D: StateMachineData>(meta: &Meta, bytes: &[u8]) -> StorageResult<AppliedState<D>> {
    let data: D = serde_json::from_slice(bytes)
        .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
    Ok(AppliedState {
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership.clone(),
        data: Arc::new(data),
    })
}
