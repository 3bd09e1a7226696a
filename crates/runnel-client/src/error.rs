//! The client's error type.

use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

/// Result alias used throughout the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while talking to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bootstrap list was empty or could not be parsed.
    #[error("invalid bootstrap server list '{0}': expected host:port[,host:port...]")]
    InvalidBootstrap(String),

    /// The TCP connection could not be established.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The `host:port` we tried.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A network wait (connect, write, or read) took longer than allowed.
    #[error("timed out after {}ms {operation} {addr}", timeout.as_millis())]
    Timeout {
        /// The `host:port` of the broker.
        addr: String,
        /// What we were doing, e.g. "connecting to" or "waiting for a Fetch response from".
        operation: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },

    /// The connection failed after it was established.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The `host:port` of the broker.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The broker sent something we could not understand, or we could not encode a request.
    #[error("protocol error with {addr}: {message}")]
    Protocol {
        /// The `host:port` of the broker (empty when not tied to one).
        addr: String,
        /// What went wrong.
        message: String,
    },

    /// The broker does not support any version of an API that we can speak.
    #[error(
        "broker {addr} does not support {api:?} in a version this client speaks \
         (client: {ours}, broker: {})",
        theirs.map(|r| r.to_string()).unwrap_or_else(|| "not supported".to_owned())
    )]
    UnsupportedVersion {
        /// The `host:port` of the broker.
        addr: String,
        /// The API in question.
        api: ApiKey,
        /// The versions this client supports.
        ours: VersionRange,
        /// The versions the broker advertised, if any.
        theirs: Option<VersionRange>,
    },

    /// The broker answered with a Kafka error code.
    #[error("{}", describe_kafka_error(*error, topic.as_deref(), *partition, message.as_deref()))]
    Kafka {
        /// The error code.
        error: ResponseError,
        /// The topic it concerns, if any.
        topic: Option<String>,
        /// The partition it concerns, if any.
        partition: Option<i32>,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },

    /// A group's coordinator answered with a Kafka error code that concerns the group (e.g.
    /// GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, UNKNOWN_MEMBER_ID, COORDINATOR_NOT_AVAILABLE).
    #[error("{}", describe_group_error(*error, group, message.as_deref()))]
    Group {
        /// The error code.
        error: ResponseError,
        /// The group id.
        group: String,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },

    /// A partition refused an idempotent batch because of its producer id, epoch or sequence
    /// number (OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH).
    /// Retrying the batch cannot help; the producer has to start over with a new identity.
    #[error(
        "topic '{topic}' partition {partition} refused the batch with sequence {base_sequence} \
         of producer {producer_id} (epoch {producer_epoch}): {} ({})",
        describe_sequence_error(*error, message.as_deref()),
        error_name(*error)
    )]
    Sequence {
        /// The error code.
        error: ResponseError,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The producer id of the batch.
        producer_id: i64,
        /// The producer epoch of the batch.
        producer_epoch: i16,
        /// The base sequence of the batch.
        base_sequence: i32,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },

    /// A partition has no leader (or its leader is not in the broker list).
    #[error("partition {partition} of topic '{topic}' has no available leader")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },

    /// A record batch could not be encoded or decoded.
    #[error("record batch error: {0}")]
    Records(String),

    /// The caller passed an invalid argument.
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// The Kafka error code, when this is a [`Error::Kafka`], [`Error::Group`] or
    /// [`Error::Sequence`].
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            Error::Kafka { error, .. }
            | Error::Group { error, .. }
            | Error::Sequence { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether retrying (after refreshing metadata) may help.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { error, .. } | Error::Group { error, .. } => error.is_retriable(),
            Error::Io { .. } | Error::Timeout { .. } | Error::NoLeader { .. } => true,
            _ => false,
        }
    }

    /// Builds a [`Error::Kafka`] from a response error code, or `None` when the code is 0.
    pub fn from_code(
        code: i16,
        topic: Option<&str>,
        partition: Option<i32>,
        message: Option<&str>,
    ) -> Option<Self> {
        ResponseError::try_from_code(code).map(|error| Error::Kafka {
            error,
            topic: topic.map(str::to_owned),
            partition,
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        })
    }

    /// Builds an error from a code returned for a group: [`Error::Group`] for the codes
    /// that concern the group itself (see [`Error::is_group_level`]), [`Error::Kafka`] for
    /// the rest. `None` when the code is 0.
    pub fn from_group_code(code: i16, group: &str, message: Option<&str>) -> Option<Self> {
        let error = ResponseError::try_from_code(code)?;
        let message = message.filter(|m| !m.is_empty()).map(str::to_owned);
        Some(if is_group_error(error) {
            Error::Group {
                error,
                group: group.to_owned(),
                message,
            }
        } else {
            Error::Kafka {
                error,
                topic: None,
                partition: None,
                message,
            }
        })
    }

    /// Whether this is an [`Error::Group`]: the coordinator refused the request for the
    /// whole group rather than for one partition.
    pub fn is_group_level(&self) -> bool {
        matches!(self, Error::Group { .. })
    }

    pub(crate) fn protocol(addr: &str, message: impl Into<String>) -> Self {
        Error::Protocol {
            addr: addr.to_owned(),
            message: message.into(),
        }
    }
}

