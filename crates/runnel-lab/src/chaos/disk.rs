//! Disk faults on a killed local node's data dir: a replaced disk (everything deleted) and
//! the loss of what was never fsynced, the way Jepsen's LazyFS drops unsynced writes at a
//! power loss. Works on the files alone, as a power loss would: the node is down.
//!
//! What counts as fsynced: a partition log fsyncs its segments only in `flush` (after
//! `flush.messages` records, every `flush.ms`, at a clean shutdown), and writes the log end
//! it has just fsynced to the partition's `recovery-point` file (itself fsynced and renamed
//! into place). Rolling a segment does not fsync. So everything below the recovery point is
//! on disk, and everything at or above it may be lost; without the file nothing was ever
//! fsynced. A cut keeps a prefix of the log: all unsynced batches go (what LazyFS does), or,
//! for a seeded half of the partitions, the unsynced batches after a random batch boundary
//! (the page cache wrote some of them back by itself). Index files of the cut segment are
//! deleted, and recovery rebuilds them (it scans every segment from the recovery point on).
//! Producer-state snapshots past the cut go too (periodic ones are not fsynced). Controller
//! state (the Raft log) and the checkpoint files are left as they are.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rand::Rng;
use serde::Serialize;

const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Bytes of a record batch header before `lastOffsetDelta` (baseOffset, batchLength,
/// partitionLeaderEpoch, magic, crc, attributes), and the length prefix's end.
const LAST_OFFSET_DELTA_AT: usize = 23;
const LENGTH_END: usize = 12;

/// Deletes everything inside `dir` (not `dir` itself); returns how many entries went.
pub(crate) fn wipe(dir: &Path) -> anyhow::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let result = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.with_context(|| format!("cannot delete {}", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

/// What a cut did to one partition log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Cut {
    /// The partition directory's name (`<topic>-<partition>`).
    pub(crate) partition: String,
    pub(crate) recovery_point: i64,
    pub(crate) log_end_before: i64,
    pub(crate) log_end_after: i64,
    pub(crate) bytes_dropped: u64,
}

/// One batch of a segment file: its base offset, the offset after it, where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchAt {
    pub(crate) base: i64,
    pub(crate) next: i64,
    pub(crate) pos: u64,
    pub(crate) len: u64,
}

/// The whole batches of a segment file, in file order; a torn tail is left out.
pub(crate) fn batches(bytes: &[u8]) -> Vec<BatchAt> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + LAST_OFFSET_DELTA_AT + 4 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let end = pos + LENGTH_END + length;
        if length < LAST_OFFSET_DELTA_AT + 4 - LENGTH_END || end > bytes.len() {
            break;
        }
        let at = pos + LAST_OFFSET_DELTA_AT;
        let delta = i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        out.push(BatchAt {
            base,
            next: base + i64::from(delta) + 1,
            pos: pos as u64,
            len: (end - pos) as u64,
        });
        pos = end;
    }
    out
}

/// The segment files (`<20-digit base>.log`) of a partition directory, by base offset.
pub(crate) fn segments(dir: &Path) -> anyhow::Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(base) = stem.parse::<i64>() {
                    out.push((base, path));
                }
            }
        }
    }
    out.sort_by_key(|(b, _)| *b);
    Ok(out)
}

