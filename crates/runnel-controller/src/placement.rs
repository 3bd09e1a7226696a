//! Replica placement for new partitions: Kafka's classic `assignReplicasToBrokers`
//! (`AdminUtils` / `ReplicaAssignment`), rack-unaware and rack-aware.
//!
//! Leaders go round-robin over the brokers from a start index; each follower sits at a shift
//! from its leader that changes every `brokers` partitions, so followers spread as evenly as
//! leaders. When every broker has a rack, the broker list alternates racks and a partition's
//! replicas go to different racks while any rack is still without one.
//!
//! Kafka draws the start index and the shift at random. Here they are inputs ([`Seed`]), so
//! applying the same command always gives the same assignment: the caller derives them from
//! the command (see [`Seed::from_topic_id`]).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// A broker replicas may go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    pub(crate) id: i32,
    pub(crate) rack: Option<&'a str>,
}

/// Where the round-robin starts and where followers start relative to their leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seed {
    pub(crate) start_index: usize,
    pub(crate) replica_shift: usize,
}

impl Seed {
    /// Seed of a new topic: bits of its id. The active controller draws the id at random when
    /// it builds the CreateTopic command, so topics created one after another start their
    /// leaders on different brokers (as Kafka's random start does), while replaying the command
    /// gives the same assignment on every node. The name would also be deterministic, but the
    /// same name would then always land on the same brokers.
    pub(crate) fn from_topic_id(id: Uuid, brokers: usize) -> Self {
        let bits = id.as_u128();
        let n = brokers.max(1) as u128;
        Seed {
            start_index: (bits % n) as usize,
            replica_shift: ((bits >> 64) % n) as usize,
        }
    }

    /// Seed for partitions added to an existing topic: Kafka's `addPartitions` starts at the
    /// first broker whose id is at or above partition 0's preferred leader and uses that index
    /// as the shift too, so new partitions continue the existing pattern.
    pub(crate) fn for_added_partitions(
        brokers: &[Candidate<'_>],
        partition0_leader: i32,
        fallback: Seed,
    ) -> Self {
        match brokers.iter().position(|b| b.id >= partition0_leader) {
            Some(i) => Seed {
                start_index: i,
                replica_shift: i,
            },
            None => fallback,
        }
    }
}

/// Assigns `rf` replicas to each of `partitions` new partitions numbered from
/// `first_partition`. `brokers` must be sorted by id, without duplicates, and
/// `1 <= rf <= brokers.len()`. Rack-aware when every broker has a rack.
pub(crate) fn assign_replicas(
    brokers: &[Candidate<'_>],
    partitions: usize,
    rf: usize,
    first_partition: usize,
    seed: Seed,
) -> Vec<Vec<i32>> {
    debug_assert!(rf >= 1 && rf <= brokers.len());
    if brokers.iter().all(|b| b.rack.is_some()) {
        assign_rack_aware(brokers, partitions, rf, first_partition, seed)
    } else {
        assign_rack_unaware(brokers, partitions, rf, first_partition, seed)
    }
}

/// The follower shift at `first_partition`: the seed's, plus one for every full round of `n`
/// partitions before it, so partitions added later continue exactly where the first ones
/// stopped (Kafka restarts the shift from the seed here).
fn initial_shift(seed: Seed, first_partition: usize, n: usize) -> usize {
    seed.replica_shift % n + first_partition.saturating_sub(1) / n
}

/// Index of the `j`-th follower of the leader at `first` (never `first` itself).
fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    let offset = 1 + (shift + j) % (n - 1);
    (first + offset) % n
}

fn assign_rack_unaware(
    brokers: &[Candidate<'_>],
    partitions: usize,
    rf: usize,
    first_partition: usize,
    seed: Seed,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    let mut shift = initial_shift(seed, first_partition, n);
    let mut out = Vec::with_capacity(partitions);
    for p in first_partition..first_partition + partitions {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + seed.start_index) % n;
        let mut replicas = Vec::with_capacity(rf);
        replicas.push(brokers[first].id);
        for j in 0..rf - 1 {
            replicas.push(brokers[replica_index(first, shift, j, n)].id);
        }
        out.push(replicas);
    }
    out
}

/// The brokers ordered so that racks alternate: the lowest id of each rack (racks in name
/// order), then the second lowest of each, and so on.
fn rack_alternated<'a>(brokers: &[Candidate<'a>]) -> Vec<Candidate<'a>> {
    let mut by_rack: BTreeMap<&str, Vec<&Candidate<'a>>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.unwrap_or("")).or_default().push(b);
    }
    for ids in by_rack.values_mut() {
        ids.sort_by_key(|b| b.id);
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while out.len() < brokers.len() {
        for members in by_rack.values() {
            if let Some(b) = members.get(round) {
                out.push((*b).clone());
            }
        }
        round += 1;
    }
    out
}