/// Error codes that concern a group as a whole rather than one of its partitions.
fn is_group_error(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::CoordinatorNotAvailable
            | ResponseError::NotCoordinator
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::GroupIdNotFound
            | ResponseError::NonEmptyGroup
            | ResponseError::InvalidGroupId
            | ResponseError::GroupAuthorizationFailed
            | ResponseError::UnknownMemberId
            | ResponseError::IllegalGeneration
            | ResponseError::RebalanceInProgress
            | ResponseError::FencedInstanceId
            | ResponseError::GroupMaxSizeReached
            | ResponseError::InconsistentGroupProtocol
            | ResponseError::GroupSubscribedToTopic
            | ResponseError::StaleMemberEpoch
    )
}

fn describe_group_error(error: ResponseError, group: &str, message: Option<&str>) -> String {
    let name = error_name(error);
    let what = match error {
        ResponseError::GroupIdNotFound => format!("consumer group '{group}' does not exist"),
        ResponseError::NonEmptyGroup => {
            format!("consumer group '{group}' still has active members")
        }
        ResponseError::CoordinatorNotAvailable | ResponseError::CoordinatorLoadInProgress => {
            format!("the coordinator of group '{group}' is not available yet")
        }
        ResponseError::NotCoordinator => {
            format!("the broker is no longer the coordinator of group '{group}'")
        }
        ResponseError::InvalidGroupId => format!("'{group}' is not a valid group id"),
        _ => match message {
            Some(m) => format!("group '{group}': {m}"),
            None => format!("group '{group}': {}", lower_desc(error)),
        },
    };
    format!("{what} ({name})")
}

/// The Kafka wire name of an error, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn error_name(error: ResponseError) -> String {
    if let ResponseError::Unknown(code) = error {
        return format!("UNKNOWN_ERROR_CODE_{code}");
    }
    // `Display` gives the variant name in CamelCase; Kafka spells it SCREAMING_SNAKE_CASE.
    let camel = error.to_string();
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn describe_kafka_error(
    error: ResponseError,
    topic: Option<&str>,
    partition: Option<i32>,
    message: Option<&str>,
) -> String {
    let name = error_name(error);
    // Well-known topic errors get a fixed sentence (the broker's message would only repeat
    // it); for the rest the broker's message, when present, is the most specific description.
    let known = match (error, topic) {
        (ResponseError::UnknownTopicOrPartition, Some(t)) => Some(match partition {
            Some(p) => format!("topic '{t}' partition {p} does not exist"),
            None => format!("topic '{t}' does not exist"),
        }),
        (ResponseError::UnknownTopicId, Some(t)) => Some(format!("topic '{t}' does not exist")),
        (ResponseError::TopicAlreadyExists, Some(t)) => Some(format!("topic '{t}' already exists")),
        (ResponseError::InvalidTopicException, Some(t)) => {
            Some(format!("'{t}' is not a valid topic name"))
        }
        _ => None,
    };
    if let Some(known) = known {
        return format!("{known} ({name})");
    }
    let what = message.map_or_else(|| lower_desc(error), str::to_owned);
    match (topic, partition) {
        (Some(t), Some(p)) => format!("topic '{t}' partition {p}: {what} ({name})"),
        (Some(t), None) => format!("topic '{t}': {what} ({name})"),
        (None, _) => format!("{what} ({name})"),
    }
}

