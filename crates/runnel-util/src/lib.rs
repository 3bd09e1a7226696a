//! Small pieces shared by every Runnel crate. It sits below all of them (it depends on tokio
//! only), so `runnel-client`, which shares nothing else with the server crates, can use it
//! too.

mod backoff;

pub use backoff::Backoff;
