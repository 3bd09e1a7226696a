//! The verdict on one chaos run, from what the producers saw acknowledged and what the
//! partitions hold afterwards. Pure: no I/O, no clock; times are seconds since the workload
//! started.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// How many lost sequence numbers a verdict lists by name.
const SAMPLE: usize = 10;

/// One partition's history: the records its producer had acknowledged and what was read back.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionHistory {
    /// Sequence numbers in the order their produce responses arrived without error.
    pub(crate) acked: Vec<u64>,
    /// Sequence numbers that were sent in an attempt that failed or timed out: without
    /// idempotence such an attempt may have been written, so a copy of it is not a bug.
    pub(crate) retried: HashSet<u64>,
    /// Whether the producer was idempotent: then the broker must drop every retried copy,
    /// and a second copy of an acknowledged record is a duplicate even if it was retried.
    pub(crate) idempotent: bool,
    /// Sequence numbers read from the partition, in offset order.
    pub(crate) read: Vec<u64>,
}

/// What went right and wrong in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct PartitionVerdict {
    pub(crate) acked: usize,
    pub(crate) read: usize,
    /// Acknowledged records that are not in the partition.
    pub(crate) lost: usize,
    /// The first few lost sequence numbers, in ack order.
    pub(crate) lost_sample: Vec<u64>,
    /// Acknowledged records that appear more than once; without idempotence only those never
    /// sent in a failed attempt count.
    pub(crate) duplicated: usize,
    /// Other records that appear more than once: retried ones without idempotence, and
    /// unacknowledged ones.
    pub(crate) retry_duplicates: usize,
    /// Acknowledged records that appear before a record acknowledged earlier.
    pub(crate) reordered: usize,
    /// Distinct records that appear although their produce was never acknowledged.
    pub(crate) unacked_appeared: usize,
}

impl PartitionVerdict {
    /// Whether this partition broke a guarantee of acks=all.
    pub(crate) fn violated(&self) -> bool {
        self.lost > 0 || self.duplicated > 0 || self.reordered > 0
    }
}

pub(crate) fn check_partition(history: &PartitionHistory) -> PartitionVerdict {
    let mut first_pos: HashMap<u64, usize> = HashMap::new();
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for (pos, &seq) in history.read.iter().enumerate() {
        first_pos.entry(seq).or_insert(pos);
        *copies.entry(seq).or_default() += 1;
    }
    let acked: HashSet<u64> = history.acked.iter().copied().collect();

    let mut lost_seqs = Vec::new();
    let mut reordered = 0;
    // The furthest position of any record acknowledged so far: a record found before it
    // was overtaken by one acknowledged earlier.
    let mut furthest: Option<usize> = None;
    let mut seen = HashSet::new();
    for &seq in &history.acked {
        if !seen.insert(seq) {
            continue;
        }
        match first_pos.get(&seq) {
            None => lost_seqs.push(seq),
            Some(&pos) => {
                if furthest.is_some_and(|f| pos < f) {
                    reordered += 1;
                }
                furthest = Some(furthest.map_or(pos, |f| f.max(pos)));
            }
        }
    }

    let mut duplicated = 0;
    let mut retry_duplicates = 0;
    let mut unacked_appeared = 0;
    for (&seq, &n) in &copies {
        let is_acked = acked.contains(&seq);
        if !is_acked {
            unacked_appeared += 1;
        }
        if n > 1 {
            if is_acked && (history.idempotent || !history.retried.contains(&seq)) {
                duplicated += 1;
            } else {
                retry_duplicates += 1;
            }
        }
    }

    PartitionVerdict {
        acked: seen.len(),
        read: history.read.len(),
        lost: lost_seqs.len(),
        lost_sample: lost_seqs.into_iter().take(SAMPLE).collect(),
        duplicated,
        retry_duplicates,
        reordered,
        unacked_appeared,
    }
}

