//! A compacted topic written during the faults: one idempotent acks=all producer writes
//! values for a small set of keys to `<topic>-compacted`, whose small segments and low dirty
//! ratio make the cleaner compact it within a run. Afterwards every key's last value must be
//! its last acknowledged one or a later unacknowledged one, never an older one and never
//! missing.

use std::collections::HashMap;

use runnel_client::ProducerRecord;
use serde::Serialize;

/// Keys the producer writes to (a few records per key per second, so most get compacted).
const KEYS: u64 = 32;
/// How many findings a verdict describes.
const SAMPLE: usize = 10;

/// The configs of the compacted topic: segments roll every few KB or every second and any
/// dirty share is worth cleaning, so the cleaner (every `log.cleaner.backoff.ms`) runs within
/// a short run.
pub(crate) const TOPIC_CONFIGS: [(&str, &str); 4] = [
    ("cleanup.policy", "compact"),
    ("segment.bytes", "4096"),
    ("segment.ms", "1000"),
    ("min.cleanable.dirty.ratio", "0.01"),
];

/// The compacted topic of a run on `topic`.
pub(crate) fn topic_name(topic: &str) -> String {
    format!("{topic}-compacted")
}

/// The key record `seq` is written under: spread by a fixed mix, so any run writes the keys
/// in the same order.
fn key_of(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % KEYS
}

/// Record `seq` of the compacted topic (it has one partition).
pub(crate) fn record(_partition: i32, seq: u64) -> ProducerRecord {
    let key = key_of(seq);
    ProducerRecord::key_value(format!("k{key}"), format!("compacted:{key}:{seq}"))
}

/// The (key, sequence number) of a value written by [`record`].
pub(crate) fn parse_value(value: &[u8]) -> Option<(u64, u64)> {
    let rest = std::str::from_utf8(value)
        .ok()?
        .strip_prefix("compacted:")?;
    let (key, seq) = rest.split_once(':')?;
    Some((key.parse().ok()?, seq.parse().ok()?))
}

/// The verdict on the compacted topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct CompactedVerdict {
    pub(crate) topic: String,
    /// Records acknowledged, and the keys they cover.
    pub(crate) acked: usize,
    pub(crate) keys: usize,
    pub(crate) produce_errors: u64,
    /// Records read back, and the log end offset they were read up to: the difference is
    /// what the cleaner removed.
    pub(crate) read: usize,
    pub(crate) log_end_offset: Option<i64>,
    /// Keys with an acknowledged value that are not in the topic: must be none.
    pub(crate) missing_keys: usize,
    /// Keys whose last value is older than their last acknowledged one: must be none.
    pub(crate) stale_keys: usize,
    /// Records whose offset is not above the one before: must be none.
    pub(crate) offsets_not_increasing: usize,
    pub(crate) sample: Vec<String>,
    /// Why the topic could not be read back (then every key counts as missing).
    pub(crate) read_error: Option<String>,
}

impl CompactedVerdict {
    pub(crate) fn violated(&self) -> bool {
        self.missing_keys > 0 || self.stale_keys > 0 || self.offsets_not_increasing > 0
    }
}

/// Judges the read-back `read` ((offset, (key, sequence number)) in the order read) against
/// the acknowledged sequence numbers `acked` (the producer is idempotent, so the log holds
/// them in sequence order, and a later sequence number of a key is a later value).
pub(crate) fn check_compacted(acked: &[u64], read: &[(i64, (u64, u64))]) -> CompactedVerdict {
    let mut last_acked: HashMap<u64, u64> = HashMap::new();
    for &seq in acked {
        let e = last_acked.entry(key_of(seq)).or_insert(seq);
        *e = (*e).max(seq);
    }
    let mut v = CompactedVerdict {
        acked: acked.len(),
        keys: last_acked.len(),
        read: read.len(),
        ..CompactedVerdict::default()
    };
    let note = |v: &mut CompactedVerdict, finding: String| {
        if v.sample.len() < SAMPLE {
            v.sample.push(finding);
        }
    };
    let mut last_read: HashMap<u64, u64> = HashMap::new();
    let mut previous: Option<i64> = None;
    for &(offset, (key, seq)) in read {
        if previous.is_some_and(|p| offset <= p) {
            v.offsets_not_increasing += 1;
            note(
                &mut v,
                format!("offset {offset} follows offset {previous:?}"),
            );
        }
        previous = Some(offset);
        last_read.insert(key, seq);
    }
    let mut keys: Vec<(&u64, &u64)> = last_acked.iter().collect();
    keys.sort();
    for (key, &acked_seq) in keys {
        match last_read.get(key) {
            None => {
                v.missing_keys += 1;
                note(
                    &mut v,
                    format!("key k{key} is missing (last acknowledged value {acked_seq})"),
                );
            }
            Some(&seq) if seq < acked_seq => {
                v.stale_keys += 1;
                note(
                    &mut v,
                    format!(
                        "key k{key} holds value {seq}, older than the acknowledged {acked_seq}"
                    ),
                );
            }
            Some(_) => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first sequence numbers (from `from`) that go to `key`.
    fn seqs_of(key: u64, from: u64, n: usize) -> Vec<u64> {
        (from..).filter(|&s| key_of(s) == key).take(n).collect()
    }

    fn read_of(seqs: &[u64]) -> Vec<(i64, (u64, u64))> {
        seqs.iter()
            .enumerate()
            .map(|(i, &s)| (i as i64 * 3, (key_of(s), s)))
            .collect()
    }

    #[test]
    fn values_round_trip_and_keys_stay_in_the_key_space() {
        let r = record(0, 77);
        let (key, seq) = parse_value(r.value.as_deref().unwrap()).unwrap();
        assert_eq!((key, seq), (key_of(77), 77));
        assert_eq!(r.key.as_deref(), Some(format!("k{key}").as_bytes()));
        assert!((0..1000).all(|s| key_of(s) < KEYS));
        assert_eq!(parse_value(b"chaos:0:1"), None);
    }

    #[test]
    fn the_last_acknowledged_or_a_later_value_passes() {
        let a = seqs_of(1, 0, 3);
        let b = seqs_of(2, 0, 2);
        // Key 1 kept its last acked value; key 2 a later, unacknowledged one.
        let acked = [a[0], a[2], b[0]];
        let v = check_compacted(&acked, &read_of(&[a[2], b[1]]));
        assert_eq!((v.keys, v.acked, v.read), (2, 3, 2));
        assert!(!v.violated(), "{v:?}");
    }

    #[test]
    fn an_older_value_or_a_missing_key_fails() {
        let a = seqs_of(1, 0, 3);
        let b = seqs_of(2, 0, 1);
        let v = check_compacted(&[a[0], a[2], b[0]], &read_of(&[a[1]]));
        assert_eq!((v.stale_keys, v.missing_keys), (1, 1));
        assert!(v.violated());
        assert_eq!(v.sample.len(), 2);
    }

    #[test]
    fn the_last_record_of_a_key_decides_and_offsets_must_rise() {
        let a = seqs_of(1, 0, 2);
        // The newer value then the older one again at a higher offset: stale.
        let v = check_compacted(&[a[1]], &[(0, (1, a[1])), (5, (1, a[0]))]);
        assert_eq!(v.stale_keys, 1);
        let v = check_compacted(&[a[0]], &[(5, (1, a[0])), (5, (1, a[1]))]);
        assert_eq!(v.offsets_not_increasing, 1);
        assert!(v.violated());
    }
}
