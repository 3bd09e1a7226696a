//! Why a controller command was refused, with the Kafka error code it answers on the wire.
//!
//! A refused command leaves the image unchanged. Every replica of the metadata log refuses the
//! same command the same way, so the error is part of the deterministic result of applying it
//! (and is serialized with the Raft response).

use serde::{Deserialize, Serialize};

pub use runnel_rpc::ResponseError;

/// A command the controller refused. Each variant is one Kafka error code
/// ([`ControllerError::code`]); the string is the human message sent as `error_message`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("{0}")]
    UnknownTopicId(String),
    #[error("{0}")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// The request carries an older leader epoch than the partition's: the sender is a
    /// deposed leader.
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// The request carries a newer leader epoch than the partition's (cannot happen with a
    /// well-behaved broker; Kafka answers the same).
    #[error("{0}")]
    UnknownLeaderEpoch(String),
    /// The request was built from a stale partition state (partition epoch mismatch).
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// A proposed ISR member is fenced or not registered.
    #[error("{0}")]
    IneligibleReplica(String),
    #[error("{0}")]
    NotLeaderOrFollower(String),
    #[error("{0}")]
    BrokerNotAvailable(String),
    #[error("{0}")]
    ElectionNotNeeded(String),
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    #[error("{0}")]
    EligibleLeadersNotAvailable(String),
    #[error("{0}")]
    InconsistentClusterId(String),
    /// Something that needs an operator, such as producer ids running out.
    #[error("{0}")]
    UnknownServerError(String),
}

impl ControllerError {
    /// The Kafka error this refusal answers on the wire.
    pub fn code(&self) -> ResponseError {
        use ControllerError::*;
        match self {
            UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
            UnknownTopicId(_) => ResponseError::UnknownTopicId,
            TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            InvalidTopic(_) => ResponseError::InvalidTopicException,
            InvalidPartitions(_) => ResponseError::InvalidPartitions,
            InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            InvalidConfig(_) => ResponseError::InvalidConfig,
            InvalidRequest(_) => ResponseError::InvalidRequest,
            FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
            UnknownLeaderEpoch(_) => ResponseError::UnknownLeaderEpoch,
            InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
            IneligibleReplica(_) => ResponseError::IneligibleReplica,
            NotLeaderOrFollower(_) => ResponseError::NotLeaderOrFollower,
            BrokerNotAvailable(_) => ResponseError::BrokerNotAvailable,
            ElectionNotNeeded(_) => ResponseError::ElectionNotNeeded,
            PreferredLeaderNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
            EligibleLeadersNotAvailable(_) => ResponseError::EligibleLeadersNotAvailable,
            InconsistentClusterId(_) => ResponseError::InconsistentClusterId,
            UnknownServerError(_) => ResponseError::UnknownServerError,
        }
    }

    /// The human message (Kafka's `error_message`).
    pub fn message(&self) -> &str {
        use ControllerError::*;
        match self {
            UnknownTopicOrPartition(m)
            | UnknownTopicId(m)
            | TopicAlreadyExists(m)
            | InvalidTopic(m)
            | InvalidPartitions(m)
            | InvalidReplicationFactor(m)
            | InvalidReplicaAssignment(m)
            | InvalidConfig(m)
            | InvalidRequest(m)
            | FencedLeaderEpoch(m)
            | UnknownLeaderEpoch(m)
            | InvalidUpdateVersion(m)
            | IneligibleReplica(m)
            | NotLeaderOrFollower(m)
            | BrokerNotAvailable(m)
            | ElectionNotNeeded(m)
            | PreferredLeaderNotAvailable(m)
            | EligibleLeadersNotAvailable(m)
            | InconsistentClusterId(m)
            | UnknownServerError(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kafkas() {
        let cases = [
            (ControllerError::TopicAlreadyExists(String::new()), 36),
            (ControllerError::UnknownTopicOrPartition(String::new()), 3),
            (ControllerError::InvalidPartitions(String::new()), 37),
            (ControllerError::InvalidReplicationFactor(String::new()), 38),
            (ControllerError::InvalidReplicaAssignment(String::new()), 39),
            (ControllerError::InvalidConfig(String::new()), 40),
            (ControllerError::FencedLeaderEpoch(String::new()), 74),
            (ControllerError::InvalidUpdateVersion(String::new()), 95),
            (ControllerError::IneligibleReplica(String::new()), 107),
            (ControllerError::NotLeaderOrFollower(String::new()), 6),
            (ControllerError::BrokerNotAvailable(String::new()), 8),
            (ControllerError::ElectionNotNeeded(String::new()), 84),
            (
                ControllerError::PreferredLeaderNotAvailable(String::new()),
                80,
            ),
            (
                ControllerError::EligibleLeadersNotAvailable(String::new()),
                83,
            ),
            (ControllerError::InvalidTopic(String::new()), 17),
            (ControllerError::InvalidRequest(String::new()), 42),
            (ControllerError::UnknownLeaderEpoch(String::new()), 75),
            (ControllerError::UnknownTopicId(String::new()), 100),
            (ControllerError::InconsistentClusterId(String::new()), 104),
            (ControllerError::UnknownServerError(String::new()), -1),
        ];
        for (err, code) in cases {
            assert_eq!(err.code().code(), code, "{err:?}");
        }
    }

    #[test]
    fn message_is_display() {
        let err = ControllerError::InvalidConfig("bad value".into());
        assert_eq!(err.message(), "bad value");
        assert_eq!(err.to_string(), "bad value");
    }
}
