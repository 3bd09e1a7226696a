//! The pure core of Kafka-style ISR replication: plain state machines with no I/O, no async
//! and no clock (callers pass `now_ms`), in the style of raft-rs. Callers feed events in and
//! act on the decisions that come out.
//!
//! - [`leader`]: [`LeaderState`], what the leader of one partition tracks about its
//!   followers: the high watermark, ISR shrink/expand proposals (Kafka's AlterPartition) and
//!   when acks=all requests are committed.
//! - [`follower`]: where a follower truncates its log after a leader change (KIP-101/279,
//!   and KIP-320's diverging epoch in fetch responses), and the leader-epoch lookup that
//!   answers OffsetForLeaderEpoch.

pub mod checkpoint;
pub mod fetcher;
pub mod follower;
pub mod isr;
pub mod leader;
pub mod service;

#[cfg(test)]
mod sim_tests;

pub use follower::{
    end_offset_for_epoch, truncation_offset, truncation_on_diverging_epoch, EpochEndOffset,
    Truncation,
};
pub use leader::{FetchError, FetchOutcome, ImageUpdate, IsrChange, LeaderState};
