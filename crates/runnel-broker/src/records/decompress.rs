//! Decompression of a batch's records section with a hard cap on the output, and the
//! compression the broker does itself (the cleaner recompressing a rewritten batch).
//!
//! kafka-protocol's decompressors grow their output until the input ends, so a 1 KiB gzip
//! stream of zeros can become gigabytes, and its snappy decoder allocates whatever length a
//! block claims. These read at most `limit` bytes of output (and a zstd window of at most
//! [`ZSTD_WINDOW_LOG_MAX`]) and fail past it, whatever the input claims. CPU-bound: call them
//! from a blocking thread, never under a partition lock.

use std::borrow::Cow;
use std::io::Read;

/// Largest zstd window a batch may ask for (2^24 = 16 MiB). Producers use far less (level 3,
/// librdkafka's and Java's default, picks 2^21 or below for batch-sized input); without a
/// cap, a frame header alone could make the decoder reserve 2^31 bytes.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// The xerial framing Kafka's Java client and librdkafka put around snappy blocks.
const SNAPPY_XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const SNAPPY_XERIAL_HEADER_LEN: usize = 16;

/// Why a records section could not be decompressed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot decompress {codec} records: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
}

/// The records of a batch compressed with `codec` (the batch attributes' low three bits),
/// decompressed into at most `limit` bytes. Uncompressed records are borrowed as they are.
pub fn decompress(codec: i16, data: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, DecompressError> {
    let out = match codec {
        0 => return Ok(Cow::Borrowed(data)),
        1 => read_capped("gzip", flate2::read::MultiGzDecoder::new(data), limit)?,
        2 => snappy(data, limit)?,
        3 => {
            let decoder = lz4::Decoder::new(data).map_err(|e| corrupt("lz4", e))?;
            read_capped("lz4", decoder, limit)?
        }
        4 => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", e))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt("zstd", e))?;
            read_capped("zstd", decoder, limit)?
        }
        c => return Err(DecompressError::UnknownCodec(c)),
    };
    Ok(Cow::Owned(out))
}

/// `raw` records compressed with `codec` (the batch attributes' low three bits), with
/// kafka-protocol's compressors: only for records the broker itself encodes.
pub fn compress(codec: i16, raw: &[u8]) -> Result<Vec<u8>, String> {
    use kafka_protocol::compression::{self as kp, Compressor};
    let mut out = bytes::BytesMut::new();
    let fill = |tmp: &mut bytes::BytesMut| {
        tmp.extend_from_slice(raw);
        Ok(())
    };
    let r = match codec {
        0 => return Ok(raw.to_vec()),
        1 => kp::Gzip::compress(&mut out, fill),
        2 => kp::Snappy::compress(&mut out, fill),
        3 => kp::Lz4::compress(&mut out, fill),
        4 => kp::Zstd::compress(&mut out, fill),
        c => return Err(format!("unknown compression codec {c}")),
    };
    r.map_err(|e| e.to_string())?;
    Ok(out.to_vec())
}

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        reason: e.to_string(),
    }
}

/// Reads `reader` to its end, failing as soon as it yields more than `limit` bytes.
fn read_capped(
    codec: &'static str,
    reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Snappy as Kafka clients write it: xerial framing (a 16-byte header, then blocks each
/// prefixed with a 4-byte length), or one raw block when the header is absent (as Java's
/// `SnappyInputStream` accepts). Each block's claimed output length is checked against what
/// is left of `limit` before anything is allocated for it.
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    if !data.starts_with(SNAPPY_XERIAL_MAGIC) {
        snappy_block(data, &mut out, limit)?;
        return Ok(out);
    }
    let mut rest = data
        .get(SNAPPY_XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt("snappy", "truncated xerial header"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("snappy", "truncated block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail
            .get(..len)
            .ok_or_else(|| corrupt("snappy", "block runs past the records"))?;
        snappy_block(block, &mut out, limit)?;
        rest = &tail[len..];
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecompressError> {
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
    if len > limit - out.len() {
        return Err(DecompressError::TooLarge { limit });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", e))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(codec_id: i16, raw: &[u8]) -> Vec<u8> {
        compress(codec_id, raw).unwrap()
    }

    #[test]
    fn round_trips_every_codec_within_the_limit() {
        let raw: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for c in 1..=4 {
            let packed = packed(c, &raw);
            assert_eq!(
                &*decompress(c, &packed, raw.len()).unwrap(),
                &raw[..],
                "codec {c}"
            );
            assert_eq!(
                decompress(c, &packed, raw.len() - 1).unwrap_err(),
                DecompressError::TooLarge {
                    limit: raw.len() - 1
                },
                "codec {c}"
            );
        }
        assert!(matches!(decompress(0, &raw, 0).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        // 64 MiB of zeros in each codec: every one is refused at 1 MiB.
        let zeros = vec![0u8; 64 << 20];
        for c in 1..=4 {
            let packed = packed(c, &zeros);
            assert!(packed.len() < 4 << 20, "codec {c}: {} bytes", packed.len());
            assert_eq!(
                decompress(c, &packed, 1 << 20).unwrap_err(),
                DecompressError::TooLarge { limit: 1 << 20 },
                "codec {c}"
            );
        }
    }

    #[test]
    fn snappy_length_claims_are_checked_before_allocating() {
        // A raw block claiming 4 GiB - 1 (varint ff ff ff ff 0f) with no data behind it.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(
            decompress(2, &claim, 1 << 20).unwrap_err(),
            DecompressError::TooLarge { limit: 1 << 20 }
        );
        // The same inside xerial framing, after a valid first block.
        let mut framed = packed(2, b"hello");
        framed.extend_from_slice(&(claim.len() as u32).to_be_bytes());
        framed.extend_from_slice(&claim);
        assert_eq!(
            decompress(2, &framed, 1 << 20).unwrap_err(),
            DecompressError::TooLarge { limit: 1 << 20 }
        );
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for c in 1..=4 {
            for garbage in [&b""[..], b"\x00", b"\x82SNAPPY\x00\x00", &[0xff; 64]] {
                let _ = decompress(c, garbage, 1 << 20);
            }
        }
        assert_eq!(
            decompress(7, b"", 10).unwrap_err(),
            DecompressError::UnknownCodec(7)
        );
    }
}