fn assign_rack_aware(
    brokers: &[Candidate<'_>],
    partitions: usize,
    rf: usize,
    first_partition: usize,
    seed: Seed,
) -> Vec<Vec<i32>> {
    let arranged = rack_alternated(brokers);
    let n = arranged.len();
    let racks: BTreeSet<&str> = arranged.iter().filter_map(|b| b.rack).collect();
    let num_racks = racks.len();
    let mut shift = initial_shift(seed, first_partition, n);
    let mut out = Vec::with_capacity(partitions);
    for p in first_partition..first_partition + partitions {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + seed.start_index) % n;
        let leader = &arranged[first];
        let mut replicas = vec![leader.id];
        let mut racks_used: BTreeSet<&str> = leader.rack.into_iter().collect();
        let mut brokers_used: BTreeSet<i32> = BTreeSet::from([leader.id]);
        let mut k = 0;
        for _ in 0..rf - 1 {
            loop {
                let candidate = &arranged[replica_index(first, shift * num_racks, k, n)];
                k += 1;
                let rack = candidate.rack.unwrap_or("");
                // Skip a broker whose rack already has a replica while some rack has none,
                // and a broker that already has one (cannot happen while rf <= brokers).
                let rack_ok = !racks_used.contains(rack) || racks_used.len() == num_racks;
                let broker_ok = !brokers_used.contains(&candidate.id) || brokers_used.len() == n;
                if rack_ok && broker_ok {
                    replicas.push(candidate.id);
                    racks_used.insert(rack);
                    brokers_used.insert(candidate.id);
                    break;
                }
            }
        }
        out.push(replicas);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn plain(ids: &[i32]) -> Vec<Candidate<'static>> {
        ids.iter().map(|&id| Candidate { id, rack: None }).collect()
    }

    fn seed(start_index: usize, replica_shift: usize) -> Seed {
        Seed {
            start_index,
            replica_shift,
        }
    }

    #[test]
    fn matches_kafkas_documented_example() {
        // The example in Kafka's AdminUtils doc comment: 5 brokers, 10 partitions, RF 3,
        // start index 0, shift 0.
        let got = assign_replicas(&plain(&[0, 1, 2, 3, 4]), 10, 3, 0, seed(0, 0));
        let want: Vec<Vec<i32>> = vec![
            vec![0, 1, 2],
            vec![1, 2, 3],
            vec![2, 3, 4],
            vec![3, 4, 0],
            vec![4, 0, 1],
            vec![0, 2, 3],
            vec![1, 3, 4],
            vec![2, 4, 0],
            vec![3, 0, 1],
            vec![4, 1, 2],
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let brokers = plain(&[1, 2, 3]);
        for start in 0..3 {
            for shift in 0..3 {
                let got = assign_replicas(&brokers, 6, 2, 0, seed(start, shift));
                let mut leaders = BTreeMap::new();
                let mut replicas = BTreeMap::new();
                for r in &got {
                    assert_eq!(r.len(), 2);
                    assert_ne!(r[0], r[1]);
                    *leaders.entry(r[0]).or_insert(0) += 1;
                    for b in r {
                        *replicas.entry(*b).or_insert(0) += 1;
                    }
                }
                assert!(leaders.values().all(|&c| c == 2), "{got:?}");
                assert!(replicas.values().all(|&c| c == 4), "{got:?}");
            }
        }
    }

    #[test]
    fn single_broker() {
        let got = assign_replicas(&plain(&[7]), 3, 1, 0, seed(5, 9));
        assert_eq!(got, vec![vec![7], vec![7], vec![7]]);
    }

    #[test]
    fn added_partitions_continue_the_pattern() {
        let brokers = plain(&[0, 1, 2, 3, 4]);
        let all = assign_replicas(&brokers, 10, 3, 0, seed(0, 0));
        let s = Seed::for_added_partitions(&brokers, all[0][0], seed(3, 3));
        assert_eq!(s, seed(0, 0));
        for first in 0..10 {
            assert_eq!(
                assign_replicas(&brokers, 10 - first, 3, first, s),
                all[first..].to_vec(),
                "from partition {first}"
            );
        }
        // No broker at or above the old leader: fall back.
        assert_eq!(
            Seed::for_added_partitions(&brokers, 9, seed(3, 2)),
            seed(3, 2)
        );
    }

    #[test]
    fn rack_alternation() {
        let brokers = vec![
            Candidate {
                id: 0,
                rack: Some("a"),
            },
            Candidate {
                id: 1,
                rack: Some("a"),
            },
            Candidate {
                id: 2,
                rack: Some("b"),
            },
            Candidate {
                id: 3,
                rack: Some("c"),
            },
            Candidate {
                id: 4,
                rack: Some("c"),
            },
            Candidate {
                id: 5,
                rack: Some("b"),
            },
        ];
        let ids: Vec<i32> = rack_alternated(&brokers).iter().map(|b| b.id).collect();
        assert_eq!(ids, [0, 2, 3, 1, 5, 4]);
    }

    #[test]
    fn rack_aware_puts_replicas_on_distinct_racks() {
        let brokers = vec![
            Candidate {
                id: 1,
                rack: Some("a"),
            },
            Candidate {
                id: 2,
                rack: Some("a"),
            },
            Candidate {
                id: 3,
                rack: Some("b"),
            },
            Candidate {
                id: 4,
                rack: Some("b"),
            },
            Candidate {
                id: 5,
                rack: Some("c"),
            },
            Candidate {
                id: 6,
                rack: Some("c"),
            },
        ];
        let rack_of = |id: i32| brokers.iter().find(|b| b.id == id).unwrap().rack.unwrap();
        for start in 0..6 {
            for shift in 0..6 {
                for rf in 1..=6 {
                    let got = assign_replicas(&brokers, 12, rf, 0, seed(start, shift));
                    for r in &got {
                        assert_eq!(r.len(), rf);
                        let distinct: BTreeSet<i32> = r.iter().copied().collect();
                        assert_eq!(distinct.len(), rf, "{r:?}");
                        let racks: BTreeSet<&str> = r.iter().map(|&b| rack_of(b)).collect();
                        assert_eq!(racks.len(), rf.min(3), "{r:?}");
                    }
                    let mut leaders = BTreeMap::new();
                    for r in &got {
                        *leaders.entry(r[0]).or_insert(0) += 1;
                    }
                    assert!(leaders.values().all(|&c| c == 2), "{got:?}");
                }
            }
        }
    }

    #[test]
    fn mixed_racks_fall_back_to_rack_unaware() {
        let brokers = vec![
            Candidate {
                id: 1,
                rack: Some("a"),
            },
            Candidate { id: 2, rack: None },
        ];
        let got = assign_replicas(&brokers, 2, 2, 0, seed(0, 0));
        assert_eq!(got, assign_replicas(&plain(&[1, 2]), 2, 2, 0, seed(0, 0)));
    }

    #[test]
    fn seed_from_topic_id_is_in_range_and_stable() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let s = Seed::from_topic_id(id, 5);
        assert!(s.start_index < 5 && s.replica_shift < 5);
        assert_eq!(s, Seed::from_topic_id(id, 5));
        assert_eq!(Seed::from_topic_id(id, 0), seed(0, 0));
    }
}
