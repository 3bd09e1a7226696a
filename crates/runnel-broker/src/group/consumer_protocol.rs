//! The consumer protocol's subscription: the member metadata a consumer sends in JoinGroup
//! (`ConsumerProtocolSubscription`), from which the coordinator learns the topics a group
//! subscribes to. Decoded with kafka-protocol's type, as runnel-client does.
//!
//! These bytes come from clients, and kafka-protocol sizes an array's allocation from the
//! count on the wire before reading any element (a failed allocation aborts the process; see
//! the gateway's `bounds`). So the body is first walked along the decoder's path, and every
//! count is checked against the bytes left.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::{Decodable, Message};

/// Topics a consumer subscribes to, from its subscription metadata (an int16 version, then
/// the body). `None` if it does not decode, as for Kafka's coordinator. A version newer than
/// kafka-protocol knows is read as the newest it knows, as Kafka's `ConsumerProtocol` does:
/// versions only add fields at the end.
pub fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut body = Bytes::copy_from_slice(metadata);
    let version = body.try_get_i16().ok()?;
    if version < 0 {
        return None;
    }
    let version = version.min(ConsumerProtocolSubscription::VERSIONS.max);
    counts_fit(&body, version)?;
    let subscription = ConsumerProtocolSubscription::decode(&mut body, version).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// Walks a subscription body at `version` as the decoder reads it; `None` when an array count,
/// times the smallest encoding of one element, exceeds the bytes left (or they run out).
fn counts_fit(body: &[u8], version: i16) -> Option<()> {
    let mut r = Walk(body);
    // topics: strings.
    for _ in 0..r.count(2)? {
        r.sized(2)?;
    }
    // user_data.
    r.sized(4)?;
    if version >= 1 {
        // owned_partitions: a topic name and an array of int32 partitions.
        for _ in 0..r.count(2 + 4)? {
            r.sized(2)?;
            let partitions = r.count(4)?;
            r.skip(partitions * 4)?;
        }
    }
    // generation_id (v2+) and rack_id (v3+) allocate nothing; the decoder checks them.
    Some(())
}

struct Walk<'a>(&'a [u8]);

impl Walk<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }

    /// A length-prefixed string (`width` 2) or byte field (`width` 4); negative is null.
    fn sized(&mut self, width: usize) -> Option<()> {
        let len = match width {
            2 => i32::from(self.0.try_get_i16().ok()?),
            _ => self.0.try_get_i32().ok()?,
        };
        self.skip(usize::try_from(len).unwrap_or(0))
    }

    /// An array count whose elements, of at least `min` bytes each, fit in the bytes left. A
    /// null (negative) count is refused: no array of the subscription is nullable.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = usize::try_from(self.0.try_get_i32().ok()?).ok()?;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use proptest::prelude::*;

    use super::*;
    use crate::group::records::put_string;

    fn encoded(s: &ConsumerProtocolSubscription, version: i16) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        s.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn subscription_topics_parse() {
        let mut sub = BytesMut::new();
        sub.put_i16(1);
        sub.put_i32(2);
        put_string(&mut sub, "a");
        put_string(&mut sub, "b");
        sub.put_i32(-1); // user data
        sub.put_i32(0); // owned partitions
        assert_eq!(
            consumer_subscription_topics(&sub),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(consumer_subscription_topics(&[0, 1]), None);
    }

    /// What librdkafka 2.x (confluent-kafka) sends in JoinGroup, captured from DescribeGroups:
    /// v3, topic "capt", empty user data, no owned partitions, generation -1, rack "".
    #[test]
    fn librdkafka_subscription_decodes() {
        let captured = [
            0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x04, b'c', b'a', b'p', b't', 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
        ];
        assert_eq!(
            consumer_subscription_topics(&captured),
            Some(vec!["capt".to_string()])
        );
    }

    /// Every version kafka-protocol encodes, and a newer one with more fields at the end.
    #[test]
    fn every_version_decodes() {
        let s = ConsumerProtocolSubscription::default()
            .with_topics(vec![
                StrBytes::from_static_str("t1"),
                StrBytes::from_static_str("t2"),
            ])
            .with_user_data(Some(Bytes::from_static(b"user")))
            .with_owned_partitions(vec![TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("t1")))
                .with_partitions(vec![0, 3])])
            .with_generation_id(4)
            .with_rack_id(Some(StrBytes::from_static_str("rack")));
        let topics = Some(vec!["t1".to_string(), "t2".to_string()]);
        for version in 0..=3 {
            assert_eq!(consumer_subscription_topics(&encoded(&s, version)), topics);
        }
        let mut newer = BytesMut::from(&encoded(&s, 3)[..]);
        newer[..2].copy_from_slice(&9i16.to_be_bytes());
        newer.put_slice(b"a field of v9");
        assert_eq!(consumer_subscription_topics(&newer), topics);
    }

    /// Counts that claim far more elements than the bytes hold are refused before the decoder
    /// sizes an allocation from them (2^31-1 topics would ask for about 50 GB).
    #[test]
    fn lying_counts_are_refused() {
        let mut topics = BytesMut::new();
        topics.put_i16(0);
        topics.put_i32(i32::MAX);
        put_string(&mut topics, "t");
        assert_eq!(consumer_subscription_topics(&topics), None);

        // A valid topic list, then an owned topic whose partition array lies.
        let mut partitions = BytesMut::new();
        partitions.put_i16(1);
        partitions.put_i32(1);
        put_string(&mut partitions, "t");
        partitions.put_i32(-1);
        partitions.put_i32(1);
        put_string(&mut partitions, "t");
        partitions.put_i32(i32::MAX);
        partitions.put_i32(0);
        assert_eq!(consumer_subscription_topics(&partitions), None);

        let mut owned = BytesMut::new();
        owned.put_i16(3);
        owned.put_i32(0);
        owned.put_i32(-1);
        owned.put_i32(i32::MAX);
        assert_eq!(consumer_subscription_topics(&owned), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = consumer_subscription_topics(&raw);
        }

        /// Whatever a client can validly encode, at any version, passes the walk and decodes.
        #[test]
        fn valid_subscriptions_decode(
            version in 0i16..=3,
            topics in proptest::collection::vec("[a-z]{0,8}", 0..5),
            user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            owned in proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<i32>(), 0..4)), 0..4),
        ) {
            let s = ConsumerProtocolSubscription::default()
                .with_topics(topics.iter().map(|t| StrBytes::from_string(t.clone())).collect())
                .with_user_data(user_data.map(Bytes::from))
                .with_owned_partitions(owned.into_iter().map(|(t, ps)| {
                    TopicPartition::default().with_topic(TopicName(StrBytes::from_string(t))).with_partitions(ps)
                }).collect());
            prop_assert_eq!(consumer_subscription_topics(&encoded(&s, version)), Some(topics));
        }
    }
}
