//! Key-based partitioning compatible with the Java client's default partitioner.

/// Kafka's `Utils.murmur2`: 32-bit murmur2 with seed `0x9747b28c`, returned as a Java `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for a keyed record:
/// `toPositive(murmur2(key)) % numPartitions`.
///
/// # Panics
/// Panics if `num_partitions` is not positive.
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> i32 {
    assert!(num_partitions > 0, "num_partitions must be positive");
    to_positive(murmur2(key)) % num_partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_java() {
        // Values from Kafka's UtilsTest.testMurmur2 and the Java client.
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()), *expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn murmur2_handles_every_tail_length() {
        // Must not panic and must be deterministic for lengths 0..=8.
        let data = b"abcdefgh";
        for n in 0..=data.len() {
            assert_eq!(murmur2(&data[..n]), murmur2(&data[..n]));
        }
    }

    #[test]
    fn partitioning_is_positive_and_in_range() {
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        for key in ["21", "foobar", "abc", ""] {
            let p = partition_for_key(key.as_bytes(), 7);
            assert!((0..7).contains(&p));
        }
        // toPositive(-973932308) % 3 == 1173551340 % 3 == 0
        assert_eq!(partition_for_key(b"21", 3), 1_173_551_340 % 3);
    }
}
