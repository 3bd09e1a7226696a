//! The controller's Raft storage: openraft 0.9's log storage and state machine on one sled
//! database, `<data-dir>/controller/`.
//!
//! - `types`: the node type ([`RaftNode`]), the [`StateMachineData`] trait the replicated
//!   state implements, [`StoreTypes`], the openraft type configs the storage is generic over,
//!   and [`TypeConfig`], the controller's (the metadata image's commands).
//! - [`LogStore`]: entries, vote, last purged and committed log ids (trees `raft_log`,
//!   `raft_meta`).
//! - [`StateMachineStore`]: the applied state in memory, the current snapshot in sled (tree
//!   `raft_snapshot`).
//!
//! The layout follows openraft's `examples/raft-kv-rocksdb`; openraft's storage conformance
//! suite runs against it in the tests.

// openraft's storage traits return its `StorageError` (over 200 bytes); the helpers here
// return the same type so `?` carries it unchanged.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;
mod types;

#[cfg(test)]
mod image_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::path::Path;
use std::path::PathBuf;

pub use log_store::LogStore;
pub use state_machine::AppliedState;
pub use state_machine::SnapshotBuilder;
pub use state_machine::StateMachineStore;
pub use types::RaftNode;
pub use types::StateMachineData;
pub use types::StoreTypes;
pub use types::TypeConfig;

/// Why the controller's data could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another open in this one) holds the database's lock.
    #[error("controller data in {} is in use by another process", path.display())]
    Locked {
        /// The database directory.
        path: PathBuf,
        /// sled's report.
        #[source]
        source: sled::Error,
    },
    /// The files are damaged or not a database this version can read.
    #[error("controller data in {} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// What was found wrong.
        detail: String,
    },
    /// The directory could not be created or read.
    #[error("controller data in {} cannot be opened: {source}", path.display())]
    Io {
        /// The database directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Opens (creating it if absent) the controller's sled database in `dir` — the node passes
/// `<data-dir>/controller` — and returns the log storage and the state machine (the metadata
/// image) to give `openraft::Raft::new`. The state machine starts from the current snapshot;
/// openraft replays the log after it.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    open_with::<TypeConfig>(dir)
}

/// [`open`] for any [`StoreTypes`] (the tests' small state machine).
pub fn open_with<C: StoreTypes>(
    dir: &Path,
) -> Result<(LogStore<C>, StateMachineStore<C>), StoreError> {
    let path = dir.to_path_buf();
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })?;
    let db = open_db(dir).map_err(|e| sled_error(&path, e))?;
    let corrupt = |e: openraft::StorageError<u64>| StoreError::Corrupt {
        path: path.clone(),
        detail: e.to_string(),
    };
    let log = LogStore::new(&db).map_err(|e| sled_error(&path, e))?;
    log.verify().map_err(corrupt)?;
    let state_machine = StateMachineStore::new(&db).map_err(corrupt)?;
    tracing::info!(
        dir = %dir.display(),
        last_applied = ?state_machine.applied().last_applied,
        "opened the controller's Raft storage"
    );
    Ok((log, state_machine))
}

/// Opens the sled database. sled releases its file lock from a background thread shortly
/// after the last handle is dropped, so a reopen in the same process (a restart of the
/// controller, tests) may briefly see the lock still held: retry for up to two seconds
/// before reporting that another process holds it.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(ref io))
                if io.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Sorts a sled error from opening the database into what the operator should do about it.
fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    let path = path.to_path_buf();
    match e {
        // sled reports a held lock as an I/O error of kind `Other` with this message.
        sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked { path, source: e }
        }
        sled::Error::Io(source) => StoreError::Io { path, source },
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path,
            detail: match at {
                Some(at) => format!("sled found damaged data at {at:?}"),
                None => "sled found damaged data".to_owned(),
            },
        },
        sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_)
        | sled::Error::CollectionNotFound(_) => StoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
    }
}
