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
//! error status means the call failed, not that the peer refused it. Code on either side
//! works with kafka-protocol's [`ResponseError`]; [`error_code`] converts at this boundary
//! only.
//!
//! tonic limits a decoded message to 4 MiB by default. Fetch responses and metadata snapshots can be
//! larger: raise it on both ends with the generated
//! `max_decoding_message_size` of clients and servers (see [`MAX_MESSAGE_BYTES`]).

pub use kafka_protocol::ResponseError;

/// Conversions between [`ResponseError`] and the protos' `int32 error_code` fields (an `i16`
/// in Kafka, widened here; 0 is no error).
pub mod error_code {
    use super::ResponseError;

    /// The wire form of an outcome: 0 for success, else the error's Kafka code.
    pub fn encode(error: Option<ResponseError>) -> i32 {
        error.map_or(0, |e| i32::from(e.code()))
    }

    /// The outcome a received `error_code` stands for: `None` for 0. A code outside Kafka's
    /// `i16` range (a broken peer) reads as UNKNOWN_SERVER_ERROR.
    pub fn decode(code: i32) -> Option<ResponseError> {
        match i16::try_from(code) {
            Ok(code) => ResponseError::try_from_code(code),
            Err(_) => Some(ResponseError::UnknownServerError),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_and_widens() {
            assert_eq!(encode(None), 0);
            assert_eq!(decode(0), None);
            for e in [
                ResponseError::NotController,
                ResponseError::UnknownServerError,
                ResponseError::StaleBrokerEpoch,
                ResponseError::Unknown(12345),
            ] {
                assert_eq!(decode(encode(Some(e))), Some(e));
            }
            assert_eq!(decode(41), Some(ResponseError::NotController));
            assert_eq!(decode(1 << 20), Some(ResponseError::UnknownServerError));
        }
    }
}

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
