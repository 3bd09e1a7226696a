//! The Raft log, the vote and the commit point, in two sled trees.
//!
//! - `raft_log`: one entry per key, the key the entry's index as 8 big-endian bytes (so sled's
//!   byte order is index order), the value the entry as JSON.
//! - `raft_meta`: the vote, the last purged log id and the committed log id, each as JSON.
//!
//! Durability: `append` and `save_vote` return (and `append` reports the entries flushed) only
//! after sled has flushed them, because a follower that acknowledges an entry or a vote must
//! still have it after a crash. `truncate` flushes too. `purge` and `save_committed` do not: a
//! lost purge only leaves entries openraft no longer needs, and a lost commit point is learned
//! again from the leader. sled recovers a prefix of its writes in order, so a commit point on
//! disk never points past entries that are not.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;

use openraft::storage::LogFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::AnyError;
use openraft::Entry;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageIOError;
use openraft::Vote;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::ConflictableTransactionError;
use sled::transaction::TransactionError;
use sled::Transactional;

use super::types::StorageResult;
use super::types::StoreTypes;
use super::types::TypeConfig;

/// Name of the tree holding the entries.
const LOG_TREE: &str = "raft_log";
/// Name of the tree holding the vote, the last purged and the committed log ids.
const META_TREE: &str = "raft_meta";
/// Key of the vote in [`META_TREE`].
const VOTE_KEY: &[u8] = b"vote";
/// Key of the last purged log id in [`META_TREE`].
const LAST_PURGED_KEY: &[u8] = b"last_purged";
/// Key of the committed log id in [`META_TREE`].
const COMMITTED_KEY: &[u8] = b"committed";

/// openraft's log storage on sled. Cloning is cheap and shares the same trees: openraft reads
/// the log through clones (one per replication stream) while the original appends.
pub struct LogStore<C = TypeConfig> {
    /// The database, to flush it: sled's trees share one write-ahead log, so flushing the db
    /// persists every tree.
    db: sled::Db,
    /// The entries, keyed by big-endian index.
    log: sled::Tree,
    /// The vote, the last purged and the committed log ids.
    meta: sled::Tree,
    /// The type config the entries are decoded with; `fn() -> C` keeps the store `Send + Sync`
    /// whatever `C` is.
    _types: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            _types: PhantomData,
        }
    }
}

impl<C> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // sled counts a tree's entries by scanning it, so no count here.
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl<C: StoreTypes> LogStore<C> {
    /// Opens (creating if absent) the log trees in `db`.
    pub(crate) fn new(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree(LOG_TREE)?,
            meta: db.open_tree(META_TREE)?,
            _types: PhantomData,
        })
    }

    /// Reads everything that is read on start (the vote, the purged and committed log ids,
    /// the first and last entries) so a damaged store is reported when it is opened rather
    /// than at the first election.
    pub(crate) fn verify(&self) -> StorageResult<()> {
        self.read_vote_()?;
        self.read_meta::<LogId<u64>>(LAST_PURGED_KEY)?;
        self.read_meta::<LogId<u64>>(COMMITTED_KEY)?;
        for item in [self.log.first(), self.log.last()] {
            if let Some((key, value)) = item.map_err(|e| StorageIOError::read_logs(&e))? {
                decode_entry::<C>(&key, &value)?;
            }
        }
        Ok(())
    }

    /// Reads a JSON value from the meta tree.
    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let Some(bytes) = self.meta.get(key).map_err(|e| StorageIOError::read(&e))? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read(&e))?;
        Ok(Some(value))
    }

    /// Writes a JSON value into the meta tree (not flushed).
    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    /// The stored vote.
    fn read_vote_(&self) -> StorageResult<Option<Vote<u64>>> {
        let Some(bytes) = self
            .meta
            .get(VOTE_KEY)
            .map_err(|e| StorageIOError::read_vote(&e))?
        else {
            return Ok(None);
        };
        let vote = serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_vote(&e))?;
        Ok(Some(vote))
    }

    /// Flushes every tree to disk.
    async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }

    /// The keys of the entries in `range`, in index order.
    fn keys_in(&self, range: impl RangeBounds<[u8; 8]>) -> StorageResult<Vec<sled::IVec>> {
        self.log
            .range(range)
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl<C: StoreTypes> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<C>>> {
        // Turn the index range into a half-open key range, empty when the bounds cross.
        let start = match range.start_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        let Some(start) = start else {
            return Ok(Vec::new());
        };
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.log.range(index_key(start)..index_key(end)),
            None => self.log.range(index_key(start)..),
        };
        iter.map(|item| {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            decode_entry::<C>(&key, &value)
        })
        .collect()
    }
}

impl<C: StoreTypes> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<C>> {
        let last_purged_log_id = self.read_meta::<LogId<u64>>(LAST_PURGED_KEY)?;
        let last_entry = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((key, value)) => Some(decode_entry::<C>(&key, &value)?.log_id),
            None => None,
        };
        // Purging everything leaves no entry; the last log id is then the purged one.
        let last_log_id = last_entry.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.meta
            .insert(VOTE_KEY, bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        // A vote granted must survive a crash, or this node could vote twice in one term.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.read_vote_()
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        match committed {
            Some(log_id) => self.write_meta(COMMITTED_KEY, &log_id),
            None => {
                self.meta
                    .remove(COMMITTED_KEY)
                    .map_err(|e| StorageIOError::write(&e))?;
                Ok(())
            }
        }
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        self.read_meta(COMMITTED_KEY)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let value = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&index_key(entry.log_id.index), value);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;

        // Only entries on disk may be reported flushed: the leader counts this report toward
        // the quorum that commits them.
        match self.flush().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        tracing::debug!(%log_id, "truncating the controller log from this entry on");
        let mut batch = sled::Batch::default();
        for key in self.keys_in(index_key(log_id.index)..)? {
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        tracing::debug!(%log_id, "purging the controller log up to this entry");
        let keys = self.keys_in(..=index_key(log_id.index))?;
        let purged = serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        // One transaction, so a crash never leaves the purged id behind the entries removed
        // (or entries at or below it still present).
        (&self.log, &self.meta)
            .transaction(|(log, meta)| {
                meta.insert(LAST_PURGED_KEY, purged.as_slice())?;
                for key in &keys {
                    log.remove(key)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StorageIOError::write_logs(&e),
                TransactionError::Abort(()) => {
                    StorageIOError::write_logs(AnyError::error("purge transaction aborted"))
                }
            })?;
        Ok(())
    }
}

/// The sled key of the entry at `index`: big-endian, so keys sort like indexes.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Decodes a stored entry and checks it sits under its own index.
fn decode_entry<C: StoreTypes>(key: &[u8], value: &[u8]) -> StorageResult<Entry<C>> {
    let index = <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| {
            StorageIOError::read_logs(AnyError::error(format!(
                "log key of {} bytes, expected 8",
                key.len()
            )))
        })?;
    let entry: Entry<C> =
        serde_json::from_slice(value).map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
    if entry.log_id.index != index {
        return Err(StorageIOError::read_log_at_index(
            index,
            AnyError::error(format!("entry {} stored under index {index}", entry.log_id)),
        )
        .into());
    }
    Ok(entry)
}
