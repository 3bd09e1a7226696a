//! Reading the records of a v2 batch in place: every length, count and varint is checked
//! against the bytes left before it is used, nothing is allocated, and a record must end
//! exactly where its length says (Kafka's `DefaultRecord.readFrom` rules).
//!
//! A record on the wire (all integers zigzag varints unless noted):
//!
//! ```text
//! length | attributes (1 byte) | timestampDelta (varlong) | offsetDelta | keyLength | key
//!        | valueLength | value | headerCount | (headerKeyLength | headerKey
//!        | headerValueLength | headerValue) * headerCount
//! ```

/// The fewest bytes one record takes: a length, attributes, both deltas, two lengths and a
/// header count, one byte each. A batch claiming more records than its bytes can hold at
/// this size is refused before any record is read.
pub const MIN_RECORD_BYTES: usize = 7;

/// One record, borrowed from the batch's (decompressed) records section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: u32,
}

/// Why the records of a batch cannot be read; `index` is the record at fault (the record
/// count itself when the batch as a whole is wrong).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record {index}: {reason}")]
pub struct RecordError {
    pub index: usize,
    pub reason: String,
}

/// The records of a records section that claims `count` of them. Yields each record, then,
/// if bytes are left after the last one, one error.
pub struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    index: usize,
    count: usize,
    done: bool,
}

/// Starts reading `count` records from `data`; refuses a count that is negative or that the
/// bytes cannot hold.
pub fn records(data: &[u8], count: i32) -> Result<Records<'_>, RecordError> {
    let count = usize::try_from(count).map_err(|_| RecordError {
        index: 0,
        reason: format!("negative record count {count}"),
    })?;
    if count.saturating_mul(MIN_RECORD_BYTES) > data.len() {
        return Err(RecordError {
            index: 0,
            reason: format!(
                "the batch claims {count} records but its {} bytes of records cannot hold them",
                data.len()
            ),
        });
    }
    Ok(Records {
        data,
        pos: 0,
        index: 0,
        count,
        done: false,
    })
}

impl Records<'_> {
    /// The byte position just after the last record read: records `..position()` of the
    /// section are whole and checked.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.count {
            self.done = true;
            let left = self.data.len() - self.pos;
            return (left > 0).then(|| {
                Err(RecordError {
                    index: self.count,
                    reason: format!(
                        "{left} bytes follow the last of the batch's {} records",
                        self.count
                    ),
                })
            });
        }
        let index = self.index;
        self.index += 1;
        let mut cursor = Cursor {
            data: self.data,
            pos: self.pos,
            bad: Bad::EndsInField,
        };
        match cursor.record() {
            Some(record) => {
                self.pos = cursor.pos;
                Some(Ok(record))
            }
            None => {
                self.done = true;
                Some(Err(RecordError {
                    index,
                    reason: cursor.bad.to_string(),
                }))
            }
        }
    }
}

/// What is wrong with a record; formatted only when a batch is refused, so the happy path
/// moves nothing bigger than a word.
#[derive(Clone, Copy, Debug)]
enum Bad {
    EndsInField,
    LongVarint(u32),
    WideVarint(i64),
    NegativeLength(&'static str, i64),
    PastRecord(&'static str, usize),
    RecordPastBatch { length: usize, left: usize },
    TooManyHeaders { count: u32, left: usize },
    NullHeaderKey,
    SizeMismatch { read: usize, length: usize },
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Bad::EndsInField => write!(f, "the record ends inside a field"),
            Bad::LongVarint(max) => write!(f, "varint longer than {max} bytes"),
            Bad::WideVarint(v) => write!(f, "varint {v} does not fit in 32 bits"),
            Bad::NegativeLength(what, len) => write!(f, "negative {what} {len}"),
            Bad::PastRecord(what, len) => write!(f, "{what} of {len} bytes runs past the record"),
            Bad::RecordPastBatch { length, left } => write!(
                f,
                "record length {length} runs past the batch ({left} bytes left)"
            ),
            Bad::TooManyHeaders { count, left } => write!(
                f,
                "{count} headers cannot fit in the record's last {left} bytes"
            ),
            Bad::NullHeaderKey => write!(f, "a header key is null"),
            Bad::SizeMismatch { read, length } => write!(
                f,
                "the record's fields take {read} bytes but its length says {length}"
            ),
        }
    }
}

/// A reader over one records section. Its methods return `None` on a problem and leave
/// what it was in `bad`, so the per-field results stay a word or two wide.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    bad: Bad,
}

impl<'a> Cursor<'a> {
    fn fail<T>(&mut self, bad: Bad) -> Option<T> {
        self.bad = bad;
        None
    }

