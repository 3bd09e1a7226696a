//! Bounded decoding: every request is walked against its message schema before the
//! `kafka-protocol` crate decodes it.
//!
//! Why: kafka-protocol 0.18 sizes its allocations from counts read off the wire
//! (`Vec::with_capacity(n)` for arrays, `vec![0; n]` for some byte fields), and a failed
//! allocation aborts the process. One 18-byte Metadata request whose topic array claims
//! 2,147,483,647 entries asked for 154 GB and killed the node. The fix belongs upstream (check
//! each count against the bytes left, as Kafka's generated Java code does); until then this
//! walker runs first and follows exactly the path the crate's decoder takes, field by field,
//! checking that
//!
//! - every array count, times the smallest encoding of one element, fits in the bytes left;
//! - every string and byte length fits in the bytes left;
//! - every tagged-field section's count fits in the bytes left, and a known tagged field's
//!   content is exactly as long as its declared size (the crate's decoder does not check
//!   that, so a lying size could otherwise move it off the walker's path).
//!
//! A frame that passes decodes into at most 48 times its own size in arrays and maps (see
//! [`Footprint`]); the test `decoded_ratio_is_bounded` computes the worst case from the
//! schemas (40 today: an element that encodes in 2 bytes and decodes into 80). A frame that fails is malformed, and the connection is closed as for any other
//! undecodable request.
//!
//! The schemas live in [`schema`]; the test `schemas_match_the_decoder` generates random valid
//! requests from them for every supported API and version and checks that kafka-protocol
//! decodes each one to the last byte and encodes it back identically, so a schema that drifts
//! from the decoder fails the build's tests.

mod schema;
#[cfg(test)]
mod tests;

use kafka_protocol::messages::ApiKey;

pub(crate) use schema::request_schema;

/// In-memory cost of one unknown tagged field kept by the decoder (a `BTreeMap<i32, Bytes>`
/// entry with its share of the node).
const TAGGED_FIELD_COST: usize = 64;

/// Versions `min..=max` of a field (Kafka's `"versions": "3+"` is `from(3)`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Versions {
    pub(crate) min: i16,
    pub(crate) max: i16,
}

impl Versions {
    fn contains(self, version: i16) -> bool {
        self.min <= version && version <= self.max
    }
}

/// A field's type, as far as the encoding is concerned.
#[derive(Debug)]
pub(crate) enum Ty {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    Uuid,
    /// `string` (nullable or not: the walker follows the same path either way and leaves
    /// rejecting a null where none is allowed to the decoder).
    Str,
    /// `bytes` and `records`.
    Bytes,
    Array(&'static Ty),
    Struct(&'static Struct),
}

/// A (possibly nested) struct of a message; the message body itself is one.
#[derive(Debug)]
pub(crate) struct Struct {
    /// The decoder's in-memory size of one value, for the decoded-size estimate.
    pub(crate) size: usize,
    pub(crate) fields: &'static [Field],
}

#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) ty: Ty,
    pub(crate) versions: Versions,
    /// The tag of a tagged field: encoded in the struct's tagged-field section, in flexible
    /// versions only.
    pub(crate) tag: Option<u32>,
}

/// Why a request frame was refused before decoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BoundsError {
    #[error("truncated: {needed} bytes needed at byte {at}, {left} left")]
    Truncated {
        at: usize,
        needed: usize,
        left: usize,
    },
    #[error("{field}: {count} elements cannot fit in the {left} bytes left (at byte {at})")]
    CountTooLarge {
        field: &'static str,
        count: u64,
        left: usize,
        at: usize,
    },
    #[error("{field}: negative length {len} at byte {at}")]
    NegativeLength {
        field: &'static str,
        len: i64,
        at: usize,
    },
    #[error(
        "tagged field {tag} ({field}) declares {declared} bytes but its content takes {actual}"
    )]
    TagSizeMismatch {
        tag: u32,
        field: &'static str,
        declared: usize,
        actual: usize,
    },
    #[error("{field}: string at byte {at} is not UTF-8")]
    NotUtf8 { field: &'static str, at: usize },
    #[error("no schema for {0:?} v{1}")]
    NoSchema(ApiKey, i16),
}