/// The partition directories (`<topic>-<n>` holding segment files) of a node's data dir.
pub(crate) fn partition_dirs(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in
        fs::read_dir(data_dir).with_context(|| format!("cannot list {}", data_dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let numbered = name
            .rsplit_once('-')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if path.is_dir() && numbered && !segments(&path)?.is_empty() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn delete_segment(log: &Path) -> anyhow::Result<()> {
    for ext in ["log", "index", "timeindex"] {
        remove_if_present(&log.with_extension(ext))?;
    }
    Ok(())
}

/// Cuts one partition directory back to what had been fsynced, plus (for a seeded half) a
/// random number of the unsynced batches after it.
pub(crate) fn cut_partition(dir: &Path, rng: &mut impl Rng) -> anyhow::Result<Cut> {
    let segs = segments(dir)?;
    let first_base = segs.first().map_or(0, |(b, _)| *b);
    let recovery_point = fs::read_to_string(dir.join(RECOVERY_POINT_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(first_base);
    // Segments from the one holding the recovery point on: what may be unsynced.
    let from = segs
        .partition_point(|(b, _)| *b <= recovery_point)
        .saturating_sub(1);
    // Every place a cut may go: (segment index, byte position, offset), the log end last.
    let mut points = Vec::new();
    let mut log_end_before = recovery_point;
    let mut sizes = Vec::new();
    for (i, (base, path)) in segs.iter().enumerate().skip(from) {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        sizes.push(bytes.len() as u64);
        let found = batches(&bytes);
        if found.is_empty() && i > from {
            points.push((i, 0u64, *base));
        }
        for b in &found {
            if b.base >= recovery_point {
                points.push((i, b.pos, b.base));
            }
            log_end_before = log_end_before.max(b.next);
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unchanged = Cut {
        partition: name.clone(),
        recovery_point,
        log_end_before,
        log_end_after: log_end_before,
        bytes_dropped: 0,
    };
    if points.is_empty() {
        return Ok(unchanged);
    }
    let choice = if rng.random_bool(0.5) {
        0
    } else {
        // The log end (no loss) is one choice among the batch boundaries.
        rng.random_range(0..=points.len())
    };
    let Some(&(seg, pos, offset)) = points.get(choice) else {
        return Ok(unchanged);
    };
    let mut dropped = 0u64;
    for (i, (_, path)) in segs.iter().enumerate().skip(seg) {
        let size = sizes[i - from];
        if i == seg && (pos > 0 || i == 0) {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.set_len(pos)
                .with_context(|| format!("cannot truncate {}", path.display()))?;
            for ext in ["index", "timeindex"] {
                remove_if_present(&path.with_extension(ext))?;
            }
            dropped += size - pos;
        } else {
            delete_segment(path)?;
            dropped += size;
        }
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(at) = name
            .strip_suffix(".snapshot")
            .and_then(|s| s.parse::<i64>().ok())
        {
            if at > offset {
                remove_if_present(&path)?;
            }
        }
    }
    Ok(Cut {
        partition: name,
        recovery_point,
        log_end_before,
        log_end_after: offset,
        bytes_dropped: dropped,
    })
}

/// The batches of the partition log in `dir` that end at or below `high_watermark`, as
/// (base offset, bytes), in offset order; an absent directory has none.
pub(crate) fn batches_below(
    dir: &Path,
    high_watermark: i64,
) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (_, path) in segments(dir)? {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        for b in batches(&bytes) {
            if b.next <= high_watermark {
                let (from, to) = (b.pos as usize, (b.pos + b.len) as usize);
                out.push((b.base, bytes[from..to].to_vec()));
            }
        }
    }
    Ok(out)
}

/// Cuts every partition log of a (stopped) node's data dir back to what had been fsynced.
pub(crate) fn lose_unflushed(data_dir: &Path, rng: &mut impl Rng) -> anyhow::Result<Vec<Cut>> {
    partition_dirs(data_dir)?
        .iter()
        .map(|d| cut_partition(d, rng))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;

    /// A batch header of `records` records at `base` with `payload` bytes of body.
    fn batch(base: i64, records: i32, payload: usize) -> Vec<u8> {
        let body_len = 49 + payload; // the v2 header after the length field, then records
        let mut b = Vec::new();
        b.extend(base.to_be_bytes());
        b.extend((body_len as i32).to_be_bytes());
        b.extend(0i32.to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend(0u32.to_be_bytes()); // crc
        b.extend(0i16.to_be_bytes()); // attributes
        b.extend((records - 1).to_be_bytes()); // last offset delta
        b.resize(12 + body_len, 7);
        b
    }

    fn write_segment(dir: &Path, base: i64, batches: &[(i64, i32)]) -> u64 {
        let mut bytes = Vec::new();
        for &(b, n) in batches {
            bytes.extend(batch(b, n, 10));
        }
        fs::write(dir.join(format!("{base:020}.log")), &bytes).unwrap();
        fs::write(dir.join(format!("{base:020}.index")), [0u8; 8]).unwrap();
        fs::write(dir.join(format!("{base:020}.timeindex")), [0u8; 12]).unwrap();
        bytes.len() as u64
    }

    #[test]
    fn batches_are_found_and_a_torn_tail_is_left_out() {
        let mut bytes = batch(0, 3, 5);
        bytes.extend(batch(3, 2, 5));
        let whole = bytes.len();
        bytes.extend(&batch(5, 1, 5)[..20]);
        let found = batches(&bytes);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].base, found[0].next, found[0].pos), (0, 3, 0));
        assert_eq!((found[1].base, found[1].next), (3, 5));
        assert_eq!(found[1].pos + found[1].len, whole as u64);
    }

    #[test]
    fn a_cut_keeps_everything_below_the_recovery_point_and_a_prefix_above_it() {
        for seed in 0..40 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("chaos-0");
            fs::create_dir(&dir).unwrap();
            let first = write_segment(&dir, 0, &[(0, 4), (4, 4)]);
            write_segment(&dir, 8, &[(8, 4), (12, 4), (16, 4)]);
            write_segment(&dir, 20, &[(20, 4)]);
            fs::write(dir.join("recovery-point"), "12\n").unwrap();
            fs::write(dir.join(format!("{:020}.snapshot", 20)), b"x").unwrap();
            fs::write(dir.join(format!("{:020}.snapshot", 8)), b"x").unwrap();
            let cut = cut_partition(&dir, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!((cut.recovery_point, cut.log_end_before), (12, 24));
            assert!(
                [12, 16, 20, 24].contains(&cut.log_end_after),
                "{seed}: {cut:?}"
            );
            // The fsynced segment is untouched; the log ends where the cut says.
            assert_eq!(
                fs::metadata(dir.join(format!("{:020}.log", 0)))
                    .unwrap()
                    .len(),
                first
            );
            let mut end = 0;
            for (_, path) in segments(&dir).unwrap() {
                if let Some(last) = batches(&fs::read(&path).unwrap()).last() {
                    end = last.next;
                }
            }
            assert_eq!(end, cut.log_end_after, "{seed}: {cut:?}");
            assert_eq!(
                dir.join(format!("{:020}.snapshot", 20)).exists(),
                cut.log_end_after >= 20
            );
            assert!(dir.join(format!("{:020}.snapshot", 8)).exists());
            if cut.log_end_after < 24 {
                assert!(cut.bytes_dropped > 0);
                assert!(!dir.join(format!("{:020}.index", 8)).exists() || cut.log_end_after >= 20);
            }
        }
    }

    #[test]
    fn without_a_recovery_point_everything_may_go_but_the_first_segment_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-3");
        fs::create_dir(&dir).unwrap();
        write_segment(&dir, 0, &[(0, 2), (2, 2)]);
        write_segment(&dir, 4, &[(4, 2)]);
        // Seed 0's first draw is whatever it is: try seeds until one cuts everything.
        let cut = (0..64)
            .find_map(|seed| {
                let d = tmp.path().join(format!("copy-{seed}"));
                fs::create_dir(&d).unwrap();
                for (_, p) in segments(&dir).unwrap() {
                    fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
                }
                let c = cut_partition(&d, &mut StdRng::seed_from_u64(seed)).unwrap();
                (c.log_end_after == 0).then_some(d)
            })
            .expect("some seed cuts everything");
        let left = segments(&cut).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(fs::metadata(&left[0].1).unwrap().len(), 0);
    }

    #[test]
    fn wipe_empties_the_dir_and_partition_dirs_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("node-1");
        fs::create_dir_all(data.join("chaos-0")).unwrap();
        fs::create_dir_all(data.join("controller")).unwrap();
        fs::create_dir_all(data.join("empty-1")).unwrap();
        write_segment(&data.join("chaos-0"), 0, &[(0, 1)]);
        fs::write(data.join("meta.properties"), "x").unwrap();
        assert_eq!(partition_dirs(&data).unwrap(), vec![data.join("chaos-0")]);
        assert_eq!(wipe(&data).unwrap(), 4);
        assert_eq!(fs::read_dir(&data).unwrap().count(), 0);
        assert!(data.exists());
    }
}
