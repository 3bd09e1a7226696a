//! The record format of `__consumer_offsets`: Kafka's key and value schemas, encoded by hand
//! (the `kafka-protocol` crate does not carry them), and the v2 record batches that hold them.
//!
//! Keys start with an int16 version that doubles as the record type, so compaction keeps the
//! latest record per (group, topic, partition) and per group:
//!
//! - `OffsetCommitKey` (versions 0 and 1, same layout): group string, topic string, partition int32.
//! - `GroupMetadataKey` (version 2): group string.
//!
//! Values also start with an int16 version. We write `OffsetCommitValue` v3 (offset, leader
//! epoch, metadata, commit timestamp) and `GroupMetadataValue` v3 (protocol type, generation,
//! protocol, leader, current-state timestamp, members with group instance ids) and read
//! versions 0-3 of both, so a log written by Kafka's classic coordinator loads too. A null value
//! is a tombstone: the key was deleted. Strings are int16-length prefixed (null is -1), bytes
//! int32-length prefixed, arrays int32-count prefixed — Kafka's non-flexible encoding.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use runnel_storage::batch::{BatchHeader, COMPRESSION_MASK, CONTROL_BIT, HEADER_LEN};

use crate::records::{decompress, records, MIN_STORED_DECOMPRESS_LIMIT};

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct CodecError(pub String);

fn err(what: impl Into<String>) -> CodecError {
    CodecError(what.into())
}

/// The key of a `__consumer_offsets` record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordKey {
    /// A committed offset of one partition for one group.
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// The membership and generation of one group.
    GroupMetadata { group: String },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::GroupMetadata { group } => group,
        }
    }
}

/// `OffsetCommitValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when unknown (also what values before v3 load as).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Only in v1 values (explicit per-commit retention of old clients); never written.
    pub expire_timestamp: Option<i64>,
}

/// One member in a `GroupMetadataValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// `GroupMetadataValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    /// Empty for a group that only stores offsets.
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (values before v2).
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

const OFFSET_KEY_V0: i16 = 0;
const OFFSET_KEY_V1: i16 = 1;
const GROUP_KEY_V2: i16 = 2;
const OFFSET_VALUE_V3: i16 = 3;
const GROUP_VALUE_V3: i16 = 3;

pub(super) fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), CodecError> {
    if buf.remaining() < n {
        return Err(err(format!("truncated {what}")));
    }
    Ok(())
}

fn get_i16(buf: &mut Bytes, what: &str) -> Result<i16, CodecError> {
    need(buf, 2, what)?;
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut Bytes, what: &str) -> Result<i32, CodecError> {
    need(buf, 4, what)?;
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut Bytes, what: &str) -> Result<i64, CodecError> {
    need(buf, 8, what)?;
    Ok(buf.get_i64())
}

fn get_nullable_string(buf: &mut Bytes, what: &str) -> Result<Option<String>, CodecError> {
    let len = get_i16(buf, what)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    need(buf, len, what)?;
    let raw = buf.split_to(len);
    String::from_utf8(raw.to_vec())
        .map(Some)
        .map_err(|_| err(format!("{what} is not UTF-8")))
}

fn get_string(buf: &mut Bytes, what: &str) -> Result<String, CodecError> {
    get_nullable_string(buf, what)?.ok_or_else(|| err(format!("{what} is null")))
}

fn get_bytes(buf: &mut Bytes, what: &str) -> Result<Bytes, CodecError> {
    let len = get_i32(buf, what)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    let len = len as usize;
    need(buf, len, what)?;
    Ok(buf.split_to(len))
}

impl RecordKey {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                buf.put_i16(OFFSET_KEY_V1);
                put_string(&mut buf, group);
                put_string(&mut buf, topic);
                buf.put_i32(*partition);
            }
            RecordKey::GroupMetadata { group } => {
                buf.put_i16(GROUP_KEY_V2);
                put_string(&mut buf, group);
            }
        }
        buf.freeze()
    }

    /// `Ok(None)` for record types this coordinator does not use (transaction markers, the
    /// KIP-848 consumer-group records with key versions 3 and up); they are skipped on load.
    pub fn decode(mut buf: Bytes) -> Result<Option<Self>, CodecError> {
        let version = get_i16(&mut buf, "key version")?;
        Ok(match version {
            OFFSET_KEY_V0 | OFFSET_KEY_V1 => Some(RecordKey::Offset {
                group: get_string(&mut buf, "offset key group")?,
                topic: get_string(&mut buf, "offset key topic")?,
                partition: get_i32(&mut buf, "offset key partition")?,
            }),
            GROUP_KEY_V2 => Some(RecordKey::GroupMetadata {
                group: get_string(&mut buf, "group key")?,
            }),
            _ => None,
        })
    }
}

