//! The arithmetic of an experiment, kept free of I/O so it can be tested: latency percentiles,
//! rates and the count of acknowledged records that a read-back did not find.

use std::collections::HashSet;

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `sorted`, which must be ascending;
/// `None` for no samples. Nearest-rank never invents a value that was not measured.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `count` per second over `seconds`; 0 for an empty interval.
pub(crate) fn rate(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count / seconds
    } else {
        0.0
    }
}

/// What a read-back found of what a producer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loss {
    /// Distinct sequence numbers of this run found in the partition.
    pub(crate) found: u64,
    /// Acknowledged sequence numbers missing from the partition.
    pub(crate) lost: u64,
}

/// Compares the acknowledged sequence numbers with those read back. A record read twice
/// counts once; records found but never acknowledged (a request that failed after the write)
/// are not losses.
pub(crate) fn count_loss(acked: &[u64], read: &[u64]) -> Loss {
    let found: HashSet<u64> = read.iter().copied().collect();
    let lost = acked.iter().filter(|s| !found.contains(s)).count();
    Loss {
        found: found.len() as u64,
        lost: lost as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[10, 20], 1.0), Some(10));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn rates_over_empty_intervals_are_zero() {
        assert_eq!(rate(100.0, 2.0), 50.0);
        assert_eq!(rate(100.0, 0.0), 0.0);
    }

    #[test]
    fn loss_counts_acknowledged_records_missing_from_the_log() {
        // 3 and 5 were acknowledged and are gone; 9 was never acknowledged but landed.
        let loss = count_loss(&[1, 2, 3, 4, 5], &[1, 2, 4, 9]);
        assert_eq!(loss, Loss { found: 4, lost: 2 });
    }

    #[test]
    fn duplicates_in_the_log_count_once_and_nothing_acked_means_nothing_lost() {
        assert_eq!(
            count_loss(&[1, 2], &[1, 1, 2, 2]),
            Loss { found: 2, lost: 0 }
        );
        assert_eq!(count_loss(&[], &[1, 2]), Loss { found: 2, lost: 0 });
        assert_eq!(count_loss(&[1, 2], &[]), Loss { found: 0, lost: 2 });
    }
}
