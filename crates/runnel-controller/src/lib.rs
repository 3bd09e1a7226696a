//! Runnel's controller: the cluster metadata image (brokers, topics, partitions, leaders, ISR,
//! epochs, producer-id blocks), the commands that change it, and the openraft storage (log,
//! vote and state-machine snapshots in sled) that replicates those commands between
//! controllers. Applying a command is deterministic, so every controller computes the same
//! image.
//!
//! Status: the image, commands, storage and the Raft network over gRPC (`raft`, with a
//! three-controller failover test) are built; wiring them into the node (one gRPC server per
//! node, broker registration and heartbeats, fencing timers, request forwarding) is the rest
//! of the controller issue.

pub mod command;
pub mod error;
pub mod image;
pub mod raft;
pub mod store;

mod cluster;
mod placement;
mod producer_ids;
mod replication;
mod topics;

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod proptests;