impl OffsetValue {
    /// Encodes as `OffsetCommitValue` v3.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(OFFSET_VALUE_V3);
        buf.put_i64(self.offset);
        buf.put_i32(self.leader_epoch);
        put_string(&mut buf, &self.metadata);
        buf.put_i64(self.commit_timestamp);
        buf.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Result<Self, CodecError> {
        let version = get_i16(&mut buf, "offset value version")?;
        let mut value = OffsetValue {
            offset: 0,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: -1,
            expire_timestamp: None,
        };
        match version {
            0..=2 => {
                value.offset = get_i64(&mut buf, "offset")?;
                value.metadata = get_string(&mut buf, "offset metadata")?;
                value.commit_timestamp = get_i64(&mut buf, "commit timestamp")?;
                if version == 1 {
                    value.expire_timestamp = Some(get_i64(&mut buf, "expire timestamp")?);
                }
            }
            3 => {
                value.offset = get_i64(&mut buf, "offset")?;
                value.leader_epoch = get_i32(&mut buf, "leader epoch")?;
                value.metadata = get_string(&mut buf, "offset metadata")?;
                value.commit_timestamp = get_i64(&mut buf, "commit timestamp")?;
            }
            v => return Err(err(format!("unsupported OffsetCommitValue version {v}"))),
        }
        Ok(value)
    }
}

impl GroupValue {
    /// Encodes as `GroupMetadataValue` v3.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(GROUP_VALUE_V3);
        put_string(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable_string(&mut buf, self.protocol.as_deref());
        put_nullable_string(&mut buf, self.leader.as_deref());
        buf.put_i64(self.current_state_timestamp);
        buf.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut buf, &m.member_id);
            put_nullable_string(&mut buf, m.group_instance_id.as_deref());
            put_string(&mut buf, &m.client_id);
            put_string(&mut buf, &m.client_host);
            buf.put_i32(m.rebalance_timeout_ms);
            buf.put_i32(m.session_timeout_ms);
            put_bytes(&mut buf, &m.subscription);
            put_bytes(&mut buf, &m.assignment);
        }
        buf.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Result<Self, CodecError> {
        let version = get_i16(&mut buf, "group value version")?;
        if !(0..=3).contains(&version) {
            return Err(err(format!(
                "unsupported GroupMetadataValue version {version}"
            )));
        }
        let protocol_type = get_nullable_string(&mut buf, "protocol type")?.unwrap_or_default();
        let generation = get_i32(&mut buf, "generation")?;
        let protocol = get_nullable_string(&mut buf, "protocol")?;
        let leader = get_nullable_string(&mut buf, "leader")?;
        let current_state_timestamp = if version >= 2 {
            get_i64(&mut buf, "current state timestamp")?
        } else {
            -1
        };
        let count = get_i32(&mut buf, "member count")?.max(0);
        let mut members = Vec::with_capacity((count as usize).min(1024));
        for _ in 0..count {
            let member_id = get_string(&mut buf, "member id")?;
            let group_instance_id = if version >= 3 {
                get_nullable_string(&mut buf, "group instance id")?
            } else {
                None
            };
            let client_id = get_string(&mut buf, "client id")?;
            let client_host = get_string(&mut buf, "client host")?;
            let rebalance_timeout_ms = if version >= 1 {
                get_i32(&mut buf, "rebalance timeout")?
            } else {
                -1
            };
            let session_timeout_ms = get_i32(&mut buf, "session timeout")?;
            let subscription = get_bytes(&mut buf, "subscription")?;
            let assignment = get_bytes(&mut buf, "assignment")?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                // v0 members had no rebalance timeout; Kafka uses the session timeout.
                rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                    session_timeout_ms
                } else {
                    rebalance_timeout_ms
                },
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp,
            members,
        })
    }
}

/// A decoded `__consumer_offsets` record: the key and, unless it is a tombstone, the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
}

impl CoordinatorRecord {
    pub fn key(&self) -> RecordKey {
        match self {
            CoordinatorRecord::Offset {
                group,
                topic,
                partition,
                ..
            } => RecordKey::Offset {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
            },
            CoordinatorRecord::Group { group, .. } => RecordKey::GroupMetadata {
                group: group.clone(),
            },
        }
    }

