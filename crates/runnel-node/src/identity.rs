//! The data dir's identity and lock: `<data-dir>/meta.properties` (Kafka's file, Kafka's
//! keys: `version`, `node.id`, `cluster.id`) says which node and cluster the data belongs to,
//! and `<data-dir>/.lock` keeps a second process off it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

const FILE: &str = "meta.properties";
const VERSION: &str = "1";

/// A data dir this process holds: locked for the process's lifetime.
pub(crate) struct DataDir {
    path: PathBuf,
    node_id: i32,
    cluster_id: Option<String>,
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
        let (stored_node, cluster_id) = match fs::read_to_string(&file) {
            Ok(text) => parse(&text).with_context(|| {
                format!(
                    "{} is corrupt; restore it (it holds node.id and cluster.id) or move the data dir away",
                    file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (node_id, None),
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
            _lock: lock,
        };
        dir.write()?;
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
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
        let mut text = format!("version={VERSION}\nnode.id={}\n", self.node_id);
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

/// `(node.id, cluster.id)` from the file's `key=value` lines.
fn parse(text: &str) -> anyhow::Result<(i32, Option<String>)> {
    let mut node = None;
    let mut cluster = None;
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
            _ => {}
        }
    }
    if version.as_deref() != Some(VERSION) {
        bail!("version is {version:?}, this build reads version {VERSION}");
    }
    Ok((node.context("node.id is missing")?, cluster))
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
}
