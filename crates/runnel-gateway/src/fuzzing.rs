//! The request path without a socket, for the fuzz targets in `fuzz/` (feature `fuzzing`).
//!
//! [`Harness::handle_frame`] does with one complete request frame what a connection does
//! ([`crate::connection`]): the frame-size checks, `decode` (header, the schema walk of
//! [`crate::bounds`], kafka-protocol's decoder), the API's handler against a real in-process
//! broker, and the encoding of the response. The broker is a one-node cluster on an in-memory
//! controller (`runnel_broker::testing::LocalController`) with a group coordinator, the topics
//! `fixtures` (3 partitions, the topic of the captured client frames) and `compacted`
//! (`cleanup.policy=compact`), and `__consumer_offsets`.
//!
//! Each frame's handler gets at most [`FRAME_TIMEOUT`], so a long poll (Fetch's `max_wait_ms`)
//! or a rebalance (JoinGroup waiting for the rest of its group) cannot hang the fuzzer; on a
//! paused runtime (see [`Harness::new`]) that time is virtual and costs nothing.
//!
//! Creating a partition is synchronous file work (a directory, its files, two fsyncs: about
//! 5 ms on a VM disk) that no timeout interrupts, and one valid CreateTopics request may ask
//! for millions of partitions. Frames that would create more than
//! [`MAX_NEW_PARTITIONS_PER_FRAME`] are therefore not run ([`FrameOutcome::Skipped`]). What
//! frames create (topics, records, groups) accumulates, so the broker is replaced by a fresh
//! one on a new data directory every [`FRAMES_PER_BROKER`] frames, or sooner once it holds
//! more than [`MAX_PARTITIONS_PER_BROKER`] partitions: a fuzzing run's state stays bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::RequestKind;
use runnel_broker::testing::LocalController;
use runnel_broker::{BrokerConfig, ProducerIdManager};
use tokio::runtime::Runtime;

use crate::connection::{decode, encode_response, Rejected, Turn};
use crate::frame::take_frame;
use crate::{handlers, ConnectionLimits, Context};

/// The longest one frame's handler may run.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// Frames one broker answers before the harness replaces it with a fresh one.
pub const FRAMES_PER_BROKER: u64 = 5_000;

/// The most partitions a CreateTopics or CreatePartitions frame may create and still be run.
pub const MAX_NEW_PARTITIONS_PER_FRAME: i64 = 128;

/// Partitions (all topics) past which the harness replaces the broker after a frame.
pub const MAX_PARTITIONS_PER_BROKER: usize = 1_024;

/// The client address requests claim to come from.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);

/// What became of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameOutcome {
    /// The connection would be closed before anything is decoded: bad frame size.
    BadFrame,
    /// `decode` refused the frame and the connection would be closed.
    Closed,
    /// `decode` answered without a handler (ApiVersions at an unsupported version).
    Answered(Bytes),
    /// The handler's response, encoded with its size prefix and header.
    Response(Bytes),
    /// The handler answered nothing (acks=0 produce).
    NoResponse,
    /// The handler asked to close the connection.
    CloseRequested,
    /// The response could not be encoded (the connection would be closed).
    Unencodable,
    /// The handler did not finish within [`FRAME_TIMEOUT`].
    TimedOut,
    /// Decoded, but not run: it would create more than [`MAX_NEW_PARTITIONS_PER_FRAME`]
    /// partitions.
    Skipped,
}

/// An in-process broker and the runtime its requests run on; see the module documentation.
pub struct Harness {
    root: PathBuf,
    runtime: fn() -> Runtime,
    state: Mutex<State>,
}

struct State {
    broker: Option<Broker>,
    /// Brokers started so far; each gets the data directory `root/<n>`.
    started: u64,
}

struct Broker {
    // Dropped in this order: the context, then the runtime with every task the requests
    // spawned, then the data directory.
    ctx: Arc<Context>,
    runtime: Runtime,
    frames: u64,
    _dir: DataDir,
}

