//! The Kafka gateway: accepts client connections, frames and decodes Kafka requests with the
//! `kafka-protocol` crate, dispatches them to one handler per API, and writes responses back in
//! request order.

mod bounds;
mod connection;
mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handlers;
mod limits;
mod server;

use std::sync::Arc;

use runnel_broker::{GroupCoordinator, ProducerIdManager, ReplicaManager};

pub use handlers::supported_apis;
pub use limits::ConnectionLimits;
pub use server::serve;

/// What every handler can reach.
pub struct Context {
    pub broker: Arc<ReplicaManager>,
    pub groups: Arc<GroupCoordinator>,
    pub producer_ids: Arc<ProducerIdManager>,
    /// The name of the Kafka listener this context serves (`PLAINTEXT` unless named):
    /// Metadata and FindCoordinator answer with the brokers' addresses on that listener.
    pub listener: Arc<str>,
    /// The node's connection and request limits, shared by all its listeners.
    pub limits: Arc<ConnectionLimits>,
}
