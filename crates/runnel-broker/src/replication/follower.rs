//! Where a follower truncates its log when it starts following a new leader (KIP-101,
//! KIP-279) or when a fetch response reports a diverging epoch (KIP-320), after Kafka's
//! `AbstractFetcherThread.getOffsetTruncationState` and `LeaderEpochFileCache.endOffsetFor`.
//!
//! Every replica keeps a leader-epoch cache: `(epoch, start offset)` pairs, both increasing.
//! An epoch's records run from its start to the next epoch's start (the last epoch's to the
//! LEO). Records of one epoch at one offset come from that epoch's single leader, so two logs
//! agree up to the end of the newest epoch they share; the follower keeps that much and drops
//! the rest. Truncating to the high watermark instead (before KIP-101) could lose
//! acknowledged records or leave replicas diverged.

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// An epoch and where it ends (exclusive): an OffsetForLeaderEpoch answer, or a fetch
/// response's diverging epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: i32,
    pub end_offset: i64,
}

impl EpochEndOffset {
    pub const UNDEFINED: Self = Self {
        epoch: UNDEFINED_EPOCH,
        end_offset: UNDEFINED_EPOCH_OFFSET,
    };
}

/// Where to truncate (Kafka's `OffsetTruncationState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// Truncate the log to this offset; the LEO itself means nothing to drop.
    pub offset: i64,
    /// False when the follower never had the leader's epoch: it truncates to the end of its
    /// newest epoch below that, then asks again with its new latest epoch.
    pub complete: bool,
}

/// Kafka's `LeaderEpochFileCache.endOffsetFor`: the newest epoch `<= requested_epoch` in
/// `epochs` and where it ends. The leader answers OffsetForLeaderEpoch with this; a follower
/// uses it to find where its own copy of an epoch ends.
/// - the latest epoch ends at the LEO;
/// - an older one ends where the next epoch starts; an epoch that is missing maps to the
///   newest epoch below it (or to itself when there is none, ending at the first start);
/// - an epoch newer than all is UNDEFINED.
pub fn end_offset_for_epoch(
    epochs: &[(i32, i64)],
    log_end_offset: i64,
    requested_epoch: i32,
) -> EpochEndOffset {
    let (epoch, end_offset) =
        runnel_storage::end_offset_for(epochs, requested_epoch, log_end_offset);
    EpochEndOffset { epoch, end_offset }
}

/// Where a follower truncates given the leader's answer to OffsetForLeaderEpoch for the
/// follower's latest epoch (Kafka's `getOffsetTruncationState`):
/// - UNDEFINED end offset: the leader knows no epoch to compare with; fall back to the
///   follower's high watermark, below which everything is committed and so on the leader;
/// - the leader's epoch is the one asked for: its records agree up to where it ends on the
///   leader, so `min(end_offset, local LEO)`;
/// - a smaller epoch E ending at O (the follower has epochs the leader never had): the logs
///   agree up to where E ends on both, `min(O, local end of E, local LEO)`. If the follower
///   lacks E itself, it truncates to the end of its newest epoch below E and asks again
///   (`complete: false`), since its copy of that epoch may be longer than the leader's.
pub fn truncation_offset(
    local_leo: i64,
    local_hw: i64,
    local_epochs: &[(i32, i64)],
    leader_answer: EpochEndOffset,
) -> Truncation {
    if leader_answer.end_offset == UNDEFINED_EPOCH_OFFSET {
        return Truncation {
            offset: local_hw.min(local_leo),
            complete: true,
        };
    }
    truncate_to_epoch_end(local_leo, local_epochs, leader_answer)
}

/// Where a follower truncates when a fetch response carries a diverging epoch (KIP-320: the
/// leader found the follower's last fetched epoch ending before the fetch offset, or missing).
/// The same rule as [`truncation_offset`] for a defined answer: `min(end_offset, local end of
/// that epoch)`, asking again when the follower lacks the epoch.
pub fn truncation_on_diverging_epoch(
    local_leo: i64,
    local_epochs: &[(i32, i64)],
    diverging_epoch: EpochEndOffset,
) -> Truncation {
    truncate_to_epoch_end(local_leo, local_epochs, diverging_epoch)
}

