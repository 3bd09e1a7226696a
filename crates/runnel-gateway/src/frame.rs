//! Kafka request framing: a 4-byte big-endian size, then the request (header + body).

use bytes::{Buf, Bytes, BytesMut};

/// Why a connection's byte stream cannot be framed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("negative frame size {0}")]
    Negative(i32),
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
}

/// The fixed start of every request header, read before anything is decoded so that bad
/// frames can be reported with the API and correlation id they claim.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawHeader {
    pub(crate) api_key: i16,
    pub(crate) api_version: i16,
    pub(crate) correlation_id: i32,
}

/// The size of the frame at the front of `buf` (without its 4-byte prefix), checked against
/// `max`; `None` until the prefix is all there.
pub(crate) fn frame_size(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(*prefix);
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if size < 8 {
        return Err(FrameError::TooShort(size));
    }
    Ok(Some(size))
}

/// Splits one complete frame off the front of `buf` if it is all there. A cheap length check
/// runs before anything is copied; partial frames stay in `buf` for the next read.
pub(crate) fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(size) = frame_size(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < 4 + size {
        // Reserve once so a large frame is read without repeated reallocations.
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Reads the API key, version and correlation id that start every request header.
pub(crate) fn raw_header(frame: &Bytes) -> RawHeader {
    let mut b = &frame[..8];
    RawHeader {
        api_key: b.get_i16(),
        api_version: b.get_i16(),
        correlation_id: b.get_i32(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waits_for_whole_frame() {
        let mut buf = BytesMut::from(&[0, 0, 0, 10, 0, 18, 0, 3][..]);
        assert!(take_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(&[0, 0, 0, 7, 0, 0]);
        let frame = take_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(frame.len(), 10);
        let h = raw_header(&frame);
        assert_eq!((h.api_key, h.api_version, h.correlation_id), (18, 3, 7));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversize_negative_and_short() {
        let mut buf = BytesMut::from(&1000i32.to_be_bytes()[..]);
        assert!(matches!(
            take_frame(&mut buf, 100),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            take_frame(&mut buf, 100),
            Err(FrameError::Negative(-1))
        ));
        let mut buf = BytesMut::from(&3i32.to_be_bytes()[..]);
        assert!(matches!(
            take_frame(&mut buf, 100),
            Err(FrameError::TooShort(3))
        ));
    }

    proptest! {
        /// Whatever bytes arrive, framing never panics, and frames come out exactly as sent.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(frame)) = take_frame(&mut buf, 32) {
                let _ = raw_header(&frame);
            }
        }

        #[test]
        fn frames_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 8..40), 1..5)) {
            let mut buf = BytesMut::new();
            for b in &bodies {
                buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
                buf.extend_from_slice(b);
            }
            for b in &bodies {
                let frame = take_frame(&mut buf, 1024).unwrap().unwrap();
                prop_assert_eq!(&frame[..], &b[..]);
            }
            prop_assert!(buf.is_empty());
        }
    }
}