/// What decoding a checked frame will cost, beyond the frame itself (strings and byte fields
/// are zero-copy slices of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Upper estimate of the bytes the decoder allocates for arrays and tagged-field maps.
    pub(crate) decoded_bytes: usize,
    /// Bytes of the frame the request takes; the decoder ignores any that follow, as Kafka
    /// does.
    pub(crate) consumed: usize,
}

/// Walks a whole request frame (header and body) of `api_key` at `version`, as the crate's
/// decoder will read it.
pub(crate) fn check_request(
    api_key: ApiKey,
    version: i16,
    frame: &[u8],
) -> Result<Footprint, BoundsError> {
    let body = match request_schema(api_key) {
        Some((versions, body)) if versions.contains(version) => body,
        _ => return Err(BoundsError::NoSchema(api_key, version)),
    };
    let flexible = api_key.request_header_version(version) >= 2;
    let mut walk = Walk {
        buf: frame,
        pos: 0,
        version,
        flexible,
        decoded: 0,
    };
    walk.header()?;
    walk.walk_struct(body, "request")?;
    Ok(Footprint {
        decoded_bytes: walk.decoded,
        consumed: walk.pos,
    })
}

struct Walk<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
    decoded: usize,
}

impl Walk<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn skip(&mut self, n: usize) -> Result<(), BoundsError> {
        if n > self.left() {
            return Err(BoundsError::Truncated {
                at: self.pos,
                needed: n,
                left: self.left(),
            });
        }
        self.pos += n;
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], BoundsError> {
        let start = self.pos;
        self.skip(N)?;
        Ok(self.buf[start..start + N].try_into().expect("N bytes"))
    }

    fn int16(&mut self) -> Result<i16, BoundsError> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn int32(&mut self) -> Result<i32, BoundsError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    /// Kafka's unsigned varint as kafka-protocol reads it: at most 5 bytes, the fifth ending
    /// the number whatever its continuation bit says, bits past 32 dropped.
    fn uvarint(&mut self) -> Result<u32, BoundsError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let [b] = self.take::<1>()?;
            value |= u32::from(b & 0x7f).wrapping_shl(i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// Request header v1/v2: api key, version, correlation id, a nullable non-compact client
    /// id, and (v2) a tagged-field section with no known tags.
    fn header(&mut self) -> Result<(), BoundsError> {
        self.skip(8)?;
        let len = self.int16()?;
        if len >= 0 {
            let start = self.pos;
            self.skip(len as usize)?;
            if std::str::from_utf8(&self.buf[start..self.pos]).is_err() {
                return Err(BoundsError::NotUtf8 {
                    field: "client_id",
                    at: start,
                });
            }
        } else if len < -1 {
            return Err(BoundsError::NegativeLength {
                field: "client_id",
                len: len.into(),
                at: self.pos,
            });
        }
        if self.flexible {
            self.tagged_fields(&[], "request header")?;
        }
        Ok(())
    }

    fn walk_struct(&mut self, s: &Struct, name: &'static str) -> Result<(), BoundsError> {
        for f in s.fields {
            if f.tag.is_none() && f.versions.contains(self.version) {
                self.walk_ty(&f.ty, f.name)?;
            }
        }
        if self.flexible {
            self.tagged_fields(s.fields, name)?;
        }
        Ok(())
    }

    fn tagged_fields(&mut self, fields: &[Field], name: &'static str) -> Result<(), BoundsError> {
        let at = self.pos;
        let count = self.uvarint()?;
        // Each tagged field takes at least two bytes: its tag and its size.
        if u64::from(count) * 2 > self.left() as u64 {
            return Err(BoundsError::CountTooLarge {
                field: name,
                count: count.into(),
                left: self.left(),
                at,
            });
        }
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            if size > self.left() {
                return Err(BoundsError::Truncated {
                    at: self.pos,
                    needed: size,
                    left: self.left(),
                });
            }
            let known = fields
                .iter()
                .find(|f| f.tag == Some(tag) && f.versions.contains(self.version));
            match known {
                Some(f) => {
                    let start = self.pos;
                    self.walk_ty(&f.ty, f.name)?;
                    if self.pos - start != size {
                        return Err(BoundsError::TagSizeMismatch {
                            tag,
                            field: f.name,
                            declared: size,
                            actual: self.pos - start,
                        });
                    }
                }
                None => {
                    self.pos += size;
                    self.decoded += TAGGED_FIELD_COST;
                }
            }
        }
        Ok(())
    }

    /// Reads a length or count prefix: a compact (varint, 0 = null) one in flexible versions,
    /// else a signed one of `width` bytes (-1 = null). `None` is null.
    fn length(&mut self, width: usize, field: &'static str) -> Result<Option<u64>, BoundsError> {
        if self.flexible {
            return Ok(match self.uvarint()? {
                0 => None,
                n => Some(u64::from(n - 1)),
            });
        }
        let at = self.pos;
        let n = if width == 2 {
            i64::from(self.int16()?)
        } else {
            i64::from(self.int32()?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(BoundsError::NegativeLength { field, len: n, at }),
            n => Ok(Some(n as u64)),
        }
    }

    fn walk_ty(&mut self, ty: &Ty, field: &'static str) -> Result<(), BoundsError> {
        match ty {
            Ty::Bool | Ty::Int8 => self.skip(1),
            Ty::Int16 => self.skip(2),
            Ty::Int32 => self.skip(4),
            Ty::Int64 => self.skip(8),
            Ty::Uuid => self.skip(16),
            Ty::Str | Ty::Bytes => {
                let width = if matches!(ty, Ty::Str) { 2 } else { 4 };
                let at = self.pos;
                if let Some(len) = self.length(width, field)? {
                    if len > self.left() as u64 {
                        return Err(BoundsError::Truncated {
                            at,
                            needed: len as usize,
                            left: self.left(),
                        });
                    }
                    let start = self.pos;
                    self.pos += len as usize;
                    if matches!(ty, Ty::Str)
                        && std::str::from_utf8(&self.buf[start..self.pos]).is_err()
                    {
                        return Err(BoundsError::NotUtf8 { field, at: start });
                    }
                }
                Ok(())
            }
            Ty::Array(elem) => {
                let at = self.pos;
                let Some(count) = self.length(4, field)? else {
                    return Ok(());
                };
                // An element encodes in at least one byte even when its schema could be empty,
                // so no count can exceed the bytes left.
                let min = min_size(elem, self.version, self.flexible).max(1) as u64;
                if count.saturating_mul(min) > self.left() as u64 {
                    return Err(BoundsError::CountTooLarge {
                        field,
                        count,
                        left: self.left(),
                        at,
                    });
                }
                self.decoded += count as usize * mem_size(elem);
                for _ in 0..count {
                    self.walk_ty(elem, field)?;
                }
                Ok(())
            }
            Ty::Struct(s) => self.walk_struct(s, field),
        }
    }
}

