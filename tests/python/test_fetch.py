"""Fetch long polling and ListOffsets by timestamp."""

import threading
import time

from confluent_kafka import TopicPartition

import kafkawire as kw
import util


def produce_later(bootstrap, topic, value, delay=1.0):
    def run():
        time.sleep(delay)
        util.produce_ok(bootstrap, topic, [(b"late", value)], partition=0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_consumer_waiting_on_empty_partition_gets_late_record(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    c = util.consumer(node.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        m = c.poll(0.5)  # nothing there yet: the consumer is fetching an empty partition
        assert m is None or m.error(), f"unexpected record before the produce: {m.value()}"
        t = produce_later(node.bootstrap, topic, b"arrived", delay=1.0)
        got = None
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got = m
        t.join(timeout=30)
    finally:
        c.close()
    assert got is not None, "no record within 20 s"
    assert (got.offset(), got.key(), got.value()) == (0, b"late", b"arrived")


def test_fetch_request_long_polls_until_data_arrives(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    t = produce_later(node.bootstrap, topic, b"long-poll", delay=1.0)
    # One Fetch with max_wait 10 s: a long-polling broker answers once the record is there.
    started = time.monotonic()
    corr, parts = kw.parse_fetch_v4_response(
        kw.roundtrip(node.bootstrap, kw.fetch_v4_request(9, topic, 0, offset=0, max_wait_ms=10_000), timeout=30)
    )
    elapsed = time.monotonic() - started
    t.join(timeout=30)
    assert corr == 9
    assert [(p.topic, p.partition, p.error_code) for p in parts] == [(topic, 0, 0)]
    records = kw.decode_batches(parts[0].records or b"")
    assert [(o, r.key, r.value) for o, r in records] == [(0, b"late", b"long-poll")], (
        f"Fetch returned {records} after {elapsed:.1f} s"
    )
    assert parts[0].high_watermark == 1


def test_fetch_on_empty_partition_waits_max_wait(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    started = time.monotonic()
    corr, parts = kw.parse_fetch_v4_response(
        kw.roundtrip(node.bootstrap, kw.fetch_v4_request(10, topic, 0, offset=0, max_wait_ms=1500), timeout=30)
    )
    elapsed = time.monotonic() - started
    assert [(p.partition, p.error_code, p.high_watermark) for p in parts] == [(0, 0, 0)]
    assert not parts[0].records
    assert 1.0 <= elapsed < 10, f"empty Fetch with max_wait 1.5 s answered after {elapsed:.2f} s"


def produce_timestamped_batches(bootstrap, topic, t0):
    """Three batches: offsets 0-2 at t0+{0,10,20}, 3-5 at t0+1000+{..}, 6-8 at t0+2000+{..}."""
    delivered = []
    for b in range(3):
        recs = [(f"b{b}".encode(), f"r{b}-{i}".encode(), None, t0 + b * 1000 + i * 10) for i in range(3)]
        delivered += util.produce_ok(bootstrap, topic, recs, partition=0)
    assert [d.offset for d in delivered] == list(range(9))


def offsets_for(bootstrap, topic, timestamps):
    c = util.consumer(bootstrap)
    try:
        out = []
        for ts in timestamps:
            res = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=15)
            assert res[0].error is None, res[0].error
            out.append(res[0].offset)
        return out
    finally:
        c.close()


def test_list_offsets_by_timestamp_between_batches(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    t0 = int(time.time() * 1000) - 3_600_000
    produce_timestamped_batches(node.bootstrap, topic, t0)
    # Earliest offset whose timestamp is >= the one asked; -1 (end) when none is.
    asked = [t0 - 5000, t0 + 500, t0 + 1000, t0 + 1500, t0 + 2000, t0 + 60_000]
    assert offsets_for(node.bootstrap, topic, asked) == [0, 3, 3, 6, 6, -1]


def test_list_offsets_by_timestamp_inside_a_batch(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    t0 = int(time.time() * 1000) - 3_600_000
    produce_timestamped_batches(node.bootstrap, topic, t0)
    asked = [t0 + 5, t0 + 10, t0 + 15, t0 + 1011, t0 + 2020, t0 + 2021]
    assert offsets_for(node.bootstrap, topic, asked) == [1, 1, 2, 5, 8, -1]
