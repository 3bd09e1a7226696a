//! Runnel's lab: tooling that runs clusters to test and measure them, behind the `runnel dev`,
//! `runnel chaos` and `runnel experiment` commands.
//!
//! A local cluster runs nodes as processes of a runnel binary, whose path the caller passes
//! (the `runnel` binary passes itself); a compose cluster is a running docker-compose one.

pub mod chaos;
pub mod cli;
pub mod dev;
pub mod experiment;

mod bounded_client;
mod cluster_target;
mod compose_cluster;
mod link_proxy;
mod local_cluster;