    fn value_bytes(&self) -> Option<Bytes> {
        match self {
            CoordinatorRecord::Offset { value, .. } => value.as_ref().map(OffsetValue::encode),
            CoordinatorRecord::Group { value, .. } => value.as_ref().map(GroupValue::encode),
        }
    }

    /// Decodes a record's key and value; `Ok(None)` for a record type we skip.
    pub fn decode(key: Option<Bytes>, value: Option<Bytes>) -> Result<Option<Self>, CodecError> {
        let key = key.ok_or_else(|| err("record without a key"))?;
        Ok(match RecordKey::decode(key)? {
            None => None,
            Some(RecordKey::Offset {
                group,
                topic,
                partition,
            }) => Some(CoordinatorRecord::Offset {
                group,
                topic,
                partition,
                value: value.map(OffsetValue::decode).transpose()?,
            }),
            Some(RecordKey::GroupMetadata { group }) => Some(CoordinatorRecord::Group {
                group,
                value: value.map(GroupValue::decode).transpose()?,
            }),
        })
    }
}

/// Builds one uncompressed v2 record batch holding `records`, timestamped `now_ms`. The
/// partition assigns the offsets when it appends the batch.
pub fn build_batch(records: &[CoordinatorRecord], now_ms: i64) -> Result<Vec<u8>, CodecError> {
    let raw: Vec<(Option<Bytes>, Option<Bytes>)> = records
        .iter()
        .map(|r| (Some(r.key().encode()), r.value_bytes()))
        .collect();
    build_raw_batch(&raw, now_ms)
}

/// One uncompressed v2 batch of already-encoded (key, value) pairs.
pub(crate) fn build_raw_batch(
    records: &[(Option<Bytes>, Option<Bytes>)],
    now_ms: i64,
) -> Result<Vec<u8>, CodecError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever `offset - sequence` changes; counting
            // up from -1 keeps every record in one batch whose base sequence is -1 (no
            // producer id, so nothing reads the sequence).
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: key.clone(),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| err(format!("cannot encode a record batch: {e}")))?;
    Ok(buf.to_vec())
}

/// A record [`decode_batches`] left out because it cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The record's offset (the batch's base offset when the whole batch was unreadable).
    pub offset: i64,
    pub reason: CodecError,
}

/// What [`decode_batches`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The records we use, in log order.
    pub records: Vec<CoordinatorRecord>,
    /// Records (or whole batches) that could not be decoded, for the caller to log.
    pub skipped: Vec<Skipped>,
    /// The offset after the last batch, where the next read starts.
    pub next: Option<i64>,
}

/// Decodes the records of back-to-back v2 batches as read from the log. Records of types we
/// do not use are dropped silently (transaction markers, newer record types). A record that
/// cannot be decoded (no key, malformed key, unknown or malformed value) and a batch that
/// cannot be decoded are left out and reported in [`Decoded::skipped`], so one bad record
/// does not make the partition unloadable; the key it would have written keeps its earlier
/// value. Only a framing error (a batch header that does not fit the data) is an error, since
/// then the next batch cannot be found.
pub fn decode_batches(mut buf: Bytes) -> Result<Decoded, CodecError> {
    let mut out = Decoded::default();
    while buf.has_remaining() {
        let header = BatchHeader::new(&buf).ok_or_else(|| err("truncated batch header"))?;
        let size = header
            .total_size()
            .filter(|s| *s <= buf.len())
            .ok_or_else(|| err("batch length exceeds the data read"))?;
        let base_offset = header.base_offset();
        out.next = Some(
            base_offset
                .saturating_add(i64::from(header.last_offset_delta()))
                .saturating_add(1),
        );
        let batch = buf.split_to(size);
        let header = BatchHeader::new(&batch).expect("a whole batch");
        if header.attributes() & CONTROL_BIT != 0 {
            continue;
        }
        let records = match batch_records(&batch, &header) {
            Ok(records) => records,
            Err(reason) => {
                out.skipped.push(Skipped {
                    offset: base_offset,
                    reason: err(format!("cannot decode a record batch: {reason}")),
                });
                continue;
            }
        };
        for (offset_delta, key, value) in records {
            match CoordinatorRecord::decode(key, value) {
                Ok(Some(r)) => out.records.push(r),
                Ok(None) => {}
                Err(reason) => out.skipped.push(Skipped {
                    offset: base_offset.saturating_add(i64::from(offset_delta)),
                    reason,
                }),
            }
        }
    }
    Ok(out)
}

