//! A small async Kafka-protocol client used by the `runnel` CLI and tests.
//!
//! - [`Connection`]: one TCP connection to one broker (framing, headers, correlation ids,
//!   ApiVersions negotiation, timeouts).
//! - [`Client`]: bootstraps from a `host:port` list, keeps per-broker connections, routes
//!   partition requests to leaders and exposes the admin, produce, fetch and list-offsets
//!   operations the CLI needs, and consumer-group administration through each group's
//!   coordinator (list, describe, committed offsets, offset commits, delete).
//! - [`IdempotentProducer`]: a producer id and epoch from InitProducerId and per-partition
//!   sequence numbers; its [`ProducerBatch`]es are resent unchanged, so brokers drop retries.
//!
//! Message codecs come from the `kafka-protocol` crate; this crate never hand-encodes them.

mod client;
mod connection;
mod error;
mod idempotence;
pub mod partitioner;
mod records;

pub use client::{
    acks, client_versions, decode_consumer_assignment, decode_consumer_subscription, offset_spec,
    parse_bootstrap, BrokerMetadata, Client, CommittedOffset, ConfigEntry, ConfigSource,
    CreatedTopic, FetchedPartition, GroupDescription, GroupMember, ListedGroup, Metadata,
    PartitionMetadata, ProducePipeline, TopicMetadata,
};
pub use connection::{decode_response_frame, encode_request_frame, ClientConfig, Connection};
pub use error::{error_name, Error, Result};
pub use idempotence::{increment_sequence, IdempotentProducer, ProducerBatch, ProducerIdentity};
pub use records::{
    decode_record_batches, encode_idempotent_record_batch, encode_record_batch, ConsumedRecord,
    DecodedRecords, ProducerRecord,
};

/// Re-exported so callers can name compression types, error codes and ids without depending
/// on `kafka-protocol` or `uuid` directly.
pub use kafka_protocol::records::{Compression, TimestampType};
pub use kafka_protocol::ResponseError;
pub use uuid::Uuid;