/// The longest stretch within `[start, end]` without a successful produce; `acks` are the
/// times of successful produces in any order.
pub(crate) fn longest_gap(acks: &[f64], start: f64, end: f64) -> f64 {
    let mut times: Vec<f64> = acks
        .iter()
        .copied()
        .filter(|t| (start..=end).contains(t))
        .collect();
    times.sort_by(f64::total_cmp);
    let mut previous = start;
    let mut longest: f64 = 0.0;
    for t in times.into_iter().chain([end]) {
        longest = longest.max(t - previous);
        previous = t;
    }
    longest
}

/// One successful produce: when its response arrived and the sequence numbers it carried.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AckedBatch {
    pub(crate) at: f64,
    pub(crate) seqs: Vec<u64>,
}

/// How many records acknowledged inside one of `windows` are not in `read`.
pub(crate) fn lost_acked_within(
    acks: &[AckedBatch],
    read: &[u64],
    windows: &[(f64, f64)],
) -> usize {
    let read: HashSet<u64> = read.iter().copied().collect();
    acks.iter()
        .filter(|a| {
            windows
                .iter()
                .any(|(from, to)| (*from..=*to).contains(&a.at))
        })
        .flat_map(|a| &a.seqs)
        .filter(|s| !read.contains(s))
        .count()
}

/// Seconds from the start of `window` to the first successful produce inside it; `None`
/// when nothing succeeded inside it.
pub(crate) fn first_ack_within(acks: &[f64], window: (f64, f64)) -> Option<f64> {
    acks.iter()
        .copied()
        .filter(|t| (window.0..=window.1).contains(t))
        .min_by(f64::total_cmp)
        .map(|t| t - window.0)
}

/// Seconds from the last fault action to the first successful produce after it; `None` when
/// nothing succeeded after it.
pub(crate) fn time_to_recover(acks: &[f64], last_fault: f64) -> Option<f64> {
    acks.iter()
        .copied()
        .filter(|&t| t >= last_fault)
        .min_by(f64::total_cmp)
        .map(|t| t - last_fault)
}

/// How many produces were acknowledged inside any of `windows` (`[from, to]` stretches in
/// which acks=all must not succeed, e.g. while a majority of the replicas is down).
pub(crate) fn acks_within(acks: &[f64], windows: &[(f64, f64)]) -> usize {
    acks.iter()
        .filter(|&&t| windows.iter().any(|&(from, to)| from <= t && t <= to))
        .count()
}

/// One replica's batches below the high watermark: (base offset, bytes), in offset order.
pub(crate) type ReplicaBatches = Vec<(i64, Vec<u8>)>;