/// Removes the directory when dropped.
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Harness {
    /// A harness whose brokers keep their data in subdirectories of `root` (a temporary
    /// directory) and run requests on runtimes made by `runtime`: a current-thread
    /// runtime with time and I/O enabled, ideally started paused (tokio's `test-util`) so
    /// that timers fire as soon as nothing else can run. The first broker starts at the first
    /// frame.
    pub fn new(root: &Path, runtime: fn() -> Runtime) -> Harness {
        Harness {
            root: root.to_path_buf(),
            runtime,
            state: Mutex::new(State {
                broker: None,
                started: 0,
            }),
        }
    }

    /// [`Harness::new`] on `$TMPDIR/runnel-fuzz/<pid>`. A fuzzer exits without running
    /// destructors, so the directories of processes that are gone are removed first (on
    /// systems with `/proc`).
    pub fn in_temp_dir(runtime: fn() -> Runtime) -> Harness {
        let parent = std::env::temp_dir().join("runnel-fuzz");
        if Path::new("/proc/self").exists() {
            for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let gone = name
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
                if gone {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let root = parent.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("creating the harness's temporary directory");
        Harness::new(&root, runtime)
    }

    /// Runs one request frame (without its 4-byte size prefix) as a connection would.
    pub fn handle_frame(&self, frame: Bytes) -> FrameOutcome {
        let mut state = self.state.lock();
        if state.broker.is_none() {
            let dir = self.root.join(state.started.to_string());
            state.started += 1;
            state.broker = Some(Broker::start(dir, (self.runtime)()));
        }
        let broker = state.broker.as_mut().expect("started above");
        let outcome = broker.handle_frame(frame);
        broker.frames += 1;
        if broker.frames >= FRAMES_PER_BROKER || broker.partitions() > MAX_PARTITIONS_PER_BROKER {
            state.broker = None;
        }
        outcome
    }
}

impl Broker {
    fn start(dir: PathBuf, runtime: Runtime) -> Broker {
        std::fs::create_dir_all(&dir).expect("creating the broker's data directory");
        let dir = DataDir(dir);
        // Whatever the broker spawns while it starts belongs to this runtime.
        let entered = runtime.enter();
        let config = BrokerConfig::from_pairs([
            ("offsets.topic.num.partitions", "4"),
            ("offsets.topic.replication.factor", "1"),
            ("group.initial.rebalance.delay.ms", "0"),
        ])
        .expect("the harness's broker config");
        let (controller, broker, groups) = LocalController::start_with_groups(&dir.0, 1, config);
        let compact = [("cleanup.policy".to_string(), "compact".to_string())];
        runtime.block_on(async {
            broker
                .create_topic("fixtures", 3, 1, Default::default(), false)
                .await
                .expect("creating topic fixtures");
            broker
                .create_topic("compacted", 1, 1, compact.into_iter().collect(), false)
                .await
                .expect("creating topic compacted");
            groups
                .ensure_offsets_topic()
                .await
                .expect("creating __consumer_offsets");
        });
        let producer_ids = Arc::new(ProducerIdManager::from_controller(
            controller,
            broker.clone(),
        ));
        let ctx = Arc::new(Context {
            limits: ConnectionLimits::from_config(broker.config())
                .expect("the harness's connection limits"),
            broker,
            groups,
            producer_ids,
            listener: "PLAINTEXT".into(),
        });
        drop(entered);
        Broker {
            ctx,
            runtime,
            frames: 0,
            _dir: dir,
        }
    }

    fn partitions(&self) -> usize {
        let image = self.ctx.broker.image();
        image.topics.values().map(|t| t.partitions.len()).sum()
    }

    fn handle_frame(&self, frame: Bytes) -> FrameOutcome {
        let limits = &self.ctx.limits;
        // The connection frames its byte stream with `take_frame`: the same checks here.
        let Ok(size) = i32::try_from(frame.len()) else {
            return FrameOutcome::BadFrame;
        };
        let mut buf = BytesMut::with_capacity(4 + frame.len());
        buf.put_i32(size);
        buf.extend_from_slice(&frame);
        let Ok(Some(frame)) = take_frame(&mut buf, limits.max_frame) else {
            return FrameOutcome::BadFrame;
        };
        let request = match decode(frame, PEER, limits) {
            Ok(request) => request,
            Err(Rejected::Answer(bytes)) => return FrameOutcome::Answered(bytes),
            Err(Rejected::Close) => return FrameOutcome::Closed,
        };
        if new_partitions(&request.body) > MAX_NEW_PARTITIONS_PER_FRAME {
            return FrameOutcome::Skipped;
        }
        let api_key = request.api_key;
        let version = request.header.request_api_version;
        let correlation_id = request.header.correlation_id;
        let handler = handlers::handle(self.ctx.clone(), request, Turn::detached());
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(FRAME_TIMEOUT, handler).await });
        match result {
            Err(_) => FrameOutcome::TimedOut,
            Ok(Err(handlers::CloseConnection)) => FrameOutcome::CloseRequested,
            Ok(Ok(None)) => FrameOutcome::NoResponse,
            Ok(Ok(Some(response))) => {
                match encode_response(api_key, version, correlation_id, &response, PEER) {
                    Some(bytes) => FrameOutcome::Response(bytes),
                    None => FrameOutcome::Unencodable,
                }
            }
        }
    }
}

/// The most partitions `body` could create (none for a `validate_only` request): a topic's
/// count or the length of its assignment, at least one (-1 is the broker's `num.partitions`,
/// 1 here); a CreatePartitions topic's new total.
fn new_partitions(body: &RequestKind) -> i64 {
    match body {
        RequestKind::CreateTopics(r) if !r.validate_only => r
            .topics
            .iter()
            .map(|t| {
                let assigned = i64::try_from(t.assignments.len()).unwrap_or(i64::MAX);
                i64::from(t.num_partitions).max(assigned).max(1)
            })
            .fold(0, i64::saturating_add),
        RequestKind::CreatePartitions(r) if !r.validate_only => r
            .topics
            .iter()
            .map(|t| i64::from(t.count).max(0))
            .fold(0, i64::saturating_add),
        _ => 0,
    }
}
