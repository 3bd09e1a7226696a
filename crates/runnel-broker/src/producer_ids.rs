//! Producer ids for idempotent producers.
//!
//! Ids are handed out from blocks, like Kafka's AllocateProducerIds: the node takes a block of
//! [`BLOCK_SIZE`] ids from a [`ProducerIdBlockSource`] and serves InitProducerId from it
//! without any I/O. Today the source is [`LocalBlockSource`], which persists the start of the
//! next block in `<data-dir>/meta/producer-ids` (temp file, fsync, rename, directory fsync)
//! *before* any id of the block it returns is used, so no id is ever handed out twice, even
//! after a crash in the middle of a block (the rest of that block is simply skipped). The Raft
//! controller will later supply blocks through the same trait.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::BrokerError;

/// Ids per block, as in Kafka.
pub const BLOCK_SIZE: u32 = 1000;

/// A range of producer ids `[first, first + size)` owned by this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: u32,
}

impl ProducerIdBlock {
    /// One past the last id of the block.
    pub fn end(&self) -> i64 {
        self.first + i64::from(self.size)
    }
}

/// Where blocks of producer ids come from. A block returned must never be returned again, by
/// this or any other node, even across crashes.
pub trait ProducerIdBlockSource: Send + Sync {
    fn next_block(&self) -> Result<ProducerIdBlock, BrokerError>;

    /// Every id below this value may have been handed out; none at or above it has been.
    fn allocated_below(&self) -> i64;
}

/// The single-node source: the next block start lives in `<data-dir>/meta/producer-ids`.
pub struct LocalBlockSource {
    path: PathBuf,
    next_start: Mutex<i64>,
}

const FILE_NAME: &str = "producer-ids";

impl LocalBlockSource {
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        let meta = data_dir.join("meta");
        let path = meta.join(FILE_NAME);
        let io = |what: &str, p: &Path, e: std::io::Error| {
            BrokerError::DataDir(format!("{what} {}: {e}", p.display()))
        };
        fs::create_dir_all(&meta).map_err(|e| io("cannot create", &meta, e))?;
        let _ = fs::remove_file(meta.join(format!("{FILE_NAME}.tmp")));
        let next_start = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .strip_prefix("next-block-start=")
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    // Guessing would risk handing out ids twice; refuse instead.
                    BrokerError::DataDir(format!(
                        "{} is not a valid producer-id file (expected `next-block-start=<n>`, \
                         got {:?}); restore it or set it to a value above every producer id \
                         handed out",
                        path.display(),
                        text.trim()
                    ))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io("cannot read", &path, e)),
        };
        Ok(Self {
            path,
            next_start: Mutex::new(next_start),
        })
    }

    fn persist(&self, next_start: i64) -> Result<(), BrokerError> {
        let tmp = self.path.with_file_name(format!("{FILE_NAME}.tmp"));
        let dir = self.path.parent().expect("meta dir");
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            writeln!(f, "next-block-start={next_start}")?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &self.path)?;
            fs::File::open(dir)?.sync_all()
        })();
        result.map_err(|e| {
            BrokerError::DataDir(format!(
                "cannot persist the producer-id block in {}: {e}",
                self.path.display()
            ))
        })
    }
}

impl ProducerIdBlockSource for LocalBlockSource {
    fn next_block(&self) -> Result<ProducerIdBlock, BrokerError> {
        let mut next = self.next_start.lock().unwrap_or_else(|p| p.into_inner());
        let block = ProducerIdBlock {
            first: *next,
            size: BLOCK_SIZE,
        };
        // Durable before any id of the block is used.
        self.persist(block.end())?;
        *next = block.end();
        tracing::info!(
            first = block.first,
            end = block.end(),
            "allocated a block of producer ids"
        );
        Ok(block)
    }

    fn allocated_below(&self) -> i64 {
        *self.next_start.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands out producer ids and epochs (InitProducerId).
pub struct ProducerIdManager {
    source: Box<dyn ProducerIdBlockSource>,
    /// Ids `[next, end)` of the current block are still free.
    current: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// Opens the local block source of `data_dir`. No block is taken until the first id is
    /// needed.
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        Ok(Self::with_source(Box::new(LocalBlockSource::open(
            data_dir,
        )?)))
    }

    pub fn with_source(source: Box<dyn ProducerIdBlockSource>) -> Self {
        Self {
            source,
            current: Mutex::new((0, 0)),
        }
    }

    /// A producer id never handed out before. May block on a file write and fsync (once per
    /// block).
    pub fn generate(&self) -> Result<i64, BrokerError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 >= current.1 {
            let block = self.source.next_block()?;
            *current = (block.first, block.end());
        }
        let id = current.0;
        current.0 += 1;
        Ok(id)
    }

    /// InitProducerId for an idempotent producer: `(producer_id, epoch)`. With an existing id
    /// and epoch (KIP-360, the client asks to bump its epoch after a fatal sequence error),
    /// the same id comes back with the next epoch; a fresh id with epoch 0 when the epoch
    /// would exhaust, or when the id was never handed out by this cluster.
    pub fn init_producer(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        if producer_id >= 0 && producer_epoch >= 0 {
            if producer_id >= self.source.allocated_below() {
                tracing::warn!(
                    producer_id,
                    producer_epoch,
                    "InitProducerId: epoch bump for a producer id never handed out; assigning a new id"
                );
            } else if producer_epoch < i16::MAX - 1 {
                return Ok((producer_id, producer_epoch + 1));
            }
        }
        Ok((self.generate()?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = HashSet::new();
        {
            let m = ProducerIdManager::open(dir.path()).unwrap();
            for _ in 0..2500 {
                assert!(seen.insert(m.generate().unwrap()));
            }
        } // "crash": dropped mid-block without any clean close
        let m = ProducerIdManager::open(dir.path()).unwrap();
        let next = m.generate().unwrap();
        assert!(
            next >= 3000,
            "restart must skip the rest of the block, got {next}"
        );
        assert!(seen.insert(next));
        // A crash right after a block was taken, before any id of it was used.
        drop(m);
        let m = ProducerIdManager::open(dir.path()).unwrap();
        let next = m.generate().unwrap();
        assert!(next >= 4000 && seen.insert(next), "{next}");
        let text = fs::read_to_string(dir.path().join("meta/producer-ids")).unwrap();
        assert_eq!(text.trim(), "next-block-start=5000");
    }

    #[test]
    fn epoch_bump_and_exhaustion() {
        let dir = tempfile::tempdir().unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        let (id, epoch) = m.init_producer(-1, -1).unwrap();
        assert_eq!((id, epoch), (0, 0));
        assert_eq!(m.init_producer(id, 0).unwrap(), (id, 1));
        assert_eq!(m.init_producer(id, 41).unwrap(), (id, 42));
        let (new_id, e) = m.init_producer(id, i16::MAX - 1).unwrap();
        assert_eq!(e, 0);
        assert_ne!(new_id, id);
        // An id this cluster never issued gets a fresh one.
        let (other, e) = m.init_producer(1_000_000, 3).unwrap();
        assert_eq!(e, 0);
        assert!(other < 1000);
    }

    #[test]
    fn corrupt_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("meta")).unwrap();
        fs::write(dir.path().join("meta/producer-ids"), "garbage").unwrap();
        let err = ProducerIdManager::open(dir.path()).err().unwrap();
        assert!(
            err.to_string().contains("not a valid producer-id file"),
            "{err}"
        );
    }
}
