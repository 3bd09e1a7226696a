//! Runnel's node-to-node gRPC interface: prost messages and tonic clients and servers generated
//! at build time from the workspace's `proto/` directory (see `proto/README.md`).
//!
//! - [`controller::v1`]: `RaftService` (openraft's RPCs between controllers, payloads opaque
//!   bytes) and `ControllerService` (broker registration and heartbeats, metadata commands
//!   sent to the active controller).
//! - [`replication::v1`]: `ReplicaService` (the follower fetch stream and
//!   OffsetForLeaderEpoch).
//!
//! Every `bytes` field is a [`prost::bytes::Bytes`], so record batches and payloads are not
//! copied out of the received message. `error_code` fields carry Kafka error codes; a gRPC
//! error status means the call failed, not that the peer refused it.
//!
//! tonic limits a decoded message to 4 MiB by default. Fetch responses and metadata snapshots can be
//! larger: raise it on both ends with the generated
//! `max_decoding_message_size` of clients and servers (see [`MAX_MESSAGE_BYTES`]).

/// A message size limit suitable for Runnel's RPCs, for the generated clients' and servers'
/// `max_decoding_message_size` / `max_encoding_message_size` (tonic's default is 4 MiB for
/// decoding, which a replica fetch of many partitions can exceed).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Controller services: Raft transport and broker-to-controller requests.
pub mod controller {
    /// Version 1 of package `runnel.controller.v1`.
    #[allow(
        unreachable_pub,
        missing_docs,
        rust_2018_idioms,
        clippy::all,
        clippy::pedantic,
        clippy::nursery
    )]
    pub mod v1 {
        tonic::include_proto!("runnel.controller.v1");
    }
}

/// Partition replication between brokers.
pub mod replication {
    /// Version 1 of package `runnel.replication.v1`.
    #[allow(
        unreachable_pub,
        missing_docs,
        rust_2018_idioms,
        clippy::all,
        clippy::pedantic,
        clippy::nursery
    )]
    pub mod v1 {
        tonic::include_proto!("runnel.replication.v1");
    }
}
