//! CLI commands that talk to a cluster over the Kafka protocol, like any other client.

pub(crate) mod consume;
pub(crate) mod produce;
pub(crate) mod topic;
