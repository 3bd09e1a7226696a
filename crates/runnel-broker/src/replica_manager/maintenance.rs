//! Log maintenance: retention, timed flushes (flush.ms), the log cleaner and the
//! high-watermark checkpoint, over every partition log the registry holds. The sweeps do
//! blocking file work; the loops run them on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::registry::PartitionRegistry;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::partition::now_ms;
use crate::replication::checkpoint;

pub(crate) struct LogMaintenance {
    config: BrokerConfig,
    registry: Arc<PartitionRegistry>,
    /// The checkpoint last written, so an unchanged one is not rewritten.
    written_hws: Mutex<checkpoint::Checkpoint>,
}

impl LogMaintenance {
    pub(crate) fn new(config: BrokerConfig, registry: Arc<PartitionRegistry>) -> Self {
        Self {
            config,
            registry,
            written_hws: Mutex::new(checkpoint::Checkpoint::new()),
        }
    }

    /// Writes the high-watermark checkpoint when a high watermark moved since the last one.
    pub(crate) fn checkpoint_high_watermarks(&self) {
        if self.registry.log_dir().is_offline() {
            return;
        }
        // Entries of partitions not opened yet (a stale image at start) are kept.
        let mut current = self.registry.unopened_checkpointed_hws();
        current.extend(
            self.registry
                .all()
                .iter()
                .map(|p| ((p.topic().to_string(), p.index()), p.high_watermark())),
        );
        let mut written = self.written_hws.lock();
        if *written == current {
            return;
        }
        match checkpoint::write(self.registry.data_dir(), &current) {
            Ok(()) => *written = current,
            // A full disk only delays the checkpoint; any other error is a disk failure.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                tracing::warn!(dir = %self.registry.data_dir().display(), error = %e, "cannot write the high-watermark checkpoint")
            }
            Err(e) => self
                .registry
                .log_dir()
                .take_offline(&format!("cannot write the high-watermark checkpoint: {e}")),
        }
    }

    /// Deletes segments past retention; returns how many were deleted.
    pub(crate) fn enforce_retention(&self) -> usize {
        if self.registry.log_dir().is_offline() {
            return 0;
        }
        let now = now_ms();
        let mut deleted = 0;
        for partition in self.registry.all() {
            // Read before the log lock: the watermark only grows, so a stale one keeps more.
            let high_watermark = partition.high_watermark();
            match partition.with_log(|log| Ok(log.enforce_retention(now, high_watermark)?)) {
                Ok(n) => deleted += n,
                Err(e) => tracing::warn!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    error = %e,
                    "retention failed"
                ),
            }
        }
        deleted
    }

    /// fsyncs the logs whose `flush.ms` has passed.
    pub(crate) fn flush_due(&self) {
        if self.registry.log_dir().is_offline() {
            return;
        }
        let now = now_ms();
        for partition in self.registry.all() {
            if let Err(e) = partition.with_log(|log| Ok(log.flush_if_due(now)?)) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "flush failed");
            }
        }
    }

    /// fsyncs every log and writes recovery points, for a clean shutdown.
    pub(crate) fn flush_all(&self) -> bool {
        // An offline dir is not flushed: a failed fsync must not be retried as a success.
        if self.registry.log_dir().is_offline() {
            return false;
        }
        let mut flushed = true;
        for partition in self.registry.all() {
            if let Err(e) = partition.with_log(|log| Ok(log.flush()?)) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "flush failed");
                flushed = false;
            }
            // So the next start does not rescan the log for producer state.
            if let Err(e) = partition.snapshot_producer_state(true) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "producer-state snapshot failed");
            }
        }
        self.checkpoint_high_watermarks();
        flushed
    }

    /// One log-cleaner sweep: compacts, one partition at a time, every partition whose topic's
    /// cleanup.policy has `compact` and whose dirty ratio (or a tombstone's
    /// delete.retention.ms) says it is due. Returns how many partitions were cleaned.
    pub(crate) fn run_compaction(&self) -> usize {
        self.compact_partitions(&|| false)
    }

    /// [`Self::run_compaction`], stopping between partitions once `stop` says so.
    fn compact_partitions(&self, stop: &dyn Fn() -> bool) -> usize {
        let mut cleaned = 0;
        for partition in self.registry.all() {
            if stop() {
                break;
            }
            let started = std::time::Instant::now();
            match partition.compact() {
                Ok(s) if s.discarded => tracing::info!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    "log cleaner pass discarded: the log changed meanwhile; retrying next time"
                ),
                Ok(s) if s.cleaned => {
                    cleaned += 1;
                    tracing::info!(
                        topic = partition.topic(),
                        partition = partition.index(),
                        bytes_before = s.bytes_before,
                        bytes_after = s.bytes_after,
                        records_removed = s.records_removed,
                        tombstones_removed = s.tombstones_removed,
                        batches_rewritten = s.batches_rewritten,
                        batches_removed = s.batches_removed,
                        batches_emptied = s.batches_emptied,
                        segments_rewritten = s.segments_rewritten,
                        segments_deleted = s.segments_deleted,
                        keys = s.keys,
                        cleaned_to = s.cleaned_to,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "log cleaner compacted partition"
                    );
                }
                Ok(_) => {}
                // Deleted while the pass ran.
                Err(BrokerError::UnknownPartition { .. }) => {}
                Err(e) => tracing::warn!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    error = %e,
                    "log cleaner failed"
                ),
            }
        }
        cleaned
    }

    /// Runs retention and timed flushes until `shutdown` fires. The sweeps do blocking file
    /// work, so they run on the blocking pool. The log cleaner is a task of its own (one
    /// partition at a time, on the blocking pool) so a long pass never delays retention or
    /// flush.ms; it stops at the same signal, after the partition it is cleaning.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let cleaner = self.config.log_cleaner_enable().then(|| {
            let every = Duration::from_millis(self.config.log_cleaner_backoff_ms().max(100));
            tokio::spawn(self.clone().run_cleaner(every, shutdown.clone()))
        });
        let retention_every =
            Duration::from_millis(self.config.retention_check_interval_ms().max(100));
        let mut flush_tick = tokio::time::interval(Duration::from_secs(1));
        let mut retention_tick = tokio::time::interval(retention_every);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = flush_tick.tick() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        me.flush_due();
                        me.checkpoint_high_watermarks();
                    })
                    .await;
                }
                _ = retention_tick.tick() => {
                    let me = self.clone();
                    if let Ok(n) = tokio::task::spawn_blocking(move || me.enforce_retention()).await {
                        if n > 0 {
                            tracing::info!(segments = n, "retention deleted old segments");
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Some(cleaner) = cleaner {
            let _ = cleaner.await;
        }
    }

    /// The log cleaner's loop: a sweep every `every` until `shutdown` fires.
    async fn run_cleaner(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let me = self.clone();
                    let stop = shutdown.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        me.compact_partitions(&|| *stop.borrow())
                    })
                    .await;
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
#[path = "maintenance_tests.rs"]
mod tests;
