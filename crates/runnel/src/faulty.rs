//! `runnel-faulty`: the `runnel` binary with the disk-fault failpoints compiled in
//! (docs/robustness.md), set from the `FAILPOINTS` environment variable at start and through
//! the node's `PUT /debug/failpoints/<name>` while it runs. Never shipped: only
//! `--features failpoints` builds it.

#[path = "main.rs"]
mod runnel;

fn main() -> std::process::ExitCode {
    let _failpoints = runnel_node::failpoints_from_env();
    runnel::main()
}
