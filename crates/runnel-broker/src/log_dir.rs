//! The health of the node's data dir (Kafka's log dir failure handling, with one log dir per
//! broker). The first disk error that leaves a partition log untrustworthy takes the whole
//! directory offline: its partitions stop appending and serving (KAFKA_STORAGE_ERROR), and
//! the node asks the controller to move their leaderships away and keep it out of the ISRs
//! (its heartbeats report the directory offline) until it is restarted.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::error::BrokerError;

pub struct LogDir {
    path: PathBuf,
    /// Why the directory is offline; `None` while it works.
    offline: watch::Sender<Option<String>>,
}

impl LogDir {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offline: watch::channel(None).0,
        }
    }

    pub fn is_offline(&self) -> bool {
        self.offline.borrow().is_some()
    }

    /// A receiver that turns `Some(reason)` when the directory goes offline.
    pub fn watch(&self) -> watch::Receiver<Option<String>> {
        self.offline.subscribe()
    }

    /// KAFKA_STORAGE_ERROR while the directory is offline.
    pub(crate) fn check(&self) -> Result<(), BrokerError> {
        match &*self.offline.borrow() {
            Some(reason) => Err(BrokerError::LogDirOffline(format!(
                "data dir {} is offline after a disk error: {reason}",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }

    /// Takes the directory offline (once; later calls keep the first reason).
    pub fn take_offline(&self, reason: &str) {
        self.offline.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            tracing::error!(
                dir = %self.path.display(),
                error = reason,
                "disk error: taking the data dir offline; its partitions answer KAFKA_STORAGE_ERROR and their leaderships move to other brokers. Replace or repair the disk, then restart the node"
            );
            *current = Some(reason.to_string());
            true
        });
    }
}
