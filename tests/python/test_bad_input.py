"""Malformed and invalid requests: the node answers with the right error or closes the
connection, and keeps serving fresh clients afterwards."""

import random

from confluent_kafka import KafkaError

import kafkawire as kw
import util

UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
UNKNOWN_TOPIC_OR_PARTITION = 3


def still_serves(node):
    assert node.alive(), f"node died (exit code {node.proc.returncode})"
    # A raw ApiVersions v0 round trip on a fresh connection ...
    resp = kw.parse_api_versions_v0(kw.roundtrip(node.bootstrap, kw.api_versions_request(0, 4242)))
    assert (resp.correlation_id, resp.error_code) == (4242, 0)
    # ... and Metadata through librdkafka.
    util.metadata_ok(node.bootstrap)


def test_random_garbage_bytes(node):
    garbage = random.Random(64).randbytes(64)
    with kw.connect(node.bootstrap) as s:
        s.sendall(garbage)
        kw.wait_closed(s, timeout=1.0)  # the node may close or wait for more; either is fine
    still_serves(node)


def test_garbage_frame_with_valid_length(node):
    body = bytearray(random.Random(65).randbytes(60))
    body[0:2] = b"\x7f\x00"  # api key 32512: unknown
    with kw.connect(node.bootstrap) as s:
        s.sendall(kw.i32(len(body)) + bytes(body))
        closed, data = kw.wait_closed(s, timeout=10)
    assert closed, f"connection still open 10 s after a garbage frame (got {data!r})"
    still_serves(node)


def test_truncated_frame_then_close(node):
    with kw.connect(node.bootstrap) as s:
        s.sendall(kw.i32(100) + b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00")
    still_serves(node)


def test_length_prefix_over_socket_request_max_bytes(node_factory):
    node = node_factory(extra_config=["socket.request.max.bytes=1048576"])
    with kw.connect(node.bootstrap) as s:
        s.sendall(kw.i32(10_000_000) + b"\x00" * 100)
        closed, data = kw.wait_closed(s, timeout=10)
    assert closed, "node kept the connection open after a 10 MB length prefix"
    assert data == b"", f"expected no response, got {data!r}"
    still_serves(node)


def test_unknown_api_key_closes_connection(node):
    req = kw.frame(kw.request_header_v1(9999, 0, 77) + b"\x00" * 8)
    with kw.connect(node.bootstrap) as s:
        s.sendall(req)
        closed, data = kw.wait_closed(s, timeout=10)
    assert closed, f"connection still open 10 s after an unknown api key (got {data!r})"
    still_serves(node)


def test_api_versions_unsupported_version_answers_v0_with_error_35(node):
    with kw.connect(node.bootstrap) as s:
        s.sendall(kw.api_versions_request(99, 31337))
        payload = kw.read_response(s)
    resp = kw.parse_api_versions_v0(payload)
    assert resp.correlation_id == 31337
    assert resp.error_code == UNSUPPORTED_VERSION
    assert resp.trailing == 0, f"{resp.trailing} bytes after the ApiVersions v0 fields"
    for key in (0, 1, 2, 3, 18, 19, 20, 32, 33, 37, 44, 60):  # Produce .. DescribeCluster
        assert key in resp.apis, f"api key {key} missing from {sorted(resp.apis)}"
    lo, hi = resp.apis[18]
    assert lo == 0 and hi >= 3, f"ApiVersions versions {lo}..{hi}"
    still_serves(node)


def produce_raw(node, topic, partition, batch, corr=5):
    corr_back, results = kw.parse_produce_v3_response(
        kw.roundtrip(node.bootstrap, kw.produce_v3_request(corr, topic, partition, batch))
    )
    assert corr_back == corr
    assert [(r.topic, r.partition) for r in results] == [(topic, partition)]
    return results[0]


def test_produce_with_corrupt_crc_is_rejected(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    good = kw.record_batch([kw.Record(b"k", f"v{i}".encode()) for i in range(3)])
    # Control: the same hand-built batch with a correct CRC is accepted.
    r = produce_raw(node, topic, 0, good, corr=1)
    assert (r.error_code, r.base_offset) == (0, 0)

    r = produce_raw(node, topic, 0, kw.flip_crc_byte(good), corr=2)
    assert r.error_code == CORRUPT_MESSAGE

    # Nothing of the corrupt batch was appended: the next good batch lands at offset 3.
    r = produce_raw(node, topic, 0, good, corr=3)
    assert (r.error_code, r.base_offset) == (0, 3)
    got = util.consume(node.bootstrap, topic, partitions=[0], expected=6)
    assert [(m.offset, m.value) for m in got] == [(i, f"v{i % 3}".encode()) for i in range(6)]
    still_serves(node)


def test_message_larger_than_message_max_bytes(node_factory, topic):
    node = node_factory(extra_config=["message.max.bytes=1000"])
    util.create_topic(node.bootstrap, topic, 1)
    big = random.Random(2000).randbytes(2000)

    # Through librdkafka: the broker's error surfaces in the delivery report.
    p = util.producer(node.bootstrap, message_max_bytes=1_000_000, message_timeout_ms=15000, linger_ms=0)
    delivered, errors = util.produce(p, topic, [(b"big", big)], partition=0)
    assert delivered == []
    assert len(errors) == 1
    assert errors[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, str(errors[0][0])

    # By hand: the same answer, error code 10, on the partition.
    r = produce_raw(node, topic, 0, kw.record_batch([kw.Record(b"big", big)]))
    assert r.error_code == MESSAGE_TOO_LARGE

    # A small record still goes through, at offset 0 (nothing of the rejected ones was kept).
    ok = util.produce_ok(node.bootstrap, topic, [(b"small", b"x" * 100)], partition=0)
    assert [d.offset for d in ok] == [0]
    still_serves(node)


def test_produce_to_missing_partition(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    r = produce_raw(node, topic, 7, kw.record_batch([kw.Record(b"k", b"v")]))
    assert r.error_code == UNKNOWN_TOPIC_OR_PARTITION
    still_serves(node)


def test_failed_acks0_produce_closes_the_connection(node, topic):
    """acks=0 gets no response, so Kafka closes the connection when such a produce fails: the
    client's only signal to refresh metadata. A successful acks=0 produce keeps it open."""
    good = kw.record_batch([kw.Record(key=None, value=b"ok")])
    with kw.connect(node.bootstrap) as s:
        s.sendall(kw.produce_v3_request(1, topic, 0, good, acks=0))
        # Still open and in order: the next request on the same connection is answered.
        s.sendall(kw.api_versions_request(0, 2))
        resp = kw.parse_api_versions_v0(kw.read_response(s))
        assert (resp.correlation_id, resp.error_code) == (2, 0)
        s.sendall(kw.produce_v3_request(3, topic, 0, kw.flip_crc_byte(good), acks=0))
        closed, data = kw.wait_closed(s, timeout=10)
    assert closed and data == b"", "a failed acks=0 produce must close the connection, silently"
    util.produce_ok(node.bootstrap, topic, [(None, b"after")])
    got = util.consume(node.bootstrap, topic, expected=2)
    assert [c.value for c in got] == [b"ok", b"after"]
