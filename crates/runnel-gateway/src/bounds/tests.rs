use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::handlers::supported_apis;

/// Worst-case bytes of decoded structures per byte of request frame for a frame that passes
/// [`check_request`] (the figure `bounds` and docs/robustness.md state).
const MAX_DECODED_RATIO: usize = 48;

/// Generates random valid encodings of a schema: what a well-behaved client could send.
struct Gen {
    rng: StdRng,
    version: i16,
    flexible: bool,
    /// Set when a known tagged field was written: kafka-protocol leaves a tagged field out when
    /// it holds its default, so such a frame may not re-encode byte for byte.
    wrote_known_tag: bool,
}

impl Gen {
    fn uvarint(out: &mut BytesMut, mut v: u32) {
        while v >= 0x80 {
            out.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    }

    fn length(&self, out: &mut BytesMut, len: usize, width: usize) {
        if self.flexible {
            Self::uvarint(out, len as u32 + 1);
        } else if width == 2 {
            out.put_i16(len as i16);
        } else {
            out.put_i32(len as i32);
        }
    }

    fn header(&mut self, out: &mut BytesMut, key: ApiKey) {
        out.put_i16(key as i16);
        out.put_i16(self.version);
        out.put_i32(self.rng.random());
        out.put_i16(3);
        out.put_slice(b"gen");
        if self.flexible {
            out.put_u8(0);
        }
    }

    fn value(&mut self, out: &mut BytesMut, ty: &Ty, depth: usize) {
        match ty {
            Ty::Bool => out.put_u8(self.rng.random_range(0..2)),
            Ty::Int8 => out.put_i8(self.rng.random_range(0..3)),
            Ty::Int16 => out.put_i16(self.rng.random_range(-1..3)),
            Ty::Int32 => out.put_i32(self.rng.random_range(-1..100)),
            Ty::Int64 => out.put_i64(self.rng.random_range(-1..1000)),
            Ty::Uuid => out.put_u128(self.rng.random()),
            Ty::Str => {
                let len = self.rng.random_range(0..8);
                self.length(out, len, 2);
                for _ in 0..len {
                    out.put_u8(self.rng.random_range(b'a'..=b'z'));
                }
            }
            Ty::Bytes => {
                let len = self.rng.random_range(0..8);
                self.length(out, len, 4);
                for _ in 0..len {
                    out.put_u8(self.rng.random());
                }
            }
            Ty::Array(elem) => {
                let count = if depth > 3 {
                    0
                } else {
                    self.rng.random_range(0..4)
                };
                self.length(out, count, 4);
                for _ in 0..count {
                    self.value(out, elem, depth + 1);
                }
            }
            Ty::Struct(s) => self.structure(out, s, depth + 1),
        }
    }

    fn structure(&mut self, out: &mut BytesMut, s: &Struct, depth: usize) {
        for f in s.fields {
            if f.tag.is_none() && f.versions.contains(self.version) {
                self.value(out, &f.ty, depth);
            }
        }
        if !self.flexible {
            return;
        }
        // Known tagged fields (in tag order) half of the time, then sometimes an unknown one
        // with a tag above every known one, which is where the encoder writes it back.
        let mut fields: Vec<(u32, BytesMut)> = Vec::new();
        if self.rng.random_bool(0.5) {
            for f in s.fields {
                if let Some(tag) = f.tag.filter(|_| f.versions.contains(self.version)) {
                    let mut content = BytesMut::new();
                    self.value(&mut content, &f.ty, depth);
                    fields.push((tag, content));
                    self.wrote_known_tag = true;
                }
            }
            fields.sort_by_key(|(tag, _)| *tag);
        }
        if self.rng.random_bool(0.3) {
            let mut content = BytesMut::new();
            content.put_slice(&[7; 3]);
            fields.push((1000, content));
        }
        Self::uvarint(out, fields.len() as u32);
        for (tag, content) in fields {
            Self::uvarint(out, tag);
            Self::uvarint(out, content.len() as u32);
            out.put_slice(&content);
        }
    }
}

fn generate(key: ApiKey, version: i16, seed: u64) -> (Bytes, bool) {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        version,
        flexible: key.request_header_version(version) >= 2,
        wrote_known_tag: false,
    };
    let mut out = BytesMut::new();
    g.header(&mut out, key);
    g.structure(&mut out, request_schema(key).expect("schema").1, 0);
    (out.freeze(), g.wrote_known_tag)
}

