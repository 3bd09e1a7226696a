//! The high-watermark checkpoint of a data dir, Kafka's `replication-offset-checkpoint`:
//!
//! ```text
//! 0                  <- format version
//! 2                  <- number of entries
//! orders 0 1200      <- topic, partition, high watermark
//! orders 1 977
//! ```
//!
//! A follower learns the high watermark from its leader and keeps it here, so after a restart
//! it knows which records were committed (the truncation fallback of KIP-101 and the starting
//! high watermark if it becomes leader). Written atomically (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

pub const FILE_NAME: &str = "replication-offset-checkpoint";
const VERSION: &str = "0";

pub type Checkpoint = BTreeMap<(String, i32), i64>;

/// Reads the checkpoint; a missing file is empty, a corrupt one is logged and ignored (the
/// high watermarks then start at each log's end).
pub fn read(data_dir: &Path) -> Checkpoint {
    let path = data_dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => parse(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "ignoring a corrupt high-watermark checkpoint");
            Checkpoint::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the high-watermark checkpoint");
            Checkpoint::new()
        }
    }
}

fn parse(text: &str) -> Result<Checkpoint, String> {
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err(format!("the first line is not version {VERSION}"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("the second line is not an entry count")?;
    let mut out = Checkpoint::new();
    for line in lines.by_ref().take(count) {
        let mut fields = line.split(' ');
        let (Some(topic), Some(partition), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("malformed entry '{line}'"));
        };
        let partition = partition
            .parse()
            .map_err(|_| format!("bad partition in '{line}'"))?;
        let offset = offset
            .parse()
            .map_err(|_| format!("bad offset in '{line}'"))?;
        out.insert((topic.to_string(), partition), offset);
    }
    if out.len() != count {
        return Err(format!("{count} entries announced, {} found", out.len()));
    }
    Ok(out)
}

/// Replaces the checkpoint with `entries`.
pub fn write(data_dir: &Path, entries: &Checkpoint) -> std::io::Result<()> {
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    for ((topic, partition), offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    runnel_storage::failpoints::inject(runnel_storage::failpoints::HW_CHECKPOINT_WRITE)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, data_dir.join(FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_empty());
        let mut entries = Checkpoint::new();
        entries.insert(("orders".into(), 0), 1200);
        entries.insert(("__consumer_offsets".into(), 17), 3);
        write(dir.path(), &entries).unwrap();
        assert_eq!(read(dir.path()), entries);
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "0\n2\n__consumer_offsets 17 3\norders 0 1200\n");
    }

    #[test]
    fn corrupt_files_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "1\n0\n",
            "0\n2\na 0 1\n",
            "0\n1\na x 1\n",
            "0\n1\na 0 1 2\n",
        ] {
            fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert!(read(dir.path()).is_empty(), "{bad:?}");
        }
    }
}
