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

/// Configures the disk-fault failpoints from the `FAILPOINTS` environment variable
/// (`name=action;...`, e.g. `segment-write=return(eio)`); they stay until the returned value
/// is dropped. Exits with a message when the variable does not parse.
#[cfg(feature = "failpoints")]
pub fn failpoints_from_env() -> fail::FailScenario<'static> {
    if let Ok(spec) = std::env::var("FAILPOINTS") {
        for pair in spec.split(';').filter(|p| !p.trim().is_empty()) {
            let parsed = pair
                .split_once('=')
                .ok_or_else(|| "expected name=action".to_string())
                .and_then(|(name, action)| fail::cfg(name.trim(), action.trim()));
            if let Err(e) = parsed {
                eprintln!("error: FAILPOINTS: cannot set '{pair}': {e}");
                std::process::exit(2);
            }
        }
    }
    // setup() would read FAILPOINTS again and panic on a bad one; the checks above come first.
    fail::FailScenario::setup()
}