/// The (offset delta, key, value) of every record of one batch, read with the bounded record
/// reader; keys and values are slices of the batch (or of its decompressed records).
#[allow(clippy::type_complexity)]
fn batch_records(
    batch: &Bytes,
    header: &BatchHeader<'_>,
) -> Result<Vec<(i32, Option<Bytes>, Option<Bytes>)>, String> {
    let section = batch.slice(HEADER_LEN..);
    let raw = match decompress(
        header.attributes() & COMPRESSION_MASK,
        &section,
        MIN_STORED_DECOMPRESS_LIMIT,
    )
    .map_err(|e| e.to_string())?
    {
        Cow::Borrowed(_) => section,
        Cow::Owned(v) => Bytes::from(v),
    };
    let mut out = Vec::new();
    for record in records(&raw, header.records_count()).map_err(|e| e.to_string())? {
        let r = record.map_err(|e| e.to_string())?;
        out.push((
            r.offset_delta,
            r.key.map(|k| raw.slice_ref(k)),
            r.value.map(|v| raw.slice_ref(v)),
        ));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn string() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._ -]{0,40}"
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn member() -> impl Strategy<Value = MemberValue> {
        (
            string(),
            proptest::option::of(string()),
            string(),
            string(),
            any::<i32>().prop_map(|v| v.max(0)),
            any::<i32>(),
            bytes(),
            bytes(),
        )
            .prop_map(|(id, inst, client, host, rebalance, session, sub, asg)| {
                MemberValue {
                    member_id: id,
                    group_instance_id: inst,
                    client_id: client,
                    client_host: host,
                    rebalance_timeout_ms: rebalance,
                    session_timeout_ms: session,
                    subscription: sub,
                    assignment: asg,
                }
            })
    }

    proptest! {
        #[test]
        fn offset_key_round_trips(group in string(), topic in string(), partition in any::<i32>()) {
            let key = RecordKey::Offset { group, topic, partition };
            prop_assert_eq!(RecordKey::decode(key.encode()).unwrap(), Some(key));
        }

        #[test]
        fn group_key_round_trips(group in string()) {
            let key = RecordKey::GroupMetadata { group };
            prop_assert_eq!(RecordKey::decode(key.encode()).unwrap(), Some(key));
        }

        #[test]
        fn offset_value_round_trips(offset in any::<i64>(), epoch in any::<i32>(), metadata in string(), ts in any::<i64>()) {
            let value = OffsetValue { offset, leader_epoch: epoch, metadata, commit_timestamp: ts, expire_timestamp: None };
            prop_assert_eq!(OffsetValue::decode(value.encode()).unwrap(), value);
        }

        #[test]
        fn group_value_round_trips(
            protocol_type in string(),
            generation in any::<i32>(),
            protocol in proptest::option::of(string()),
            leader in proptest::option::of(string()),
            ts in any::<i64>(),
            members in proptest::collection::vec(member(), 0..4),
        ) {
            let value = GroupValue { protocol_type, generation, protocol, leader, current_state_timestamp: ts, members };
            prop_assert_eq!(GroupValue::decode(value.encode()).unwrap(), value);
        }

        #[test]
        fn batches_round_trip(groups in proptest::collection::vec(string(), 1..5), offset in any::<i64>()) {
            let records: Vec<CoordinatorRecord> = groups.iter().enumerate().map(|(i, g)| {
                if i % 2 == 0 {
                    CoordinatorRecord::Offset {
                        group: g.clone(), topic: "t".into(), partition: i as i32,
                        value: (i % 3 != 0).then(|| OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp: 7, expire_timestamp: None }),
                    }
                } else {
                    CoordinatorRecord::Group { group: g.clone(), value: None }
                }
            }).collect();
            let batch = build_batch(&records, 42).unwrap();
            let header = runnel_storage::batch::BatchHeader::new(&batch).unwrap();
            prop_assert_eq!(header.total_size(), Some(batch.len()), "one batch");
            prop_assert_eq!(header.base_sequence(), -1);
            let decoded = decode_batches(Bytes::from(batch)).unwrap();
            prop_assert_eq!(decoded.records, records.clone());
            prop_assert!(decoded.skipped.is_empty());
            prop_assert_eq!(decoded.next, Some(records.len() as i64));
        }

        #[test]
        fn garbage_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = RecordKey::decode(Bytes::from(raw.clone()));
            let _ = OffsetValue::decode(Bytes::from(raw.clone()));
            let _ = GroupValue::decode(Bytes::from(raw.clone()));
        }
    }

    #[test]
    fn offset_key_matches_kafka_layout() {
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        assert_eq!(
            key.encode().as_ref(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]
        );
        let group = RecordKey::GroupMetadata { group: "g".into() };
        assert_eq!(group.encode().as_ref(), &[0, 2, 0, 1, b'g']);
    }

    #[test]
    fn older_value_versions_load() {
        // OffsetCommitValue v1: offset, metadata, commit ts, expire ts.
        let mut v1 = BytesMut::new();
        v1.put_i16(1);
        v1.put_i64(10);
        put_string(&mut v1, "m");
        v1.put_i64(100);
        v1.put_i64(200);
        let value = OffsetValue::decode(v1.freeze()).unwrap();
        assert_eq!(
            (value.offset, value.leader_epoch, value.expire_timestamp),
            (10, -1, Some(200))
        );
        // GroupMetadataValue v0 with one member.
        let mut g0 = BytesMut::new();
        g0.put_i16(0);
        put_string(&mut g0, "consumer");
        g0.put_i32(4);
        put_nullable_string(&mut g0, Some("range"));
        put_nullable_string(&mut g0, Some("m1"));
        g0.put_i32(1);
        put_string(&mut g0, "m1");
        put_string(&mut g0, "c");
        put_string(&mut g0, "/h");
        g0.put_i32(10_000);
        put_bytes(&mut g0, b"sub");
        put_bytes(&mut g0, b"asg");
        let value = GroupValue::decode(g0.freeze()).unwrap();
        assert_eq!(value.generation, 4);
        assert_eq!(value.current_state_timestamp, -1);
        assert_eq!(value.members[0].rebalance_timeout_ms, 10_000);
        assert_eq!(value.members[0].group_instance_id, None);
    }

    #[test]
    fn unknown_key_versions_are_skipped() {
        let mut key = BytesMut::new();
        key.put_i16(3);
        put_string(&mut key, "g");
        assert_eq!(RecordKey::decode(key.freeze()).unwrap(), None);
    }

    /// Raw (key, value) pairs between valid records: a malformed key, a null key, and
    /// unknown value versions of known keys.
    pub(crate) fn mixed_records(group: &str) -> Vec<(Option<Bytes>, Option<Bytes>)> {
        let offset = |partition: i32, offset: i64| {
            let r = CoordinatorRecord::Offset {
                group: group.to_string(),
                topic: "t".into(),
                partition,
                value: Some(OffsetValue {
                    offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp: 1,
                    expire_timestamp: None,
                }),
            };
            (Some(r.key().encode()), r.value_bytes())
        };
        let key = |partition: i32| {
            RecordKey::Offset {
                group: group.to_string(),
                topic: "t".into(),
                partition,
            }
            .encode()
        };
        let mut future_value = BytesMut::new();
        future_value.put_i16(99);
        future_value.put_i64(1234);
        let future_value = future_value.freeze();
        vec![
            offset(0, 5),
            // Offset key v1 whose group string is cut short.
            (
                Some(Bytes::from_static(&[0, 1, 0, 9, b'x'])),
                Some(Bytes::new()),
            ),
            (None, Some(Bytes::from_static(b"no key"))),
            offset(1, 7),
            // A newer OffsetCommitValue for a key that already has a value: the old one stays.
            (Some(key(0)), Some(future_value.clone())),
            (
                Some(
                    RecordKey::GroupMetadata {
                        group: group.to_string(),
                    }
                    .encode(),
                ),
                Some(future_value),
            ),
            offset(2, 9),
        ]
    }

    #[test]
    fn undecodable_records_are_skipped_and_reported() {
        let raw = mixed_records("g");
        let mut buf = build_raw_batch(&raw[..3], 1).unwrap();
        buf.extend(build_raw_batch(&raw[3..], 1).unwrap());
        // The second batch as the log would hold it: offsets 3.. (the first holds 0..=2).
        let second = buf.len() - build_raw_batch(&raw[3..], 1).unwrap().len();
        buf[second..second + 8].copy_from_slice(&3i64.to_be_bytes());
        let decoded = decode_batches(Bytes::from(buf)).unwrap();
        let offsets: Vec<(i32, i64)> = decoded
            .records
            .iter()
            .map(|r| match r {
                CoordinatorRecord::Offset {
                    partition, value, ..
                } => (*partition, value.as_ref().unwrap().offset),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(offsets, vec![(0, 5), (1, 7), (2, 9)]);
        let skipped: Vec<i64> = decoded.skipped.iter().map(|s| s.offset).collect();
        assert_eq!(skipped, vec![1, 2, 4, 5], "{:?}", decoded.skipped);
        assert!(decoded.skipped[2].reason.0.contains("version 99"));
        assert_eq!(decoded.next, Some(7));
    }
}
