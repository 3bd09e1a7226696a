//! Request frames captured from real clients (librdkafka 2.0 via kcat, librdkafka 2.12 via
//! confluent-kafka, kafka-python) decode with the versions Runnel advertises and re-encode to
//! the same bytes, and their record batches pass the broker's header and CRC checks.
//! `tests/fixtures/capture.py` records new fixtures.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};

fn fixtures() -> Vec<(String, Bytes)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Bytes)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            (name, Bytes::from(std::fs::read(e.path()).expect("fixture")))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn captured_client_frames_round_trip() {
    let all = fixtures();
    assert!(
        all.len() >= 15,
        "expected the captured fixtures, found {}",
        all.len()
    );
    for (name, frame) in all {
        let mut buf = frame.clone();
        let header = decode_request_header_from_buffer(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: header: {e}"));
        let key = ApiKey::try_from(header.request_api_key).expect("known key");
        let version = header.request_api_version;
        let range = runnel_gateway::supported_apis()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("{name}: {key:?} is not advertised"));
        assert!(
            range.min <= version && version <= range.max,
            "{name}: v{version} outside advertised {range}"
        );
        let body = RequestKind::decode(key, &mut buf, version)
            .unwrap_or_else(|e| panic!("{name}: body: {e}"));
        assert!(buf.is_empty(), "{name}: {} bytes left undecoded", buf.len());

        let mut out = BytesMut::new();
        header
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        assert_eq!(&out[..], &frame[..], "{name}: re-encoding differs");

        if let RequestKind::Produce(produce) = body {
            for topic in produce.topic_data {
                for partition in topic.partition_data {
                    let records = partition.records.expect("records");
                    let batches = runnel_broker::records::validate_batches(&records)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert!(!batches.is_empty());
                }
            }
        }
    }
}
