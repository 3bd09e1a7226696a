//! Named failpoints on the storage write path, for disk-fault tests and the chaos nemesis.
//!
//! With the `failpoints` feature each name is a [`fail`] crate failpoint, configured at run
//! time (the `FAILPOINTS` environment variable of a `runnel-faulty` binary, its
//! `PUT /debug/failpoints/<name>` endpoint, or `fail::cfg` in tests). Actions:
//! `return(eio)` / `return(enospc)` / `return(<errno>)` make the I/O call fail with that error
//! (`return` alone is EIO), `sleep(<ms>)` delays it (a slow disk), and a count such as
//! `1*return(eio)` fails it once. Without the feature [`inject`] is an inlined `Ok(())`.

/// Writing a batch (or a follower's run of batches) into a segment's `.log`.
pub const SEGMENT_WRITE: &str = "segment-write";
/// Writing an entry of a segment's `.index`.
pub const OFFSET_INDEX_WRITE: &str = "offset-index-write";
/// Writing an entry of a segment's `.timeindex`.
pub const TIME_INDEX_WRITE: &str = "time-index-write";
/// Creating a segment's files (a roll).
pub const SEGMENT_CREATE: &str = "segment-create";
/// fsync of a segment's `.log`.
pub const SEGMENT_FSYNC: &str = "segment-fsync";
/// fsync of a segment's `.index` or `.timeindex`.
pub const INDEX_FSYNC: &str = "index-fsync";
/// fsync of a partition directory (after files were created or renamed).
pub const DIR_FSYNC: &str = "dir-fsync";
/// Writing a checkpoint file of a partition (recovery point, leader epochs, cleaner).
pub const CHECKPOINT_WRITE: &str = "checkpoint-write";
/// Writing a producer-state snapshot (the broker's `<offset>.snapshot`).
pub const PRODUCER_SNAPSHOT_WRITE: &str = "producer-snapshot-write";
/// Writing the broker's high-watermark checkpoint.
pub const HW_CHECKPOINT_WRITE: &str = "hw-checkpoint-write";

/// Every failpoint, for documentation and tests.
pub const ALL: &[&str] = &[
    SEGMENT_WRITE,
    OFFSET_INDEX_WRITE,
    TIME_INDEX_WRITE,
    SEGMENT_CREATE,
    SEGMENT_FSYNC,
    INDEX_FSYNC,
    DIR_FSYNC,
    CHECKPOINT_WRITE,
    PRODUCER_SNAPSHOT_WRITE,
    HW_CHECKPOINT_WRITE,
];

/// The error failpoint `name` injects, if it is configured to fail now; it sleeps first when
/// configured to (`sleep(ms)`).
#[inline(always)]
pub fn inject(name: &str) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    if let Some(e) = fail::eval(name, |arg| injected_error(name, arg)) {
        return Err(e);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
    Ok(())
}

#[cfg(feature = "failpoints")]
fn injected_error(name: &str, arg: Option<String>) -> std::io::Error {
    const EIO: i32 = 5;
    const ENOSPC: i32 = 28;
    let errno = match arg.as_deref().map(str::trim) {
        None | Some("") | Some("eio") | Some("EIO") => EIO,
        Some("enospc") | Some("ENOSPC") => ENOSPC,
        Some(other) => other.parse().unwrap_or(EIO),
    };
    tracing::warn!(failpoint = name, errno, "injecting a disk error");
    std::io::Error::from_raw_os_error(errno)
}