    fn record(&mut self) -> Option<RecordView<'a>> {
        let length = self.varint()?;
        let Ok(length) = usize::try_from(length) else {
            return self.fail(Bad::NegativeLength("record length", length.into()));
        };
        let left = self.data.len() - self.pos;
        if length > left {
            return self.fail(Bad::RecordPastBatch { length, left });
        }
        let start = self.pos;
        let end = start + length;
        // Read inside the record only, so no field can reach into the next one.
        let outer = self.data;
        self.data = &outer[..end];
        let record = self.fields(start, end, length);
        self.data = outer;
        record
    }

    fn fields(&mut self, start: usize, end: usize, length: usize) -> Option<RecordView<'a>> {
        let attributes = self.byte()? as i8;
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        let key = self.bytes("key length")?;
        let value = self.bytes("value length")?;
        let header_count = self.varint()?;
        let Ok(header_count) = u32::try_from(header_count) else {
            return self.fail(Bad::NegativeLength("header count", header_count.into()));
        };
        // A header takes at least two bytes (two lengths).
        if header_count as usize * 2 > end - self.pos {
            let left = end - self.pos;
            return self.fail(Bad::TooManyHeaders {
                count: header_count,
                left,
            });
        }
        for _ in 0..header_count {
            if self.bytes("header key length")?.is_none() {
                return self.fail(Bad::NullHeaderKey);
            }
            self.bytes("header value length")?;
        }
        if self.pos != end {
            let read = self.pos - start;
            return self.fail(Bad::SizeMismatch { read, length });
        }
        Some(RecordView {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
        })
    }

    #[inline]
    fn byte(&mut self) -> Option<u8> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Some(b)
            }
            None => self.fail(Bad::EndsInField),
        }
    }

    /// A zigzag varint of at most `max_bytes` bytes. Most are one byte: that path is short.
    #[inline]
    fn zigzag(&mut self, max_bytes: u32) -> Option<i64> {
        let first = self.byte()?;
        if first < 0x80 {
            return Some(i64::from(first >> 1) ^ -i64::from(first & 1));
        }
        let mut raw = u64::from(first & 0x7f);
        for i in 1..max_bytes {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        self.fail(Bad::LongVarint(max_bytes))
    }

    /// A 32-bit zigzag varint (Kafka's `ByteUtils.readVarint`: at most 5 bytes).
    #[inline]
    fn varint(&mut self) -> Option<i32> {
        let v = self.zigzag(5)?;
        match i32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => self.fail(Bad::WideVarint(v)),
        }
    }

    #[inline]
    fn varlong(&mut self) -> Option<i64> {
        self.zigzag(10)
    }

    /// A varint length (-1 is null) and that many bytes: `Some(None)` for null.
    #[inline]
    fn bytes(&mut self, what: &'static str) -> Option<Option<&'a [u8]>> {
        let len = self.varint()?;
        if len == -1 {
            return Some(None);
        }
        let Ok(len) = usize::try_from(len) else {
            return self.fail(Bad::NegativeLength(what, len.into()));
        };
        match self.data.get(self.pos..self.pos + len) {
            Some(slice) => {
                self.pos += len;
                Some(Some(slice))
            }
            None => self.fail(Bad::PastRecord(what, len)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_storage::batch::testing::{build_batch_with, BatchSpec, TestRecord};
    use runnel_storage::batch::HEADER_LEN;

    fn section(records: Vec<TestRecord>) -> (Vec<u8>, i32) {
        let n = records.len() as i32;
        let batch = build_batch_with(&BatchSpec {
            records,
            ..Default::default()
        });
        (batch[HEADER_LEN..].to_vec(), n)
    }

    fn record(key: Option<&[u8]>, value: &[u8]) -> TestRecord {
        TestRecord {
            key: key.map(<[u8]>::to_vec),
            value: Some(value.to_vec()),
            timestamp_delta: 5,
            headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
        }
    }

    #[test]
    fn reads_every_field() {
        let (data, n) = section(vec![record(Some(b"k"), b"value"), record(None, b"")]);
        let all: Vec<_> = records(&data, n)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].key, Some(&b"k"[..]));
        assert_eq!(all[0].value, Some(&b"value"[..]));
        assert_eq!((all[0].offset_delta, all[0].timestamp_delta), (0, 5));
        assert_eq!(all[0].header_count, 2);
        assert_eq!((all[1].key, all[1].offset_delta), (None, 1));
    }

    #[test]
    fn a_lying_count_is_refused_before_reading() {
        let (data, _) = section(vec![record(Some(b"k"), b"v")]);
        let err = records(&data, i32::MAX).err().unwrap();
        assert!(err.reason.contains("cannot hold"), "{err}");
        assert!(records(&data, -1).is_err());
    }

    #[test]
    fn fewer_or_more_records_than_claimed() {
        let (data, _) = section(vec![record(Some(b"k"), b"v"), record(Some(b"k"), b"v")]);
        let too_many: Vec<_> = records(&data, 3).unwrap().collect();
        assert_eq!(too_many.last().unwrap().as_ref().unwrap_err().index, 2);
        let too_few: Vec<_> = records(&data, 1).unwrap().collect();
        assert_eq!(too_few.len(), 2);
        assert!(too_few[1]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("follow the last"));
    }

    #[test]
    fn a_record_length_that_disagrees_with_its_fields() {
        let (mut data, n) = section(vec![record(Some(b"k"), b"value")]);
        // The first byte is the record length varint (zigzag): make it one longer.
        data[0] += 2;
        data.push(0);
        let err = records(&data, n).unwrap().next().unwrap().unwrap_err();
        assert!(err.reason.contains("length says"), "{err}");
    }

    #[test]
    fn a_null_header_key_is_refused() {
        // length, attributes, ts delta, offset delta, key null, value null, 1 header with a
        // null key (-1) and a null value (-1).
        let body = [0u8, 0, 0, 1, 1, 2, 1, 1];
        let mut data = vec![(body.len() as u8) << 1];
        data.extend_from_slice(&body);
        let err = records(&data, 1).unwrap().next().unwrap().unwrap_err();
        assert!(err.reason.contains("header key is null"), "{err}");
    }

    proptest::proptest! {
        /// Whatever the bytes and the claimed count, reading never panics, never yields more
        /// than count + 1 items, and stops after the first error.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), count in -2i32..80) {
            if let Ok(it) = records(&data, count) {
                let mut items = 0;
                let mut errors = 0;
                for r in it {
                    items += 1;
                    errors += usize::from(r.is_err());
                }
                proptest::prop_assert!(items <= count as usize + 1);
                proptest::prop_assert!(errors <= 1);
            }
        }
    }
}
