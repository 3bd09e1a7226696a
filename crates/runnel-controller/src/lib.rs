//! Runnel's controller: the cluster metadata image (brokers, topics, partitions, leaders, ISR,
//! epochs, producer-id blocks), the commands that change it, and the openraft storage (log,
//! vote and state-machine snapshots in sled) that replicates those commands between
//! controllers. Applying a command is deterministic, so every controller computes the same
//! image.
//!
//! - [`raft`]: the [`raft::Controller`] a node starts (openraft over gRPC).
//! - [`service`]: `ControllerService`, what brokers ask the active controller (registration,
//!   heartbeats, metadata commands), and [`liveness`], the active controller's session timers.
//! - [`client`]: how a node reaches the active controller, wherever it is.
//! - [`rpc_server`]: the node's one gRPC server carrying these services.

pub mod client;
pub mod command;
pub mod error;
pub mod image;
pub mod liveness;
pub mod raft;
pub mod rpc_server;
pub mod service;
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