/// Decodes a whole frame with kafka-protocol: the header, the body, and how many bytes the
/// two took.
fn decode(key: ApiKey, version: i16, frame: &Bytes) -> anyhow::Result<(RequestKind, usize)> {
    let mut buf = frame.clone();
    decode_request_header_from_buffer(&mut buf)?;
    let body = RequestKind::decode(key, &mut buf, version)?;
    Ok((body, frame.len() - buf.len()))
}

fn every_version() -> impl Iterator<Item = (ApiKey, i16)> {
    supported_apis().flat_map(|(key, range)| (range.min..=range.max).map(move |v| (key, v)))
}

/// The schemas and the `apis!` list agree: every served API has a schema written for exactly
/// the versions served, no other API has one, and no field starts or stops being present at a
/// version outside that range (which would mean a version the schema describes but the node
/// does not serve, or one it serves that the schema was not reviewed for).
#[test]
fn schemas_cover_exactly_the_served_versions() {
    fn fields_within(s: &Struct, min: i16, max: i16, key: ApiKey) {
        for f in s.fields {
            let Versions { min: from, max: to } = f.versions;
            assert!(
                from == 0 || (min < from && from <= max),
                "{key:?} field {}: present from v{from}, outside v{min}..=v{max}",
                f.name
            );
            assert!(
                to == i16::MAX || (min <= to && to < max),
                "{key:?} field {}: present up to v{to}, outside v{min}..=v{max}",
                f.name
            );
            let mut ty = &f.ty;
            while let Ty::Array(elem) = ty {
                ty = elem;
            }
            if let Ty::Struct(inner) = ty {
                fields_within(inner, min, max, key);
            }
        }
    }
    for key in ApiKey::iter() {
        let served = supported_apis()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| (r.min, r.max));
        let schema = request_schema(key);
        let covered = schema.map(|(v, _)| (v.min, v.max));
        assert_eq!(covered, served, "{key:?}: schema versions, served versions");
        if let Some((versions, body)) = schema {
            fields_within(body, versions.min, versions.max, key);
        }
    }
}

/// The schemas are exactly what the decoder reads: a random valid request generated from a
/// schema decodes to its last byte, passes the walker with the same length, and (unless it
/// carries known tagged fields) encodes back to the same bytes.
#[test]
fn schemas_match_the_decoder() {
    for (key, version) in every_version() {
        for seed in 0..200 {
            let (frame, known_tags) = generate(key, version, seed);
            let what = format!("{key:?} v{version} seed {seed}");
            let (body, consumed) =
                decode(key, version, &frame).unwrap_or_else(|e| panic!("{what}: decode: {e}"));
            assert_eq!(consumed, frame.len(), "{what}: decoder left bytes");
            let footprint = check_request(key, version, &frame)
                .unwrap_or_else(|e| panic!("{what}: walker refused a valid frame: {e}"));
            assert_eq!(footprint.consumed, frame.len(), "{what}: walker length");
            if !known_tags {
                let mut header_and_body = BytesMut::new();
                let mut buf = frame.clone();
                let header = decode_request_header_from_buffer(&mut buf).unwrap();
                header
                    .encode(&mut header_and_body, key.request_header_version(version))
                    .unwrap();
                body.encode(&mut header_and_body, version).unwrap();
                assert_eq!(
                    &header_and_body[..],
                    &frame[..],
                    "{what}: re-encoding differs"
                );
            }
        }
    }
}

/// Every strict prefix of a valid request is refused: nothing is taken on trust at the end of
/// a frame.
#[test]
fn truncated_requests_are_refused() {
    for (key, version) in every_version() {
        for seed in 0..5 {
            let (frame, _) = generate(key, version, seed);
            for cut in 0..frame.len() {
                assert!(
                    check_request(key, version, &frame[..cut]).is_err(),
                    "{key:?} v{version} seed {seed}: prefix of {cut} of {} bytes accepted",
                    frame.len()
                );
            }
        }
    }
}

