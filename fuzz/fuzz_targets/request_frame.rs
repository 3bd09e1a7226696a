//! One Kafka request frame (without its 4-byte size prefix) through the gateway's decoding,
//! its handler against an in-process broker, and the encoding of the response.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use runnel_gateway::fuzzing::Harness;

static HARNESS: LazyLock<Harness> = LazyLock::new(|| Harness::in_temp_dir(paused_runtime));

/// Timers fire as soon as the runtime is idle: a Fetch long poll or a JoinGroup waiting for
/// its group ends at once instead of after seconds of wall-clock time.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

fuzz_target!(|data: &[u8]| {
    HARNESS.handle_frame(bytes::Bytes::copy_from_slice(data));
});