/// What a sequence error means for the producer, or the broker's own words when it sent some.
fn describe_sequence_error(error: ResponseError, message: Option<&str>) -> String {
    if let Some(m) = message {
        return m.to_owned();
    }
    match error {
        ResponseError::OutOfOrderSequenceNumber => {
            "the broker expected another sequence number: an earlier batch of this producer is \
             missing from the partition"
                .to_owned()
        }
        ResponseError::UnknownProducerId => {
            "the partition has no state for this producer id (its records may have been deleted)"
                .to_owned()
        }
        ResponseError::InvalidProducerEpoch => {
            "a newer epoch of this producer id exists: this producer was fenced".to_owned()
        }
        other => lower_desc(other),
    }
}

/// A short description of the error derived from its name, e.g. "not leader or follower".
fn lower_desc(error: ResponseError) -> String {
    error_name(error).replace('_', " ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafka_style() {
        assert_eq!(
            error_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            error_name(ResponseError::UnknownServerError),
            "UNKNOWN_SERVER_ERROR"
        );
        assert_eq!(
            error_name(ResponseError::Unknown(999)),
            "UNKNOWN_ERROR_CODE_999"
        );
    }

    #[test]
    fn kafka_error_display() {
        let e = Error::from_code(3, Some("x"), None, None).unwrap();
        assert_eq!(
            e.to_string(),
            "topic 'x' does not exist (UNKNOWN_TOPIC_OR_PARTITION)"
        );
        let e = Error::from_code(36, Some("x"), None, Some("Topic 'x' already exists.")).unwrap();
        assert_eq!(
            e.to_string(),
            "topic 'x' already exists (TOPIC_ALREADY_EXISTS)"
        );
        let e = Error::from_code(40, Some("x"), None, Some("bad value for retention.ms")).unwrap();
        assert_eq!(
            e.to_string(),
            "topic 'x': bad value for retention.ms (INVALID_CONFIG)"
        );
        let e = Error::from_code(6, Some("x"), Some(2), None).unwrap();
        assert_eq!(
            e.to_string(),
            "topic 'x' partition 2: not leader or follower (NOT_LEADER_OR_FOLLOWER)"
        );
        assert!(Error::from_code(0, None, None, None).is_none());
    }

    #[test]
    fn sequence_error_display() {
        let e = Error::Sequence {
            error: ResponseError::OutOfOrderSequenceNumber,
            topic: "t".into(),
            partition: 2,
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 40,
            message: None,
        };
        assert_eq!(
            e.to_string(),
            "topic 't' partition 2 refused the batch with sequence 40 of producer 7 (epoch 1): \
             the broker expected another sequence number: an earlier batch of this producer is \
             missing from the partition (OUT_OF_ORDER_SEQUENCE_NUMBER)"
        );
        assert!(!e.is_retriable());
        assert_eq!(
            e.kafka_error(),
            Some(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn group_error_display() {
        let e = Error::from_group_code(69, "g1", None).unwrap();
        assert!(e.is_group_level());
        assert_eq!(
            e.to_string(),
            "consumer group 'g1' does not exist (GROUP_ID_NOT_FOUND)"
        );
        let e = Error::from_group_code(68, "g1", Some("")).unwrap();
        assert_eq!(
            e.to_string(),
            "consumer group 'g1' still has active members (NON_EMPTY_GROUP)"
        );
        let e = Error::from_group_code(25, "g1", None).unwrap();
        assert_eq!(
            e.to_string(),
            "group 'g1': unknown member id (UNKNOWN_MEMBER_ID)"
        );
        assert_eq!(e.kafka_error(), Some(ResponseError::UnknownMemberId));
        // A partition-level code is not a group error.
        let e = Error::from_group_code(3, "g1", None).unwrap();
        assert!(!e.is_group_level());
        assert!(Error::from_group_code(0, "g1", None).is_none());
    }
}
