//! A segment's sparse index file, generic over its entry kind: the `.index` (relative offset
//! → file position) and the `.timeindex` (timestamp → relative offset) share the file
//! handling, the loading and its checks, and differ only in their entries' encoding and
//! bounds.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{IoContext, StorageError};
use crate::failpoints;

/// One entry of a sparse index file: fixed size, big-endian, both fields strictly increasing
/// from one entry to the next.
pub(crate) trait IndexEntry: Copy {
    /// Bytes per entry in the file.
    const SIZE: usize;
    /// What the file is called in log lines ("offset index", "time index").
    const NAME: &'static str;
    /// The log line when the entries do not pass the checks of [`SparseIndex::load`].
    const INVALID: &'static str;
    /// The failpoint of writing an entry.
    const FAILPOINT: &'static str;
    fn encode(&self, out: &mut [u8]);
    fn decode(raw: &[u8]) -> Self;
    /// Whether `next` may follow `self` in the file.
    fn precedes(&self, next: &Self) -> bool;
}

/// Offset index entry: (offset relative to the segment base, file position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) rel: u32,
    pub(crate) position: u32,
}

/// Time index entry: (timestamp, relative offset of the batch holding it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) rel: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    const NAME: &'static str = "offset index";
    const INVALID: &'static str =
        "offset index entries are out of order or beyond the log, rebuilding";
    const FAILPOINT: &'static str = failpoints::OFFSET_INDEX_WRITE;

    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.rel.to_be_bytes());
        out[4..].copy_from_slice(&self.position.to_be_bytes());
    }

    fn decode(raw: &[u8]) -> Self {
        OffsetEntry {
            rel: u32::from_be_bytes(raw[..4].try_into().expect("4")),
            position: u32::from_be_bytes(raw[4..].try_into().expect("4")),
        }
    }

    fn precedes(&self, next: &Self) -> bool {
        self.rel < next.rel && self.position < next.position
    }
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    const NAME: &'static str = "time index";
    const INVALID: &'static str = "time index is empty or its entries are out of order, rebuilding";
    const FAILPOINT: &'static str = failpoints::TIME_INDEX_WRITE;

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..].copy_from_slice(&self.rel.to_be_bytes());
    }

    fn decode(raw: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(raw[..8].try_into().expect("8")),
            rel: u32::from_be_bytes(raw[8..].try_into().expect("4")),
        }
    }

    fn precedes(&self, next: &Self) -> bool {
        self.timestamp < next.timestamp && self.rel < next.rel
    }
}

/// An index file and its entries in memory. The file's path is not kept: a cleaned segment's
/// files are renamed under it, so callers name the current path for error messages.
pub(crate) struct SparseIndex<E> {
    file: File,
    entries: Vec<E>,
}

impl<E: IndexEntry> SparseIndex<E> {
    /// An index over `file` with no entries in memory yet.
    pub(crate) fn new(file: File) -> Self {
        SparseIndex {
            file,
            entries: Vec::new(),
        }
    }

    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&E) -> bool) {
        self.entries.retain(keep);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets entries past the first `len`, in memory and in the file.
    pub(crate) fn truncate(&mut self, len: usize, path: &Path) -> Result<(), StorageError> {
        self.entries.truncate(len);
        self.file
            .set_len((len * E::SIZE) as u64)
            .ctx(|| format!("truncating {}", path.display()))
    }

    /// Adds an entry in memory only; [`SparseIndex::write_last`] or
    /// [`SparseIndex::write_all`] persists it.
    pub(crate) fn push(&mut self, e: E) {
        self.entries.push(e);
    }

    /// Writes the last in-memory entry at its place in the file.
    pub(crate) fn write_last(&self, path: &Path) -> Result<(), StorageError> {
        let Some(e) = self.entries.last() else {
            return Ok(());
        };
        let mut raw = vec![0u8; E::SIZE];
        e.encode(&mut raw);
        let at = ((self.entries.len() - 1) * E::SIZE) as u64;
        failpoints::inject(E::FAILPOINT)
            .and_then(|()| self.file.write_all_at(&raw, at))
            .ctx(|| format!("writing {}", path.display()))
    }

    /// Replaces the file's contents with the in-memory entries.
    pub(crate) fn write_all(&self, path: &Path) -> Result<(), StorageError> {
        let mut raw = vec![0u8; self.entries.len() * E::SIZE];
        for (e, out) in self.entries.iter().zip(raw.chunks_exact_mut(E::SIZE)) {
            e.encode(out);
        }
        self.file
            .set_len(0)
            .ctx(|| format!("truncating {}", path.display()))?;
        self.file
            .write_all_at(&raw, 0)
            .ctx(|| format!("writing {}", path.display()))
    }

    pub(crate) fn sync(&self, path: &Path) -> Result<(), StorageError> {
        failpoints::inject(failpoints::INDEX_FSYNC)
            .and_then(|()| self.file.sync_data())
            .ctx(|| format!("fsync of {}", path.display()))
    }

    /// Reads the file's entries without installing them. `Ok(None)` (with a warning) when the
    /// file is not whole entries, or they are out of order, or `valid` refuses them: the
    /// caller then rebuilds the index from the log.
    pub(crate) fn load(
        &self,
        path: &Path,
        valid: impl FnOnce(&[E]) -> bool,
    ) -> Result<Option<Vec<E>>, StorageError> {
        let len = self
            .file
            .metadata()
            .ctx(|| format!("reading size of {}", path.display()))?
            .len();
        let mut raw = vec![0; len as usize];
        self.file
            .read_exact_at(&mut raw, 0)
            .ctx(|| format!("reading {}", path.display()))?;
        if !raw.len().is_multiple_of(E::SIZE) {
            tracing::warn!(segment = %path.display(), bytes = raw.len(), "{} size is not a multiple of {}, rebuilding", E::NAME, E::SIZE);
            return Ok(None);
        }
        let entries: Vec<E> = raw.chunks_exact(E::SIZE).map(E::decode).collect();
        if !(entries.windows(2).all(|w| w[0].precedes(&w[1])) && valid(&entries)) {
            tracing::warn!(segment = %path.display(), "{}", E::INVALID);
            return Ok(None);
        }
        Ok(Some(entries))
    }

    /// Installs entries returned by [`SparseIndex::load`].
    pub(crate) fn set_entries(&mut self, entries: Vec<E>) {
        self.entries = entries;
    }
}
