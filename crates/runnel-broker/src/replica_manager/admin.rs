//! Topic administration: validates CreateTopics, DeleteTopics, CreatePartitions,
//! ElectLeaders and config changes on this node, sends them to the active controller as
//! commands through a [`MetadataWriter`] and waits until this node has applied the result,
//! so the client's next request here sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runnel_controller::command::{
    CommandResult, ControllerCommand, ElectionResult, ElectionType, PartitionRef,
};
use runnel_controller::error::ControllerError;
use uuid::Uuid;

use super::image::ImageApplier;
use crate::config::{validate_topic_configs, BrokerConfig};
use crate::error::BrokerError;
use crate::metadata::{validate_topic_name, MetadataWriter, TopicInfo};

/// How long an admin operation waits for its committed command to be applied on this node, so
/// the client's next request here sees the change.
const APPLY_WAIT: Duration = Duration::from_secs(30);

pub(crate) struct TopicAdmin {
    config: BrokerConfig,
    /// Sends admin commands to the active controller.
    writer: Arc<dyn MetadataWriter>,
    /// What this node has applied: local checks read its image, and every command waits
    /// for its offset.
    images: Arc<ImageApplier>,
}

impl TopicAdmin {
    pub(crate) fn new(
        config: BrokerConfig,
        writer: Arc<dyn MetadataWriter>,
        images: Arc<ImageApplier>,
    ) -> Self {
        Self {
            config,
            writer,
            images,
        }
    }

    /// Sends `cmd` to the controller and waits until this node has applied it.
    async fn submit(&self, cmd: ControllerCommand) -> Result<CommandResult, BrokerError> {
        let written = self.writer.write(cmd).await?;
        let result = written.result.map_err(BrokerError::Controller)?;
        self.images.wait_applied(written.offset, APPLY_WAIT).await?;
        Ok(result)
    }

    fn live_brokers(&self) -> usize {
        self.images.image().live_brokers().count()
    }

    /// Creates a topic; `partitions`/`replication_factor` of -1 take the broker defaults.
    /// With `validate_only`, checks what this node can check and creates nothing (the
    /// returned topic then has a nil id and no partitions).
    pub(crate) async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, BrokerError> {
        self.create_topic_assigned(
            name,
            partitions,
            replication_factor,
            None,
            configs,
            validate_only,
        )
        .await
    }

    /// [`TopicAdmin::create_topic`] with an explicit replica assignment (one broker list
    /// per partition; the counts must then be -1).
    pub(crate) async fn create_topic_assigned(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, BrokerError> {
        validate_topic_name(name).map_err(BrokerError::Controller)?;
        validate_topic_configs(&configs)?;
        let (partitions, replication_factor) = match &assignment {
            Some(a) => {
                self.check_assignment(a)?;
                let rf = a.first().map_or(0, Vec::len);
                (a.len() as i32, i16::try_from(rf).unwrap_or(i16::MAX))
            }
            None => (
                if partitions == -1 {
                    self.config.num_partitions()
                } else {
                    partitions
                },
                if replication_factor == -1 {
                    self.config.default_replication_factor()
                } else {
                    replication_factor
                },
            ),
        };
        if partitions < 1 {
            return Err(BrokerError::InvalidPartitions(format!(
                "a topic needs at least 1 partition, got {partitions}"
            )));
        }
        if replication_factor < 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "the replication factor must be at least 1, got {replication_factor}"
            )));
        }
        if validate_only {
            if self.images.image().topic(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_string()));
            }
            let live = self.live_brokers();
            if replication_factor as usize > live {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {replication_factor} is larger than the {live} available brokers"
                )));
            }
            return Ok(TopicInfo {
                name: name.to_string(),
                id: Uuid::nil(),
                configs,
                partitions: Vec::new(),
            });
        }
        let cmd = ControllerCommand::CreateTopic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            assignment,
            configs,
        };
        match self.submit(cmd).await? {
            CommandResult::TopicCreated(topic) => {
                tracing::info!(
                    topic = name,
                    partitions,
                    replication_factor,
                    "created topic"
                );
                Ok(topic)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Every broker an assignment names must be registered (the controller checks the rest).
    fn check_assignment(&self, assignment: &[Vec<i32>]) -> Result<(), BrokerError> {
        let image = self.images.image();
        match assignment
            .iter()
            .flatten()
            .find(|b| image.broker(**b).is_none())
        {
            Some(b) => Err(BrokerError::Controller(
                ControllerError::InvalidReplicaAssignment(format!(
                    "the assignment names broker {b}, which is not registered"
                )),
            )),
            None => Ok(()),
        }
    }

    /// Creates a topic with broker defaults if auto-creation is on; `Ok(None)` if it is off.
    pub(crate) async fn auto_create_topic(
        &self,
        name: &str,
    ) -> Result<Option<TopicInfo>, BrokerError> {
        if !self.config.auto_create_topics() {
            return Ok(None);
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(t) => Ok(Some(t)),
            // Lost a race with another creator: the topic exists, which is what was wanted.
            Err(e) if e.is_topic_exists() => Ok(self.images.image().topic(name).cloned()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic; returns its id. Every replica's logs go when the deletion is applied.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        let cmd = ControllerCommand::DeleteTopic {
            name: name.to_string(),
        };
        match self.submit(cmd).await? {
            CommandResult::TopicDeleted { id, .. } => {
                tracing::info!(topic = name, "deleted topic");
                Ok(id)
            }
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.create_partitions_assigned(name, total, None, validate_only)
            .await
    }

    /// [`TopicAdmin::create_partitions`] with the replicas of the new partitions.
    pub(crate) async fn create_partitions_assigned(
        &self,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let current = self
            .images
            .image()
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?
            .partitions
            .len();
        if let Some(a) = &assignment {
            self.check_assignment(a)?;
        }
        if validate_only {
            if total as i64 <= current as i64 {
                return Err(BrokerError::InvalidPartitions(format!(
                    "topic '{name}' has {current} partitions; the new count must be larger, got {total}"
                )));
            }
            return Ok(());
        }
        let cmd = ControllerCommand::CreatePartitions {
            name: name.to_string(),
            total,
            assignment,
        };
        self.submit(cmd).await?;
        tracing::info!(topic = name, total, "added partitions");
        Ok(())
    }

    /// Elects leaders (Kafka's ElectLeaders): the preferred replica, or for a leaderless
    /// partition any live replica when `election` is unclean. `None` means every partition;
    /// then only partitions that needed an election are in the answer.
    pub(crate) async fn elect_leaders(
        &self,
        partitions: Option<Vec<PartitionRef>>,
        election: ElectionType,
    ) -> Result<Vec<ElectionResult>, BrokerError> {
        let cmd = ControllerCommand::ElectLeaders {
            topic_partitions: partitions,
            election,
        };
        match self.submit(cmd).await? {
            CommandResult::LeadersElected(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// Replaces a topic's config overrides; every replica applies them to its open logs.
    pub(crate) async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        validate_topic_configs(&configs)?;
        if self.images.image().topic(name).is_none() {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        if validate_only {
            return Ok(());
        }
        let cmd = ControllerCommand::AlterConfigs {
            topic: name.to_string(),
            configs,
        };
        self.submit(cmd).await?;
        tracing::info!(topic = name, "altered topic configs");
        Ok(())
    }
}

/// A command result of another kind than the command asked for: a controller bug.
fn unexpected(result: &CommandResult) -> BrokerError {
    BrokerError::Controller(ControllerError::UnknownServerError(format!(
        "the controller answered with an unexpected result: {result:?}"
    )))
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
