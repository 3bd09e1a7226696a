"""Crash durability: SIGKILL, restart on the same data dir, and torn log tails."""

import os
import random
from pathlib import Path

import kafkawire as kw
import util


def records_for(prefix: str, n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}-k{i % 11}".encode(), f"{prefix}-value-{i}".encode() * (1 + i % 4)) for i in range(start, start + n)]


def assert_log_matches(got, delivered):
    """Every acknowledged record is present exactly once, in offset order, and nothing else."""
    expected = sorted(((d.offset, d.key, d.value) for d in delivered))
    actual = [(m.offset, m.key, m.value) for m in got]
    assert len(actual) == len(expected), f"read {len(actual)} records, {len(expected)} were acknowledged"
    assert actual == expected


def newest_log_file(data_dir: Path, topic: str, partition: int = 0) -> Path:
    files = list(Path(data_dir).glob(f"**/{topic}-{partition}/*.log"))
    assert files, f"no **/{topic}-{partition}/*.log under {data_dir}: {sorted(str(p) for p in Path(data_dir).rglob('*'))}"

    def base_offset(p: Path):
        try:
            return (0, int(p.stem))
        except ValueError:
            return (-1, p.stem)

    return max(files, key=base_offset)


def test_acknowledged_records_survive_sigkill(node, topic):
    other = topic + "-three"
    util.create_topic(node.bootstrap, other, 3)
    other_delivered = util.produce_ok(
        node.bootstrap, other, [(f"o{i}".encode(), f"other-{i}".encode()) for i in range(30)]
    )

    records = records_for("d", 5000)
    delivered = util.produce_ok(node.bootstrap, topic, records, partition=0, acks="all")
    assert sorted(d.offset for d in delivered) == list(range(5000))

    node.kill()
    node.restart()

    got = util.consume(node.bootstrap, topic, partitions=[0], expected=5000, timeout=60)
    assert_log_matches(got, delivered)

    # The 3-partition topic created before the crash is still there, with its records.
    assert util.partition_count(node.bootstrap, other) == 3
    got_other = util.consume(node.bootstrap, other, partitions=[0, 1, 2], expected=30)
    assert sorted((m.partition, m.offset, m.key, m.value) for m in got_other) == sorted(
        (d.partition, d.offset, d.key, d.value) for d in other_delivered
    )

    # The log continues right after the last acknowledged offset.
    after = util.produce_ok(node.bootstrap, topic, [(b"after", b"restart")], partition=0)
    assert [d.offset for d in after] == [5000]


def test_garbage_appended_to_log_tail_is_ignored(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    delivered = []
    for batch in range(4):
        delivered += util.produce_ok(node.bootstrap, topic, records_for(f"b{batch}", 25), partition=0)
    assert sorted(d.offset for d in delivered) == list(range(100))

    node.kill()
    log = newest_log_file(node.data_dir, topic)
    garbage = random.Random(37).randbytes(37)
    with open(log, "ab") as f:
        f.write(garbage)
    node.restart()

    got = util.consume(node.bootstrap, topic, partitions=[0], expected=100)
    assert_log_matches(got, delivered)

    after = util.produce_ok(node.bootstrap, topic, [(b"after", b"torn-tail")], partition=0)
    assert [d.offset for d in after] == [100]
    got = util.consume(node.bootstrap, topic, partitions=[0], expected=101)
    assert_log_matches(got, delivered + after)


def test_half_written_last_batch_is_dropped(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    delivered = []
    for batch in range(3):
        delivered += util.produce_ok(node.bootstrap, topic, records_for(f"b{batch}", 10), partition=0)
    assert sorted(d.offset for d in delivered) == list(range(30))

    log = newest_log_file(node.data_dir, topic)
    size_before = log.stat().st_size

    # The last batch is sent by hand so that it is exactly one record batch.
    last = kw.record_batch([kw.Record(f"last-{i}".encode(), b"x" * 100) for i in range(10)])
    corr, results = kw.parse_produce_v3_response(kw.roundtrip(node.bootstrap, kw.produce_v3_request(11, topic, 0, last)))
    assert [(r.partition, r.error_code, r.base_offset) for r in results] == [(0, 0, 30)]

    assert newest_log_file(node.data_dir, topic) == log, "segment rolled while writing the last batch"
    size_after = log.stat().st_size
    assert size_after > size_before, "the acknowledged batch is not in the log file"

    node.kill()
    cut_at = size_before + (size_after - size_before) // 2
    os.truncate(log, cut_at)
    node.restart()

    got = util.consume(node.bootstrap, topic, partitions=[0], expected=30)
    assert_log_matches(got, delivered)

    after = util.produce_ok(node.bootstrap, topic, [(b"after", b"truncation")], partition=0)
    assert [d.offset for d in after] == [30]
    got = util.consume(node.bootstrap, topic, partitions=[0], expected=31)
    assert_log_matches(got, delivered + after)
