//! The consumer-group coordinator (Kafka's classic group protocol).
//!
//! - [`state`]: one group as a pure state machine (no I/O, time passed in).
//! - [`coordinator`]: [`GroupCoordinator`], which owns the groups of the `__consumer_offsets`
//!   partitions this node leads, parks JoinGroup/SyncGroup requests, runs the timers and writes
//!   group state to the log.
//! - [`records`]: the key/value codec of `__consumer_offsets` records; [`store`] reads and
//!   appends them.
//! - [`consumer_protocol`]: the topics in a consumer's subscription metadata.

pub mod consumer_protocol;
pub mod coordinator;
pub mod records;
pub mod state;
mod store;

pub use coordinator::{
    CommitRequest, FoundCoordinator, GroupCoordinator, GroupDescription, GroupOverview,
    MemberDescription, OffsetCommit, OFFSETS_TOPIC, OFFSET_METADATA_MAX_BYTES,
};
pub use state::{
    GroupLimits, GroupState, JoinRequest, JoinResult, JoinedMember, LeavingMember, SyncRequest,
    SyncResult,
};

/// Java's `String.hashCode` (over UTF-16 code units, wrapping).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group: Kafka's
/// `Utils.abs(groupId.hashCode) % partitionCount` (where `Utils.abs(Integer.MIN_VALUE)` is 0).
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // Non-ASCII hashes UTF-16 units, like Java.
        assert_eq!(java_string_hash("é"), 0xe9);
        assert_eq!(java_string_hash("😀"), 0xd83d * 31 + 0xde00);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // A negative hash takes the absolute value.
        let h = java_string_hash("my-consumer-group-with-a-long-name");
        assert_eq!(
            partition_for("my-consumer-group-with-a-long-name", 50),
            h.abs() % 50
        );
    }
}
