//! A Runnel node as a library: what `runnel node` runs, startable in process by tests and
//! tools.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let mut node = runnel_node::Node::start(runnel_node::NodeConfig::default()).await?;
//! node.serve().await?;
//! println!("Kafka at {:?}", node.addresses().kafka);
//! node.shutdown().await
//! # }
//! ```
//!
//! [`http`] also holds the types of the node's HTTP answers, which clients parse.

mod config;
pub mod http;
mod identity;
mod lifecycle;
mod listeners;
mod node;

pub use config::{NodeConfig, Role};
pub use node::{Addresses, Node};
