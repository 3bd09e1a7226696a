//! Why a controller command was refused, with the Kafka error code it answers on the wire.
//!
//! A refused command leaves the image unchanged. Every replica of the metadata log refuses the
//! same command the same way, so the error is part of the deterministic result of applying it
//! (and is serialized with the Raft response).

use serde::{Deserialize, Serialize};

/// Kafka's numeric error codes (`org.apache.kafka.common.protocol.Errors`) for the errors the
/// controller produces. Plain constants so this crate does not depend on `kafka-protocol`.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const BROKER_NOT_AVAILABLE: i16 = 8;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REQUEST: i16 = 42;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const INVALID_UPDATE_VERSION: i16 = 96;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const INCONSISTENT_CLUSTER_ID: i16 = 104;
    pub const INELIGIBLE_REPLICA: i16 = 107;
}

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
    /// Kafka's numeric error code for this error.
    pub fn code(&self) -> i16 {
        use ControllerError::*;
        match self {
            UnknownTopicOrPartition(_) => codes::UNKNOWN_TOPIC_OR_PARTITION,
            UnknownTopicId(_) => codes::UNKNOWN_TOPIC_ID,
            TopicAlreadyExists(_) => codes::TOPIC_ALREADY_EXISTS,
            InvalidTopic(_) => codes::INVALID_TOPIC_EXCEPTION,
            InvalidPartitions(_) => codes::INVALID_PARTITIONS,
            InvalidReplicationFactor(_) => codes::INVALID_REPLICATION_FACTOR,
            InvalidReplicaAssignment(_) => codes::INVALID_REPLICA_ASSIGNMENT,
            InvalidConfig(_) => codes::INVALID_CONFIG,
            InvalidRequest(_) => codes::INVALID_REQUEST,
            FencedLeaderEpoch(_) => codes::FENCED_LEADER_EPOCH,
            UnknownLeaderEpoch(_) => codes::UNKNOWN_LEADER_EPOCH,
            InvalidUpdateVersion(_) => codes::INVALID_UPDATE_VERSION,
            IneligibleReplica(_) => codes::INELIGIBLE_REPLICA,
            NotLeaderOrFollower(_) => codes::NOT_LEADER_OR_FOLLOWER,
            BrokerNotAvailable(_) => codes::BROKER_NOT_AVAILABLE,
            ElectionNotNeeded(_) => codes::ELECTION_NOT_NEEDED,
            PreferredLeaderNotAvailable(_) => codes::PREFERRED_LEADER_NOT_AVAILABLE,
            EligibleLeadersNotAvailable(_) => codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
            InconsistentClusterId(_) => codes::INCONSISTENT_CLUSTER_ID,
            UnknownServerError(_) => codes::UNKNOWN_SERVER_ERROR,
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
            (ControllerError::InvalidUpdateVersion(String::new()), 96),
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
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn message_is_display() {
        let err = ControllerError::InvalidConfig("bad value".into());
        assert_eq!(err.message(), "bad value");
        assert_eq!(err.to_string(), "bad value");
    }
}