fn truncate_to_epoch_end(
    local_leo: i64,
    local_epochs: &[(i32, i64)],
    leader: EpochEndOffset,
) -> Truncation {
    let local = end_offset_for_epoch(local_epochs, local_leo, leader.epoch);
    if local.end_offset == UNDEFINED_EPOCH_OFFSET {
        // No local epoch to compare with (an empty cache): trust the leader's end offset.
        return Truncation {
            offset: leader.end_offset.min(local_leo),
            complete: true,
        };
    }
    if local.epoch != leader.epoch {
        return Truncation {
            offset: local.end_offset.min(local_leo),
            complete: false,
        };
    }
    Truncation {
        offset: leader.end_offset.min(local.end_offset).min(local_leo),
        complete: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch 1 from 0, epoch 3 from 10, epoch 4 from 15; LEO 20.
    const EPOCHS: &[(i32, i64)] = &[(1, 0), (3, 10), (4, 15)];

    fn answer(epoch: i32, end_offset: i64) -> EpochEndOffset {
        EpochEndOffset { epoch, end_offset }
    }

    fn done(offset: i64) -> Truncation {
        Truncation {
            offset,
            complete: true,
        }
    }

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        let end = |e| end_offset_for_epoch(EPOCHS, 20, e);
        assert_eq!(end(4), answer(4, 20));
        assert_eq!(end(3), answer(3, 15));
        assert_eq!(end(2), answer(1, 10)); // missing: the newest epoch below it
        assert_eq!(end(0), answer(0, 0)); // older than all
        assert_eq!(end(5), EpochEndOffset::UNDEFINED);
        assert_eq!(end(UNDEFINED_EPOCH), EpochEndOffset::UNDEFINED);
        assert_eq!(end_offset_for_epoch(&[], 0, 1), EpochEndOffset::UNDEFINED);
    }

    #[test]
    fn an_undefined_answer_truncates_to_the_high_watermark() {
        assert_eq!(
            truncation_offset(20, 7, EPOCHS, EpochEndOffset::UNDEFINED),
            done(7)
        );
    }

    #[test]
    fn the_same_epoch_truncates_to_the_leaders_end() {
        assert_eq!(truncation_offset(20, 7, EPOCHS, answer(4, 18)), done(18));
        // The leader has more: nothing to truncate.
        assert_eq!(truncation_offset(20, 7, EPOCHS, answer(4, 25)), done(20));
    }

    #[test]
    fn an_older_epoch_truncates_to_where_both_copies_end() {
        // The leader's epoch 3 ends at 12, the follower's at 15.
        assert_eq!(truncation_offset(20, 7, EPOCHS, answer(3, 12)), done(12));
        // The leader's epoch 3 runs to 17, but the follower's ended at 15 (epoch 4 came next).
        assert_eq!(truncation_offset(20, 7, EPOCHS, answer(3, 17)), done(15));
    }

    #[test]
    fn a_missing_epoch_truncates_in_steps() {
        // The follower never had epoch 2: drop what follows its epoch 1, then ask again.
        assert_eq!(
            truncation_offset(20, 7, EPOCHS, answer(2, 12)),
            Truncation {
                offset: 10,
                complete: false
            }
        );
        // Asked about epoch 1 (now the latest), the leader says it ends at 8.
        assert_eq!(truncation_offset(10, 7, &[(1, 0)], answer(1, 8)), done(8));
    }

    #[test]
    fn an_empty_cache_trusts_the_leader() {
        assert_eq!(truncation_offset(8, 0, &[], answer(2, 5)), done(5));
    }

    #[test]
    fn diverging_epoch_in_a_fetch_response() {
        assert_eq!(
            truncation_on_diverging_epoch(20, EPOCHS, answer(3, 12)),
            done(12)
        );
        assert_eq!(
            truncation_on_diverging_epoch(20, EPOCHS, answer(4, 16)),
            done(16)
        );
        assert!(!truncation_on_diverging_epoch(20, EPOCHS, answer(2, 11)).complete);
    }
}
