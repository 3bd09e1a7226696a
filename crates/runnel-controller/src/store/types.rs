//! The types the Raft storage is built on: the node a voter is reached at, the trait the
//! replicated state implements, and the openraft type configuration that ties both to the log
//! entries — [`TypeConfig`], the controller's: commands of the metadata log applied to the
//! [`MetadataImage`].
//!
//! The storage is generic over [`StoreTypes`] so its tests run on a tiny key-value state
//! machine through the same code the metadata image uses.

use std::fmt;
use std::fmt::Debug;
use std::io::Cursor;

use openraft::RaftTypeConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

use crate::command::CommandResult;
use crate::command::ControllerCommand;
use crate::error::ControllerError;
use crate::image::MetadataImage;

/// A controller as openraft knows it: where to send it Raft RPCs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftNode {
    /// `host:port` of the node's gRPC listener (`--rpc-listen`), taken from `--voters`; the Raft
    /// network dials it, and it travels in membership entries so a restarted or newly added
    /// node learns every peer's address from the log.
    pub rpc_addr: String,
}

impl fmt::Display for RaftNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rpc_addr)
    }
}

/// The replicated state a [`StateMachineStore`](super::StateMachineStore) holds: the metadata
/// image in production, a small counter in tests.
///
/// `apply` must be deterministic: it sees nothing but the state and the command (no clock, no
/// randomness, no I/O), so every controller that replays the same log reaches the same state.
/// A command that is rejected (a stale epoch, an unknown topic) is still applied: it leaves the
/// state unchanged and the rejection is the response.
pub trait StateMachineData:
    Default + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// What a log entry carries.
    type Command: Debug + Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What applying a command answers to the client that proposed it.
    type Response: Debug + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Applies one committed command.
    fn apply(&mut self, command: &Self::Command) -> Self::Response;

    /// The response recorded for a log entry that carries no command: the blank entry a new
    /// leader appends, and membership changes (returned by `Raft::change_membership`).
    fn response_without_command() -> Self::Response;
}

/// An openraft type configuration the sled storage can hold: `u64` node ids, [`RaftNode`]s,
/// openraft's own entry type, snapshots as in-memory byte buffers, and log entries whose
/// commands are the [`StoreTypes::Data`]'s.
///
/// Declare one with [`openraft::declare_raft_types!`] and name its data:
///
/// ```ignore
/// openraft::declare_raft_types!(
///     pub TypeConfig:
///         D = Command,
///         R = Response,
///         NodeId = u64,
///         Node = RaftNode,
///         Entry = openraft::Entry<TypeConfig>,
///         SnapshotData = std::io::Cursor<Vec<u8>>,
/// );
/// impl StoreTypes for TypeConfig {
///     type Data = State;
/// }
/// ```
pub trait StoreTypes:
    RaftTypeConfig<
    NodeId = u64,
    Node = RaftNode,
    Entry = openraft::Entry<Self>,
    SnapshotData = Cursor<Vec<u8>>,
>
{
    /// The replicated state; its command and response are the config's `D` and `R`.
    type Data: StateMachineData<Command = Self::D, Response = Self::R>;
}

openraft::declare_raft_types!(
    /// The controller's openraft types: metadata commands in the log, each answered with what
    /// applying it produced (a refused command is answered with its error, on every node
    /// alike); nodes are `u64` ids reached at a [`RaftNode`]'s address.
    pub TypeConfig:
        D = ControllerCommand,
        R = Result<CommandResult, ControllerError>,
        NodeId = u64,
        Node = RaftNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

impl StoreTypes for TypeConfig {
    type Data = MetadataImage;
}

impl StateMachineData for MetadataImage {
    type Command = ControllerCommand;
    type Response = Result<CommandResult, ControllerError>;

    fn apply(&mut self, command: &ControllerCommand) -> Self::Response {
        crate::command::apply(self, command)
    }

    /// Answers `Raft::change_membership` (whose callers look at the new membership, not at this)
    /// and the blank entry of a new leader (which no client waits for). No [`CommandResult`]
    /// describes "no command", so this is a refusal no command writer can ever receive.
    fn response_without_command() -> Self::Response {
        Err(ControllerError::InvalidRequest(
            "this log entry carries no metadata command (a leader's blank entry or a membership change)"
                .to_owned(),
        ))
    }
}

/// Storage results, with openraft's error type (what its storage traits return).
pub(crate) type StorageResult<T> = Result<T, openraft::StorageError<u64>>;