/// Whatever a mutated frame holds, when the walker accepts it the decoder reads it along the
/// same path: it succeeds and stops at the same byte, so every count it sized an allocation
/// from was checked.
#[test]
fn walker_and_decoder_agree_on_mutated_frames() {
    let mut rng = StdRng::seed_from_u64(7);
    for (key, version) in every_version() {
        for seed in 0..40 {
            let (frame, _) = generate(key, version, seed);
            let mut bytes = frame.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = match rng.random_range(0..4) {
                    0 => 0xff,
                    1 => 0x00,
                    2 => 0x7f,
                    _ => rng.random(),
                };
            }
            let mutated = Bytes::from(bytes);
            if let Ok(footprint) = check_request(key, version, &mutated) {
                let what = format!("{key:?} v{version} seed {seed}: {mutated:02x?}");
                // The header's first four bytes choose the schema; a mutation there makes it
                // another request, which the gateway reads off the frame itself.
                if mutated[..4] != frame[..4] {
                    continue;
                }
                match decode(key, version, &mutated) {
                    Ok((_, consumed)) => assert_eq!(consumed, footprint.consumed, "{what}"),
                    // The walker leaves nullability to the decoder.
                    Err(e) if format!("{e:#}").contains("is negative (-1)") => {}
                    Err(e) => panic!("{what}: walker accepted what the decoder refuses: {e}"),
                }
            }
        }
    }
}

/// The 18-byte Metadata v1 request of issue 13, whose topic array claims 2^31-1 entries.
#[test]
fn lying_array_count_is_refused() {
    let mut frame = BytesMut::new();
    frame.put_i16(3);
    frame.put_i16(1);
    frame.put_i32(1);
    frame.put_i16(1);
    frame.put_u8(b'x');
    frame.put_i32(i32::MAX);
    let err = check_request(ApiKey::Metadata, 1, &frame).unwrap_err();
    assert!(
        matches!(err, BoundsError::CountTooLarge { field: "topics", count, .. } if count == i32::MAX as u64),
        "{err}"
    );
}

/// The worst ratio of decoded bytes to frame bytes, over every array and tagged-field section
/// of every supported request, is within [`MAX_DECODED_RATIO`].
#[test]
fn decoded_ratio_is_bounded() {
    fn worst(ty: &Ty, version: i16, flexible: bool, seen: &mut f64) {
        match ty {
            Ty::Array(elem) => {
                let min = min_size(elem, version, flexible).max(1);
                *seen = seen.max(mem_size(elem) as f64 / min as f64);
                worst(elem, version, flexible, seen);
            }
            Ty::Struct(s) => {
                if flexible {
                    *seen = seen.max(TAGGED_FIELD_COST as f64 / 2.0);
                }
                for f in s.fields.iter().filter(|f| f.versions.contains(version)) {
                    worst(&f.ty, version, flexible, seen);
                }
            }
            _ => {}
        }
    }
    let mut overall = 0.0f64;
    for (key, version) in every_version() {
        let flexible = key.request_header_version(version) >= 2;
        let mut seen = 0.0;
        worst(
            &Ty::Struct(request_schema(key).unwrap().1),
            version,
            flexible,
            &mut seen,
        );
        assert!(
            seen <= MAX_DECODED_RATIO as f64,
            "{key:?} v{version}: an element decodes into {seen:.1}x its encoding"
        );
        overall = overall.max(seen);
    }
    println!("worst decoded/encoded ratio over all requests: {overall:.1}");
}

/// A walk costs no more than the frame allows: the estimate for the largest array a frame can
/// hold stays within the ratio.
#[test]
fn footprint_of_a_full_array_stays_within_the_ratio() {
    let topics = 10_000;
    let mut frame = BytesMut::new();
    frame.put_i16(3);
    frame.put_i16(1);
    frame.put_i32(1);
    frame.put_i16(-1);
    frame.put_i32(topics);
    for _ in 0..topics {
        frame.put_i16(0);
    }
    let footprint = check_request(ApiKey::Metadata, 1, &frame).unwrap();
    assert!(footprint.decoded_bytes <= MAX_DECODED_RATIO * frame.len());
    assert!(footprint.decoded_bytes >= topics as usize * 2);
}

/// Frames captured from real clients (`tests/fixtures`) pass the walker whole.
#[test]
fn captured_client_frames_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "bin") {
            continue;
        }
        let frame = std::fs::read(&path).unwrap();
        let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let footprint = check_request(key, version, &frame)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(footprint.consumed, frame.len(), "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 15, "found only {checked} fixtures");
}
