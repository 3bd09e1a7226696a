//! The data dir's identity and lock: `<data-dir>/meta.properties` (Kafka's file, Kafka's
//! keys: `version`, `node.id`, `cluster.id`, `directory.id`) says which node and cluster the
//! data belongs to and which disk it is, and `<data-dir>/.lock` keeps a second process off it.
//!
//! `<data-dir>/.clean_shutdown` (Kafka's clean-shutdown file) holds the broker epoch of a
//! shutdown that flushed every log; it is read and removed at start, so a crash afterwards
//! finds none.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use uuid::Uuid;

const FILE: &str = "meta.properties";
const CLEAN_SHUTDOWN: &str = ".clean_shutdown";
const VERSION: &str = "1";

/// A data dir this process holds: locked for the process's lifetime.
pub(crate) struct DataDir {
    path: PathBuf,
    node_id: i32,
    cluster_id: Option<String>,
    directory_id: Uuid,
    _lock: fs::File,
}

impl DataDir {
    /// Creates or opens `path` for node `node_id`: takes the lock, then checks (or writes)
    /// `meta.properties`. Refuses, with a sentence saying what to do, a dir in use by another
    /// process, one that belongs to another node, or an unreadable identity file.
    pub(crate) fn open(path: &Path, node_id: i32) -> anyhow::Result<DataDir> {
        fs::create_dir_all(path)
            .with_context(|| format!("cannot create data dir {}", path.display()))?;
        let lock = fs::File::create(path.join(".lock"))
            .with_context(|| format!("cannot lock data dir {}", path.display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "data dir {} is in use by another runnel node; stop it or choose another --data-dir",
                path.display()
            );
        }
        let file = path.join(FILE);
        let (stored_node, cluster_id, directory_id) = match fs::read_to_string(&file) {
            Ok(text) => parse(&text).with_context(|| {
                format!(
                    "{} is corrupt; restore it (it holds node.id and cluster.id) or move the data dir away",
                    file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (node_id, None, None),
            Err(e) => bail!("cannot read {}: {e}", file.display()),
        };
        if stored_node != node_id {
            bail!(
                "data dir {} belongs to node {stored_node}, not node {node_id}; pass --node-id {stored_node} or use another --data-dir",
                path.display()
            );
        }
        let dir = DataDir {
            path: path.to_path_buf(),
            node_id,
            cluster_id,
            // A dir from before directory ids gets one now; the controller has none to compare.
            directory_id: directory_id.unwrap_or_else(Uuid::new_v4),
            _lock: lock,
        };
        dir.write()?;
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// KIP-858's directory id: created with the dir, so an emptied or replaced one has another.
    pub(crate) fn directory_id(&self) -> Uuid {
        self.directory_id
    }

    /// The broker epoch a clean shutdown recorded, or -1; removes the marker (durably) so a
    /// crash of this run is not taken for a clean one.
    pub(crate) fn take_clean_shutdown(&self) -> anyhow::Result<i64> {
        let file = self.path.join(CLEAN_SHUTDOWN);
        let epoch = match fs::read_to_string(&file) {
            Ok(text) => text.trim().parse::<i64>().unwrap_or(-1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(-1),
            Err(e) => bail!("cannot read {}: {e}", file.display()),
        };
        let remove = || -> std::io::Result<()> {
            fs::remove_file(&file)?;
            fs::File::open(&self.path)?.sync_all()
        };
        remove().with_context(|| format!("cannot remove {}", file.display()))?;
        Ok(epoch)
    }

    /// Records a clean shutdown at `broker_epoch`: call it only once every log is flushed.
    pub(crate) fn mark_clean_shutdown(path: &Path, broker_epoch: i64) -> anyhow::Result<()> {
        let file = path.join(CLEAN_SHUTDOWN);
        let tmp = path.join(format!("{CLEAN_SHUTDOWN}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(format!("{broker_epoch}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &file)?;
            fs::File::open(path)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", file.display()))
    }

    /// Records the cluster this data belongs to the first time it is known; refuses data of
    /// another cluster.
    pub(crate) fn check_cluster(&mut self, cluster_id: &str) -> anyhow::Result<()> {
        if cluster_id.is_empty() {
            return Ok(());
        }
        match &self.cluster_id {
            Some(known) if known == cluster_id => Ok(()),
            Some(known) => bail!(
                "data dir {} belongs to cluster {known}, but the controller quorum is cluster {cluster_id}; \
                 point --voters at the right cluster or use another --data-dir",
                self.path.display()
            ),
            None => {
                self.cluster_id = Some(cluster_id.to_string());
                self.write()
            }
        }
    }

    /// Rewrites `meta.properties` atomically (temp file, fsync, rename, dir fsync).
    fn write(&self) -> anyhow::Result<()> {
        let mut text = format!(
            "version={VERSION}\nnode.id={}\ndirectory.id={}\n",
            self.node_id, self.directory_id
        );
        if let Some(c) = &self.cluster_id {
            text.push_str(&format!("cluster.id={c}\n"));
        }
        let file = self.path.join(FILE);
        let tmp = self.path.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &file)?;
            fs::File::open(&self.path)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", file.display()))
    }
}

/// `(node.id, cluster.id, directory.id)` from the file's `key=value` lines.
fn parse(text: &str) -> anyhow::Result<(i32, Option<String>, Option<Uuid>)> {
    let mut node = None;
    let mut cluster = None;
    let mut directory = None;
    let mut version = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("line '{line}' is not key=value"))?;
        match k.trim() {
            "version" => version = Some(v.trim().to_string()),
            "node.id" => {
                node = Some(
                    v.trim()
                        .parse::<i32>()
                        .with_context(|| format!("node.id '{v}' is not a number"))?,
                )
            }
            "cluster.id" => cluster = Some(v.trim().to_string()),
            "directory.id" => {
                directory = Some(
                    Uuid::parse_str(v.trim())
                        .with_context(|| format!("directory.id '{v}' is not a UUID"))?,
                )
            }
            _ => {}
        }
    }
    if version.as_deref() != Some(VERSION) {
        bail!("version is {version:?}, this build reads version {VERSION}");
    }
    Ok((node.context("node.id is missing")?, cluster, directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_kept_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = DataDir::open(tmp.path(), 1).unwrap();
        dir.check_cluster("abc").unwrap();
        assert!(dir.check_cluster("other").is_err());
        // Locked while held.
        let err = DataDir::open(tmp.path(), 1).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(dir);
        let err = DataDir::open(tmp.path(), 2).err().unwrap();
        assert!(format!("{err:#}").contains("belongs to node 1"), "{err:#}");
        let mut dir = DataDir::open(tmp.path(), 1).unwrap();
        assert!(dir.check_cluster("other").is_err());
        dir.check_cluster("abc").unwrap();
        drop(dir);
        fs::write(tmp.path().join(FILE), "garbage").unwrap();
        let err = DataDir::open(tmp.path(), 1).err().unwrap();
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    }

    #[test]
    fn directory_id_is_kept_and_a_new_dir_gets_another() {
        let tmp = tempfile::tempdir().unwrap();
        let id = DataDir::open(tmp.path(), 1).unwrap().directory_id();
        assert_eq!(DataDir::open(tmp.path(), 1).unwrap().directory_id(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(DataDir::open(other.path(), 1).unwrap().directory_id(), id);
        // A dir written before directory ids gets one, and keeps it.
        fs::write(tmp.path().join(FILE), "version=1\nnode.id=1\n").unwrap();
        let fresh = DataDir::open(tmp.path(), 1).unwrap().directory_id();
        assert_eq!(DataDir::open(tmp.path(), 1).unwrap().directory_id(), fresh);
    }

    #[test]
    fn clean_shutdown_marker_is_read_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path(), 1).unwrap();
        assert_eq!(dir.take_clean_shutdown().unwrap(), -1);
        DataDir::mark_clean_shutdown(tmp.path(), 17).unwrap();
        assert_eq!(dir.take_clean_shutdown().unwrap(), 17);
        assert_eq!(dir.take_clean_shutdown().unwrap(), -1);
    }
}