/// Where replicas of one partition differ below its high watermark: followers copy the
/// leader's batches byte for byte, so below the high watermark every replica that has a range
/// must hold the same batches. A replica that simply has less (behind, or its log start moved)
/// is not a divergence; one batch that differs, or a batch one replica has and another skips
/// while holding offsets on both sides, is.
pub(crate) fn replica_divergence(replicas: &[(u16, ReplicaBatches)]) -> Vec<String> {
    let mut found = Vec::new();
    let Some((first_id, first)) = replicas.first() else {
        return found;
    };
    for (id, other) in &replicas[1..] {
        let theirs: HashMap<i64, &Vec<u8>> = other.iter().map(|(b, v)| (*b, v)).collect();
        let ours: HashMap<i64, &Vec<u8>> = first.iter().map(|(b, v)| (*b, v)).collect();
        // The range both hold: from the later start to the earlier end.
        let start = first.first().map(|b| b.0).max(other.first().map(|b| b.0));
        let end = first.last().map(|b| b.0).min(other.last().map(|b| b.0));
        let (Some(start), Some(end)) = (start, end) else {
            continue;
        };
        for (base, bytes) in first.iter().chain(other.iter()) {
            if *base < start || *base > end {
                continue;
            }
            match (ours.get(base), theirs.get(base)) {
                (Some(a), Some(b)) if a != b => {
                    found.push(format!(
                        "node {first_id} and node {id} hold different batches at offset {base} ({} vs {} bytes)",
                        a.len(),
                        b.len()
                    ));
                }
                (Some(_), None) => found.push(format!(
                    "node {first_id} has a batch at offset {base} that node {id} lacks ({} bytes)",
                    bytes.len()
                )),
                (None, Some(_)) => found.push(format!(
                    "node {id} has a batch at offset {base} that node {first_id} lacks ({} bytes)",
                    bytes.len()
                )),
                _ => {}
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    fn history(acked: &[u64], retried: &[u64], read: &[u64]) -> PartitionHistory {
        PartitionHistory {
            acked: acked.to_vec(),
            retried: retried.iter().copied().collect(),
            read: read.to_vec(),
            idempotent: false,
        }
    }

    #[test]
    fn with_idempotence_a_copy_of_a_retried_acked_record_is_a_duplicate() {
        let mut h = history(&[0, 1, 2], &[1, 3], &[0, 1, 1, 2, 3, 3]);
        h.idempotent = true;
        let v = check_partition(&h);
        assert_eq!((v.duplicated, v.retry_duplicates), (1, 1));
        assert!(v.violated());
    }

    #[test]
    fn lost_records_are_attributed_to_the_window_of_their_ack() {
        let acks = [
            AckedBatch {
                at: 1.0,
                seqs: vec![0, 1],
            },
            AckedBatch {
                at: 5.0,
                seqs: vec![2, 3],
            },
            AckedBatch {
                at: 9.0,
                seqs: vec![4, 5],
            },
        ];
        let read = [0, 2, 4, 5];
        assert_eq!(lost_acked_within(&acks, &read, &[]), 0);
        assert_eq!(lost_acked_within(&acks, &read, &[(4.0, 6.0)]), 1);
        assert_eq!(
            lost_acked_within(&acks, &read, &[(0.0, 2.0), (4.0, 6.0)]),
            2
        );
        assert_eq!(lost_acked_within(&acks, &read, &[(8.0, 10.0)]), 0);
    }

    #[test]
    fn first_ack_inside_a_window() {
        assert_eq!(first_ack_within(&[1.0, 7.5, 6.5], (5.0, 8.0)), Some(1.5));
        assert_eq!(first_ack_within(&[1.0, 9.0], (5.0, 8.0)), None);
        assert_eq!(first_ack_within(&[], (5.0, 8.0)), None);
    }

    #[test]
    fn a_clean_partition_has_no_findings() {
        let v = check_partition(&history(&[0, 1, 2, 3], &[], &[0, 1, 2, 3]));
        assert_eq!(
            v,
            PartitionVerdict {
                acked: 4,
                read: 4,
                ..PartitionVerdict::default()
            }
        );
        assert!(!v.violated());
    }

    #[test]
    fn nothing_produced_and_nothing_read() {
        let v = check_partition(&PartitionHistory::default());
        assert_eq!(v, PartitionVerdict::default());
        assert!(!v.violated());
    }

    #[test]
    fn an_empty_partition_loses_everything_acknowledged() {
        let v = check_partition(&history(&[5, 6, 7], &[], &[]));
        assert_eq!((v.lost, v.lost_sample.clone()), (3, vec![5, 6, 7]));
        assert!(v.violated());
    }

    #[test]
    fn a_lost_tail_and_a_lost_middle_are_both_counted() {
        let v = check_partition(&history(&[0, 1, 2, 3, 4], &[], &[0, 2, 3]));
        assert_eq!(v.lost, 2);
        assert_eq!(v.lost_sample, vec![1, 4]);
        assert_eq!(v.reordered, 0);
    }

    #[test]
    fn the_lost_sample_is_bounded() {
        let acked: Vec<u64> = (0..100).collect();
        let v = check_partition(&history(&acked, &[], &[]));
        assert_eq!(v.lost, 100);
        assert_eq!(v.lost_sample, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn unacknowledged_records_may_appear_but_are_counted() {
        let v = check_partition(&history(&[0, 2], &[1], &[0, 1, 2, 3]));
        assert_eq!(v.unacked_appeared, 2);
        assert_eq!(v.read, 4);
        assert!(!v.violated());
    }

    #[test]
    fn a_duplicate_of_a_retried_record_is_allowed() {
        // 1 timed out, was written anyway, then retried and acknowledged.
        let v = check_partition(&history(&[0, 1, 2], &[1], &[0, 1, 1, 2]));
        assert_eq!((v.duplicated, v.retry_duplicates), (0, 1));
        assert!(!v.violated());
    }

    #[test]
    fn a_duplicate_of_an_unacknowledged_record_is_a_retry_duplicate() {
        let v = check_partition(&history(&[0], &[1], &[0, 1, 1]));
        assert_eq!(
            (v.duplicated, v.retry_duplicates, v.unacked_appeared),
            (0, 1, 1)
        );
    }

    #[test]
    fn a_duplicate_of_a_record_acknowledged_first_time_is_a_violation() {
        let v = check_partition(&history(&[0, 1], &[], &[0, 1, 0]));
        assert_eq!(v.duplicated, 1);
        // The copy comes after 1, but the first copy is in order.
        assert_eq!(v.reordered, 0);
        assert!(v.violated());
    }

    #[test]
    fn a_record_overtaken_by_an_earlier_ack_is_reordered() {
        let v = check_partition(&history(&[0, 1, 2, 3], &[], &[0, 2, 1, 3]));
        // 2 was acknowledged after 1 but stands before it: 1 is out of place.
        assert_eq!(v.reordered, 1);
        assert!(v.violated());
    }

    #[test]
    fn a_fully_reversed_partition_counts_every_record_but_the_first_acked() {
        let v = check_partition(&history(&[0, 1, 2, 3], &[], &[3, 2, 1, 0]));
        assert_eq!(v.reordered, 3);
    }

    #[test]
    fn the_ack_order_matters_not_the_sequence_numbers() {
        // Batches from concurrent attempts may be acknowledged out of numeric order.
        let v = check_partition(&history(&[1, 0], &[], &[1, 0]));
        assert_eq!(v.reordered, 0);
    }

    #[test]
    fn lost_records_do_not_count_as_reordered() {
        let v = check_partition(&history(&[0, 1, 2], &[], &[0, 2]));
        assert_eq!((v.lost, v.reordered), (1, 0));
    }

    #[test]
    fn an_ack_repeated_in_the_ack_list_counts_once() {
        let v = check_partition(&history(&[0, 0, 1], &[], &[0, 1]));
        assert_eq!(v.acked, 2);
        assert!(!v.violated());
    }

    #[test]
    fn longest_gap_includes_the_edges() {
        assert_eq!(longest_gap(&[], 0.0, 10.0), 10.0);
        assert_eq!(longest_gap(&[1.0, 2.0, 9.0], 0.0, 10.0), 7.0);
        assert_eq!(longest_gap(&[9.0, 1.0, 2.0], 0.0, 10.0), 7.0);
        assert_eq!(longest_gap(&[4.0], 0.0, 5.0), 4.0);
        assert_eq!(longest_gap(&[1.0, 2.0], 0.0, 3.0), 1.0);
        // Times outside the window are ignored.
        assert_eq!(longest_gap(&[-1.0, 12.0], 0.0, 10.0), 10.0);
    }

    #[test]
    fn recovery_is_measured_from_the_last_fault() {
        assert_eq!(time_to_recover(&[1.0, 6.5, 7.0], 5.0), Some(1.5));
        assert_eq!(time_to_recover(&[7.0, 6.5, 1.0], 5.0), Some(1.5));
        assert_eq!(time_to_recover(&[1.0, 2.0], 5.0), None);
        assert_eq!(time_to_recover(&[], 0.0), None);
    }

    #[test]
    fn acks_inside_windows_are_counted() {
        let acks = [0.5, 2.0, 3.0, 4.5, 8.0];
        assert_eq!(acks_within(&acks, &[]), 0);
        assert_eq!(acks_within(&acks, &[(2.0, 4.5)]), 3);
        assert_eq!(acks_within(&acks, &[(0.0, 1.0), (7.0, 9.0)]), 2);
    }

    /// The definitions, written the slow and obvious way.
    fn brute_force(h: &PartitionHistory) -> PartitionVerdict {
        let mut acked_once: Vec<u64> = Vec::new();
        for &s in &h.acked {
            if !acked_once.contains(&s) {
                acked_once.push(s);
            }
        }
        let pos = |s: u64| h.read.iter().position(|&r| r == s);
        let count = |s: u64| h.read.iter().filter(|&&r| r == s).count();
        let lost: Vec<u64> = acked_once
            .iter()
            .copied()
            .filter(|&s| pos(s).is_none())
            .collect();
        let mut reordered = 0;
        for (i, &b) in acked_once.iter().enumerate() {
            let Some(pb) = pos(b) else { continue };
            if acked_once[..i]
                .iter()
                .any(|&a| pos(a).is_some_and(|pa| pa > pb))
            {
                reordered += 1;
            }
        }
        let mut distinct: Vec<u64> = h.read.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let is_acked = |s: u64| acked_once.contains(&s);
        PartitionVerdict {
            acked: acked_once.len(),
            read: h.read.len(),
            lost: lost.len(),
            lost_sample: lost.into_iter().take(SAMPLE).collect(),
            duplicated: distinct
                .iter()
                .filter(|&&s| {
                    count(s) > 1 && is_acked(s) && (h.idempotent || !h.retried.contains(&s))
                })
                .count(),
            retry_duplicates: distinct
                .iter()
                .filter(|&&s| {
                    count(s) > 1 && (!is_acked(s) || (!h.idempotent && h.retried.contains(&s)))
                })
                .count(),
            reordered,
            unacked_appeared: distinct.iter().filter(|&&s| !is_acked(s)).count(),
        }
    }

    /// A random history: records acknowledged roughly in order, some retried, then a
    /// partition that lost, duplicated, swapped and gained records.
    fn random_history(rng: &mut StdRng) -> PartitionHistory {
        let n = rng.random_range(0..40u64);
        let mut acked = Vec::new();
        let mut retried = HashSet::new();
        for s in 0..n {
            if rng.random_bool(0.2) {
                retried.insert(s);
            }
            if rng.random_bool(0.8) {
                acked.push(s);
            }
        }
        if acked.len() > 1 && rng.random_bool(0.3) {
            let i = rng.random_range(1..acked.len());
            acked.swap(i - 1, i);
        }
        let mut read: Vec<u64> = (0..n).filter(|_| rng.random_bool(0.9)).collect();
        for _ in 0..rng.random_range(0..4) {
            if read.is_empty() {
                break;
            }
            match rng.random_range(0..3) {
                0 => {
                    let i = rng.random_range(0..read.len());
                    read.insert(rng.random_range(0..=read.len()), read[i]);
                }
                1 => {
                    let (i, j) = (
                        rng.random_range(0..read.len()),
                        rng.random_range(0..read.len()),
                    );
                    read.swap(i, j);
                }
                _ => read.push(n + rng.random_range(0..3)),
            }
        }
        PartitionHistory {
            acked,
            retried,
            read,
            idempotent: rng.random_bool(0.5),
        }
    }

    #[test]
    fn agrees_with_the_brute_force_model_on_random_histories() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for case in 0..2000 {
            let h = random_history(&mut rng);
            assert_eq!(check_partition(&h), brute_force(&h), "case {case}: {h:?}");
        }
    }

    #[test]
    fn replicas_that_agree_or_only_lag_do_not_diverge() {
        let b = |base: i64, byte: u8| (base, vec![byte; 4]);
        let leader = vec![b(0, 1), b(4, 2), b(8, 3)];
        let behind = vec![b(0, 1), b(4, 2)];
        let trimmed = vec![b(4, 2), b(8, 3)];
        assert!(replica_divergence(&[(1, leader.clone()), (2, behind), (3, trimmed)]).is_empty());
        let differs = vec![b(0, 1), b(4, 9), b(8, 3)];
        let skips = vec![b(0, 1), b(8, 3)];
        let found = replica_divergence(&[(1, leader), (2, differs), (3, skips)]);
        assert_eq!(
            found,
            vec![
                "node 1 and node 2 hold different batches at offset 4 (4 vs 4 bytes)".to_owned(),
                "node 1 has a batch at offset 4 that node 3 lacks (4 bytes)".to_owned(),
            ]
        );
    }
}
