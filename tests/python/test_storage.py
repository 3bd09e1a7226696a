"""Storage behaviour seen through real clients: segment rolling, retention deleting whole
segments, LogAppendTime, and offsets out of range."""

import time
from pathlib import Path

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

import kafkawire as kw
import util

OFFSET_OUT_OF_RANGE = 1


def segment_files(node, topic: str, partition: int = 0) -> list[Path]:
    return sorted((node.data_dir / f"{topic}-{partition}").glob("*.log"))


def earliest_offset(bootstrap: str, topic: str, partition: int = 0) -> int:
    c = util.consumer(bootstrap)
    try:
        low, _high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return low
    finally:
        c.close()


def set_topic_config(node, topic: str, name: str, value: str) -> None:
    a = util.admin(node.bootstrap)  # kept alive until the future resolves
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    a.incremental_alter_configs([resource])[resource].result(timeout=10)


def test_segments_roll_by_size_and_reads_span_them(node, topic):
    util.create_topic(node.bootstrap, topic, 1, {"segment.bytes": "20000"})
    records = [(f"k{i}".encode(), b"v" * 200 + str(i).encode()) for i in range(500)]
    # linger 0 and small batches so many batches land in many segments.
    delivered = util.produce_ok(node.bootstrap, topic, records, linger_ms=0, batch_num_messages=10)
    assert [d.offset for d in delivered] == list(range(500))
    segments = segment_files(node, topic)
    assert len(segments) >= 4, f"expected several segments of ~20 kB, got {segments}"
    # Segment files are named by the base offset of their first batch, 20 digits.
    assert segments[0].name == "0" * 20 + ".log"
    for s in segments:
        assert len(s.stem) == 20 and s.stem.isdigit()
        assert s.with_suffix(".index").exists() and s.with_suffix(".timeindex").exists()
    got = util.consume(node.bootstrap, topic, expected=500)
    assert [(c.key, c.value) for c in got] == records


def test_retention_bytes_deletes_whole_old_segments(node_factory, topic):
    node = node_factory(extra_config=["log.retention.check.interval.ms=200"])
    util.create_topic(node.bootstrap, topic, 1, {"segment.bytes": "20000"})
    records = [(None, b"x" * 500) for _ in range(300)]
    util.produce_ok(node.bootstrap, topic, records, linger_ms=0, batch_num_messages=10)
    before = segment_files(node, topic)
    assert len(before) >= 5
    set_topic_config(node, topic, "retention.bytes", "40000")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(segment_files(node, topic)) == len(before):
        time.sleep(0.2)
    after = segment_files(node, topic)
    assert 1 <= len(after) < len(before), f"retention deleted nothing: {len(before)} -> {len(after)} segments"
    # The oldest segments went, whole: the log now starts at a surviving segment's base offset.
    low = earliest_offset(node.bootstrap, topic)
    assert low == int(after[0].stem) and low > 0
    got = util.consume(node.bootstrap, topic, expected=300 - low)
    assert [c.offset for c in got] == list(range(low, 300))


def test_retention_ms_deletes_expired_segments(node_factory, topic):
    node = node_factory(extra_config=["log.retention.check.interval.ms=200"])
    util.create_topic(node.bootstrap, topic, 1, {"segment.bytes": "10000"})
    old = int(time.time() * 1000) - 3_600_000  # an hour ago
    records = [(None, b"o" * 400, None, old) for _ in range(100)]
    util.produce_ok(node.bootstrap, topic, records, linger_ms=0, batch_num_messages=5)
    fresh = util.produce_ok(node.bootstrap, topic, [(None, b"fresh")])
    set_topic_config(node, topic, "retention.ms", "60000")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and earliest_offset(node.bootstrap, topic) == 0:
        time.sleep(0.2)
    low = earliest_offset(node.bootstrap, topic)
    assert low > 0, "segments with hour-old records were not deleted by retention.ms=60000"
    # The fresh record (in the active segment) is never deleted.
    got = util.consume(node.bootstrap, topic, expected=1, start_offset=fresh[0].offset)
    assert got[0].value == b"fresh"


def test_log_append_time_topic_stamps_batches(node, topic):
    util.create_topic(node.bootstrap, topic, 1, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    util.produce_ok(node.bootstrap, topic, [(None, b"a", None, 1000), (None, b"b", None, 2000)])
    after = int(time.time() * 1000)
    c = util.consumer(node.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        msgs = []
        deadline = time.monotonic() + 20
        while len(msgs) < 2 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                msgs.append(m)
    finally:
        c.close()
    assert len(msgs) == 2
    for m in msgs:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME
        assert before - 1000 <= ts <= after + 1000, f"timestamp {ts} not the append time"


def test_fetch_beyond_log_end_is_offset_out_of_range(node, topic):
    util.produce_ok(node.bootstrap, topic, [(None, b"one"), (None, b"two")])
    _corr, results = kw.parse_fetch_v4_response(
        kw.roundtrip(node.bootstrap, kw.fetch_v4_request(9, topic, 0, offset=50, max_wait_ms=0))
    )
    assert [(r.error_code, r.high_watermark) for r in results] == [(OFFSET_OUT_OF_RANGE, 2)]
    # At exactly the log end the answer is empty, not an error.
    _corr, results = kw.parse_fetch_v4_response(
        kw.roundtrip(node.bootstrap, kw.fetch_v4_request(10, topic, 0, offset=2, max_wait_ms=0))
    )
    assert [(r.error_code, r.records) for r in results] == [(0, b"")]
