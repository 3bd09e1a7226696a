//! The leader epoch cache of a partition log (Kafka's `LeaderEpochFileCache`,
//! KIP-101/KIP-279): leader epoch → offset of the first batch written in it.
//!
//! A follower asks its leader where its latest epoch ends in the leader's log and
//! truncates a divergent tail there, instead of trusting the high watermark. The
//! cache lives in `<partition-dir>/leader-epoch-checkpoint`, in Kafka's text format,
//! rewritten atomically whenever an epoch starts or a truncation drops entries.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StorageError};
use crate::log::sync_dir;

pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
pub(crate) const LEADER_EPOCH_TMP: &str = "leader-epoch-checkpoint.tmp";
/// Version line of the checkpoint file (Kafka writes 0).
const CHECKPOINT_VERSION: u32 = 0;

/// Kafka's `UNDEFINED_EPOCH`: no leader epoch (also the epoch of a batch written
/// without one).
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// Ordered `(epoch, start_offset)` entries, strictly increasing in both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// `(epoch, start_offset)` pairs, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that a batch of `epoch` starts at `start_offset`; called for every
    /// appended batch, so only a new, larger epoch adds an entry. Batches without an
    /// epoch (negative) and older or equal epochs are ignored (an older one is logged:
    /// a leader never writes below its latest epoch). Returns whether entries changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(&(latest, latest_start)) = self.entries.last() {
            if epoch < latest {
                tracing::warn!(
                    epoch,
                    start_offset,
                    latest_epoch = latest,
                    latest_start,
                    "ignoring a batch with a leader epoch older than the latest"
                );
            }
            if epoch <= latest {
                return false;
            }
        }
        // Entries at or past the new start describe data that was never written
        // (an append that failed after its epoch was recorded): Kafka drops them too.
        while self.entries.last().is_some_and(|e| e.1 >= start_offset) {
            let dropped = self.entries.pop().expect("checked");
            tracing::warn!(
                epoch,
                start_offset,
                dropped_epoch = dropped.0,
                dropped_start = dropped.1,
                "new leader epoch replaces an entry that starts at or after it"
            );
        }
        self.entries.push((epoch, start_offset));
        true
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Where `requested` epoch ends in this log: [`end_offset_for`] over this cache.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        end_offset_for(&self.entries, requested, log_end_offset)
    }

    /// Epoch of the batch holding `offset`: the largest entry starting at or before it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let i = self.entries.partition_point(|e| e.1 <= offset);
        i.checked_sub(1).map(|i| self.entries[i].0)
    }

    /// After the log was truncated to end at `end_offset`: drops epochs starting at or
    /// after it. Returns whether entries changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self.entries.partition_point(|e| e.1 < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// After the log start moved to `start_offset` (retention): drops epochs wholly
    /// before it and moves the start of the epoch covering it up to `start_offset`, so
    /// the first entry never points below the log (Kafka's `truncateFromStart`).
    /// Returns whether entries changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self.entries.partition_point(|e| e.1 <= start_offset);
        let Some(first) = covering.checked_sub(1) else {
            return false;
        };
        let changed = first > 0 || self.entries[first].1 != start_offset;
        self.entries.drain(..first);
        self.entries[0].1 = start_offset;
        changed
    }

    /// Forgets every epoch (the log was emptied). Returns whether entries changed.
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's checkpoint text: version, count, then `epoch offset` lines.
    pub(crate) fn to_checkpoint(&self) -> String {
        let mut s = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            s.push_str(&format!("{epoch} {offset}\n"));
        }
        s
    }

    /// Parses [`Self::to_checkpoint`]'s format; `None` if anything is off (unknown
    /// version, wrong count, entries not strictly increasing or negative).
    pub(crate) fn parse_checkpoint(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()?.trim().parse::<u32>().ok()? != CHECKPOINT_VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut entries: Vec<(i32, i64)> = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let mut parts = lines.next()?.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let offset: i64 = parts.next()?.parse().ok()?;
            if parts.next().is_some() || epoch < 0 || offset < 0 {
                return None;
            }
            if entries
                .last()
                .is_some_and(|l| l.0 >= epoch || l.1 >= offset)
            {
                return None;
            }
            entries.push((epoch, offset));
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(LeaderEpochCache { entries })
    }
}

