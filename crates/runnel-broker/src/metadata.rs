//! Cluster metadata as the broker sees it: the controller's replicated image (re-exported here
//! so the gateway imports one place) and [`MetadataWriter`], the broker's only way to change
//! it.

use futures::future::BoxFuture;
use runnel_controller::command::{CommandResult, ControllerCommand};
use runnel_controller::error::ControllerError;

pub use runnel_controller::command::{ElectionType, PartitionRef};
pub use runnel_controller::image::{
    is_internal_topic, validate_topic_name, BrokerInfo, MetadataImage, PartitionInfo, TopicInfo,
    NO_LEADER,
};

use crate::error::BrokerError;

/// A committed command's outcome and its position in the metadata log.
#[derive(Clone, Debug)]
pub struct Written {
    pub result: Result<CommandResult, ControllerError>,
    pub offset: u64,
}

/// How a broker changes cluster metadata: sends a command to the active controller, wherever it is.
pub trait MetadataWriter: Send + Sync + 'static {
    /// Returns once `cmd` is committed and applied by the active controller; `offset` is its Raft log index.
    /// Err(BrokerError::ControllerUnavailable(..)) when no active controller answered before the writer's deadline.
    fn write(&self, cmd: ControllerCommand) -> BoxFuture<'_, Result<Written, BrokerError>>;
}