/// The fewest bytes a value of `ty` encodes in at `version`.
fn min_size(ty: &Ty, version: i16, flexible: bool) -> usize {
    match ty {
        Ty::Bool | Ty::Int8 => 1,
        Ty::Int16 => 2,
        Ty::Int32 => 4,
        Ty::Int64 => 8,
        Ty::Uuid => 16,
        // A compact length is one varint byte; otherwise a 2-byte (string) or 4-byte prefix.
        Ty::Str if flexible => 1,
        Ty::Str => 2,
        Ty::Bytes | Ty::Array(_) if flexible => 1,
        Ty::Bytes | Ty::Array(_) => 4,
        Ty::Struct(s) => {
            let fields: usize = s
                .fields
                .iter()
                .filter(|f| f.tag.is_none() && f.versions.contains(version))
                .map(|f| min_size(&f.ty, version, flexible))
                .sum();
            fields + usize::from(flexible)
        }
    }
}

/// The decoder's in-memory size of one array element of type `ty`.
fn mem_size(ty: &Ty) -> usize {
    use std::mem::size_of;
    match ty {
        Ty::Bool | Ty::Int8 => 1,
        Ty::Int16 => 2,
        Ty::Int32 => 4,
        Ty::Int64 => 8,
        Ty::Uuid => 16,
        Ty::Str => size_of::<Option<kafka_protocol::protocol::StrBytes>>(),
        Ty::Bytes => size_of::<Option<bytes::Bytes>>(),
        Ty::Array(_) => size_of::<Option<Vec<u8>>>(),
        Ty::Struct(s) => s.size,
    }
}
