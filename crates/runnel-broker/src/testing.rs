//! [`LocalController`]: an in-memory stand-in for the Raft controller, for unit tests only.
//!
//! It applies each command with `runnel_controller::command::apply` under a mutex, counts
//! offsets like a log index, and pushes every new image to the replica managers and group
//! coordinators it started, in order, before `write` returns: what a one-node cluster does
//! once its metadata log is applied.

use std::path::Path;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use runnel_controller::command::{apply, CommandResult};
use runnel_controller::error::ControllerError;
use uuid::Uuid;

// What other crates' tests hand to [`LocalController::apply`] and produce: re-exported so
// they need only the broker.
pub use runnel_controller::command::ControllerCommand;
pub use runnel_controller::image::Endpoint;
pub use runnel_storage::batch::testing::build_batch;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::GroupCoordinator;
use crate::metadata::{MetadataImage, MetadataWriter, Written};
use crate::replica_manager::ReplicaManager;

struct State {
    image: MetadataImage,
    offset: u64,
    brokers: Vec<Weak<ReplicaManager>>,
    groups: Vec<Weak<GroupCoordinator>>,
}

pub struct LocalController {
    state: Mutex<State>,
}

impl LocalController {
    /// A cluster whose brokers `ids` are registered and unfenced; broker `id` listens on
    /// `localhost:9091+id`.
    pub fn new(ids: &[i32]) -> Arc<Self> {
        let controller = Arc::new(Self {
            state: Mutex::new(State {
                image: MetadataImage::default(),
                offset: 0,
                brokers: Vec::new(),
                groups: Vec::new(),
            }),
        });
        let init = ControllerCommand::InitCluster {
            cluster_id: "runnel-test-cluster-id".into(),
        };
        controller.apply(init).expect("InitCluster");
        for &id in ids {
            controller
                .apply(ControllerCommand::RegisterBroker {
                    id,
                    incarnation: Uuid::new_v4(),
                    host: "localhost".into(),
                    port: 9091 + id,
                    listeners: Vec::new(),
                    rpc_address: format!("localhost:{}", 19091 + id),
                    rack: None,
                    directory_id: None,
                    previous_broker_epoch: None,
                })
                .expect("RegisterBroker");
            controller
                .apply(ControllerCommand::UnfenceBroker { id })
                .expect("UnfenceBroker");
        }
        controller
    }

    /// A one-broker cluster and its replica manager on `data_dir`.
    pub fn start(
        data_dir: &Path,
        node_id: i32,
        config: BrokerConfig,
    ) -> (Arc<Self>, Arc<ReplicaManager>) {
        let controller = Self::new(&[node_id]);
        let broker = controller.start_broker(data_dir, node_id, config);
        (controller, broker)
    }

    /// [`LocalController::start`] plus a group coordinator that follows the image.
    pub fn start_with_groups(
        data_dir: &Path,
        node_id: i32,
        config: BrokerConfig,
    ) -> (Arc<Self>, Arc<ReplicaManager>, Arc<GroupCoordinator>) {
        let (controller, broker) = Self::start(data_dir, node_id, config);
        let groups = controller.start_groups(&broker);
        (controller, broker, groups)
    }

    /// Opens a replica manager for broker `node_id` at the current image; it receives every
    /// later image.
    pub fn start_broker(
        self: &Arc<Self>,
        data_dir: &Path,
        node_id: i32,
        config: BrokerConfig,
    ) -> Arc<ReplicaManager> {
        let mut st = self.lock();
        let image = Arc::new(st.image.clone());
        let writer: Arc<dyn MetadataWriter> = self.clone();
        let broker = Arc::new(
            ReplicaManager::open(data_dir, node_id, config, writer, st.offset, image, None)
                .expect("opening the replica manager"),
        );
        broker.remove_stray_dirs();
        st.brokers.push(Arc::downgrade(&broker));
        broker
    }

    /// Opens a group coordinator on `broker`; it receives every later image.
    pub fn start_groups(&self, broker: &Arc<ReplicaManager>) -> Arc<GroupCoordinator> {
        let mut st = self.lock();
        let groups = GroupCoordinator::open(broker.clone());
        groups
            .on_image(&broker.image())
            .expect("loading __consumer_offsets partitions");
        st.groups.push(Arc::downgrade(&groups));
        groups
    }

    pub fn image(&self) -> MetadataImage {
        self.lock().image.clone()
    }

    /// Commits `cmd` (for tests that move leaders, fence brokers, ...). Panics if a broker
    /// cannot apply the new image.
    pub fn apply(&self, cmd: ControllerCommand) -> Result<CommandResult, ControllerError> {
        self.commit(cmd).expect("applying the new image").result
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// A refused command is a log entry too: the offset moves, the image does not.
    fn commit(&self, cmd: ControllerCommand) -> Result<Written, BrokerError> {
        let mut st = self.lock();
        let result = apply(&mut st.image, &cmd);
        st.offset += 1;
        let (offset, image) = (st.offset, Arc::new(st.image.clone()));
        for broker in st.brokers.iter().filter_map(Weak::upgrade) {
            broker.apply_image(offset, image.clone())?;
        }
        for groups in st.groups.iter().filter_map(Weak::upgrade) {
            groups.on_image(&image)?;
        }
        Ok(Written { result, offset })
    }
}

impl MetadataWriter for LocalController {
    fn write(&self, cmd: ControllerCommand) -> BoxFuture<'_, Result<Written, BrokerError>> {
        Box::pin(std::future::ready(self.commit(cmd)))
    }
}