/// Reads the checkpoint: `None` if the file is missing, `Some(None)` if it is
/// present but unreadable.
pub(crate) fn read_checkpoint(
    dir: &Path,
) -> Result<Option<Option<LeaderEpochCache>>, StorageError> {
    let path = dir.join(LEADER_EPOCH_FILE);
    match fs::read(&path) {
        Ok(raw) => Ok(Some(
            std::str::from_utf8(&raw)
                .ok()
                .and_then(LeaderEpochCache::parse_checkpoint),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

/// Writes the checkpoint atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_checkpoint(dir: &Path, cache: &LeaderEpochCache) -> Result<(), StorageError> {
    let tmp = dir.join(LEADER_EPOCH_TMP);
    let dst = dir.join(LEADER_EPOCH_FILE);
    {
        let mut f = fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        crate::failpoints::inject(crate::failpoints::CHECKPOINT_WRITE)
            .and_then(|()| f.write_all(cache.to_checkpoint().as_bytes()))
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("fsync of {}", tmp.display()))?;
    }
    fs::rename(&tmp, &dst).ctx(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
    sync_dir(dir)
}

/// Kafka's `LeaderEpochFileCache.endOffsetFor` over `(epoch, start offset)` entries: the
/// newest epoch at or below `requested` and the offset where it ends.
/// - the latest epoch ends at the log end;
/// - an older epoch ends where the next larger epoch starts; a missing epoch maps to the
///   newest one below it, or to itself when there is none (ending at the first start, so a
///   follower truncates to where the leader's log begins);
/// - an epoch above every known one, a negative one, or any epoch of an empty cache is
///   UNDEFINED `(-1, -1)`: the asker falls back to its high watermark.
pub fn end_offset_for(entries: &[(i32, i64)], requested: i32, log_end_offset: i64) -> (i32, i64) {
    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
    if requested < 0 {
        return UNDEFINED;
    }
    if entries.last().is_some_and(|&(e, _)| e == requested) {
        return (requested, log_end_offset);
    }
    // The first entry with a larger epoch; none means `requested` is above them all.
    let next = entries.partition_point(|&(e, _)| e <= requested);
    let Some(&(_, next_start)) = entries.get(next) else {
        return UNDEFINED;
    };
    let epoch = next.checked_sub(1).map_or(requested, |i| entries[i].0);
    (epoch, next_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn empty_cache_answers_nothing() {
        let mut c = LeaderEpochCache::new();
        assert!(c.is_empty());
        assert_eq!(c.latest_epoch(), None);
        assert_eq!(c.end_offset_for(0, 10), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 10), (-1, -1));
        assert_eq!(c.epoch_for_offset(0), None);
        assert!(!c.truncate_from_end(0));
        assert!(!c.truncate_from_start(5));
        assert!(!c.clear());
        assert!(c.is_empty());
    }

    #[test]
    fn assign_adds_only_new_larger_epochs() {
        let mut c = LeaderEpochCache::new();
        assert!(!c.assign(-1, 0), "a batch without an epoch");
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5), "same epoch, later batch");
        assert!(!c.assign(0, 0));
        assert!(c.assign(2, 10));
        assert!(!c.assign(1, 12), "older epoch");
        assert!(!c.assign(-1, 13));
        assert!(c.assign(5, 20));
        assert_eq!(c.entries(), &[(0, 0), (2, 10), (5, 20)]);
        assert_eq!(c.latest_epoch(), Some(5));
        // A larger epoch at or below an existing start replaces the entries there.
        assert!(c.assign(6, 20));
        assert_eq!(c.entries(), &[(0, 0), (2, 10), (6, 20)]);
        assert!(c.assign(7, 5));
        assert_eq!(c.entries(), &[(0, 0), (7, 5)]);
    }

    #[test]
    fn end_offset_for_with_gaps_in_epochs() {
        let c = cache(&[(0, 0), (2, 10), (5, 20)]);
        let leo = 30;
        assert_eq!(c.end_offset_for(5, leo), (5, 30));
        assert_eq!(c.end_offset_for(9, leo), (-1, -1), "above latest");
        assert_eq!(c.end_offset_for(4, leo), (2, 20));
        assert_eq!(c.end_offset_for(3, leo), (2, 20));
        assert_eq!(c.end_offset_for(2, leo), (2, 20));
        assert_eq!(c.end_offset_for(1, leo), (0, 10));
        assert_eq!(c.end_offset_for(0, leo), (0, 10));
        assert_eq!(c.end_offset_for(-1, leo), (-1, -1));
    }

    #[test]
    fn end_offset_for_below_first_epoch_ends_at_the_first_start() {
        let c = cache(&[(3, 100), (4, 150)]);
        assert_eq!(c.end_offset_for(2, 200), (2, 100));
        assert_eq!(c.end_offset_for(3, 200), (3, 150));
        assert_eq!(c.end_offset_for(4, 200), (4, 200));
        let single = cache(&[(3, 100)]);
        assert_eq!(single.end_offset_for(2, 120), (2, 100));
        assert_eq!(single.end_offset_for(3, 120), (3, 120));
    }

    #[test]
    fn epoch_for_offset_finds_the_covering_entry() {
        let c = cache(&[(0, 0), (2, 10), (5, 20)]);
        assert_eq!(c.epoch_for_offset(0), Some(0));
        assert_eq!(c.epoch_for_offset(9), Some(0));
        assert_eq!(c.epoch_for_offset(10), Some(2));
        assert_eq!(c.epoch_for_offset(19), Some(2));
        assert_eq!(c.epoch_for_offset(20), Some(5));
        assert_eq!(c.epoch_for_offset(1_000), Some(5));
        let late = cache(&[(1, 50)]);
        assert_eq!(late.epoch_for_offset(49), None);
        assert_eq!(late.epoch_for_offset(-1), None);
    }

    #[test]
    fn truncate_from_end() {
        let mut c = cache(&[(0, 0), (2, 10), (5, 20)]);
        assert!(!c.truncate_from_end(25), "inside the latest epoch");
        assert!(!c.truncate_from_end(21));
        assert!(c.truncate_from_end(20), "exactly at an entry's start");
        assert_eq!(c.entries(), &[(0, 0), (2, 10)]);
        assert!(c.truncate_from_end(5));
        assert_eq!(c.entries(), &[(0, 0)]);
        assert!(c.truncate_from_end(0));
        assert!(c.is_empty());
        let mut c = cache(&[(0, 0), (2, 10), (5, 20)]);
        assert!(c.truncate_from_end(11));
        assert_eq!(c.entries(), &[(0, 0), (2, 10)]);
    }

    #[test]
    fn truncate_from_start() {
        let mut c = cache(&[(0, 0), (2, 10), (5, 20)]);
        assert!(!c.truncate_from_start(0), "at the first start");
        assert!(c.truncate_from_start(4), "inside the first epoch");
        assert_eq!(c.entries(), &[(0, 4), (2, 10), (5, 20)]);
        assert!(c.truncate_from_start(10), "exactly at an entry's start");
        assert_eq!(c.entries(), &[(2, 10), (5, 20)]);
        assert!(c.truncate_from_start(25), "inside the latest epoch");
        assert_eq!(c.entries(), &[(5, 25)]);
        assert!(!c.truncate_from_start(25));
        assert!(
            c.truncate_from_start(100),
            "past the end: the latest epoch stays"
        );
        assert_eq!(c.entries(), &[(5, 100)]);
        // A start before every entry leaves the cache alone.
        let mut c = cache(&[(3, 50)]);
        assert!(!c.truncate_from_start(10));
        assert_eq!(c.entries(), &[(3, 50)]);
        assert!(c.clear());
        assert!(c.is_empty());
    }

    #[test]
    fn checkpoint_text_round_trips_and_rejects_garbage() {
        let c = cache(&[(0, 0), (2, 10), (5, 20)]);
        let text = c.to_checkpoint();
        assert_eq!(text, "0\n3\n0 0\n2 10\n5 20\n");
        assert_eq!(LeaderEpochCache::parse_checkpoint(&text), Some(c));
        let empty = LeaderEpochCache::new();
        assert_eq!(empty.to_checkpoint(), "0\n0\n");
        assert_eq!(
            LeaderEpochCache::parse_checkpoint("0\n0\n"),
            Some(empty.clone())
        );
        for bad in [
            "",
            "0\n",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n2\n1 0\n1 5\n",
            "0\n2\n1 5\n2 5\n",
            "0\n2\n2 0\n1 5\n",
            "0\n1\n-1 0\n",
            "0\n1\n0 -3\n",
            "0\n1\n0 0 7\n",
            "0\n1\n0\n",
            "0\n1\nx 0\n",
            "garbage",
        ] {
            assert_eq!(LeaderEpochCache::parse_checkpoint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn checkpoint_file_round_trips() {
        let tmp = tempfile::TempDir::new().unwrap();
        assert!(read_checkpoint(tmp.path()).unwrap().is_none());
        let c = cache(&[(1, 0), (4, 7)]);
        write_checkpoint(tmp.path(), &c).unwrap();
        assert!(!tmp.path().join(LEADER_EPOCH_TMP).exists());
        assert_eq!(read_checkpoint(tmp.path()).unwrap(), Some(Some(c)));
        fs::write(tmp.path().join(LEADER_EPOCH_FILE), [0xff, 0xfe]).unwrap();
        assert_eq!(read_checkpoint(tmp.path()).unwrap(), Some(None));
    }
}
