"""Log compaction (cleanup.policy=compact) end to end: latest value per key at its original
offset, older values and expired tombstones gone, null keys rejected."""

import time

from confluent_kafka import TopicPartition

import util

KEYS = [f"key-{i}".encode() for i in range(8)]
ROUNDS = 40
DELETE_RETENTION_MS = 6000


def compacted_topic(node, topic, **extra):
    config = {
        "cleanup.policy": "compact",
        "segment.bytes": "2048",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS),
        "min.compaction.lag.ms": "0",
    }
    config.update(extra)
    util.create_topic(node.bootstrap, topic, 1, config)


def read_all(bootstrap, topic, timeout=20.0):
    """Every record of partition 0 from the log start to the high watermark."""
    c = util.consumer(bootstrap)
    out = []
    try:
        tp = TopicPartition(topic, 0)
        low, high = c.get_watermark_offsets(tp, timeout=10)
        c.assign([TopicPartition(topic, 0, low)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (not out or out[-1].offset < high - 1):
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    continue
                out.append(util.Consumed(m.key(), m.value(), m.headers(), m.partition(), m.offset(), 0))
        assert out and out[-1].offset == high - 1, f"read up to {out[-1].offset if out else None}, hw {high}"
    finally:
        c.close()
    return out


def test_compaction_keeps_latest_value_per_key(node_factory, topic):
    node = node_factory(extra_config=["log.cleaner.backoff.ms=200"])
    compacted_topic(node, topic)
    latest = {}  # key -> (offset, value)
    codecs = ["none", "gzip", "zstd", "snappy", "lz4"]
    producers = {c: util.producer(node.bootstrap, compression_type=c, linger_ms=20) for c in codecs}
    for r in range(ROUNDS):
        records = [(k, f"{k.decode()}-round-{r}-".encode() * 4) for k in KEYS]
        if r == ROUNDS - 5:
            records.append((b"doomed", b"soon deleted"))
        if r == ROUNDS - 3:
            records.append((b"doomed", None))  # tombstone
        delivered, errors = util.produce(producers[codecs[r % len(codecs)]], topic, records, partition=0)
        assert not errors, errors[:3]
        for d in delivered:
            latest[d.key] = (d.offset, d.value)
    tombstone_offset = latest.pop(b"doomed")[0]
    # Filler so that every key's latest record is in a sealed (cleanable) segment.
    filler, errors = util.produce(
        producers["none"], topic, [(b"filler", b"x" * 500) for _ in range(12)], partition=0
    )
    assert not errors
    produced_at = time.monotonic()
    total = ROUNDS * len(KEYS) + 2 + 12

    deadline = time.monotonic() + 60
    saw_tombstone_after_cleaning = False
    while True:
        got = read_all(node.bootstrap, topic)
        by_key = {}
        for m in got:
            by_key.setdefault(m.key, []).append(m)
        main_clean = all(len(by_key.get(k, [])) == 1 for k in KEYS)
        doomed = by_key.get(b"doomed", [])
        if main_clean and doomed and time.monotonic() - produced_at < DELETE_RETENTION_MS / 1000:
            # Cleaned once: the tombstone (not its old value) is still there.
            assert [(m.offset, m.value) for m in doomed] == [(tombstone_offset, None)]
            saw_tombstone_after_cleaning = True
        if main_clean and not doomed:
            break
        assert time.monotonic() < deadline, (
            f"not compacted within 60 s: {len(got)} records; copies per key "
            f"{ {k: len(v) for k, v in by_key.items()} }\n{node.log_tail()}"
        )
        time.sleep(0.5)

    assert saw_tombstone_after_cleaning, "the tombstone was removed before delete.retention.ms"
    assert len(got) < total
    for k in KEYS:
        [m] = by_key[k]
        assert (m.offset, m.value) == latest[k], k
    # Offsets only grow, every record is one that was produced at that offset.
    assert all(a.offset < b.offset for a, b in zip(got, got[1:]))
    assert by_key[b"filler"][-1].offset == filler[-1].offset
    log = node.log_path.read_text(errors="replace")
    assert "log cleaner compacted partition" in log

    # A restart keeps the compacted log as it is.
    node.restart()
    again = read_all(node.bootstrap, topic)
    assert [(m.offset, m.key, m.value) for m in again] == [(m.offset, m.key, m.value) for m in got]

    # Reading from an offset that compaction removed returns the next retained record.
    removed = next(o for o in range(total) if o not in {m.offset for m in got})
    c = util.consumer(node.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, removed)])
        first = None
        deadline = time.monotonic() + 15
        while first is None and time.monotonic() < deadline:
            for m in c.consume(num_messages=1, timeout=0.5):
                if not m.error():
                    first = m
    finally:
        c.close()
    assert first is not None
    assert first.offset() == min(m.offset for m in got if m.offset >= removed)


def test_null_key_is_rejected_on_compacted_topic(node, topic):
    compacted_topic(node, topic)
    for codec in ["none", "gzip"]:
        p = util.producer(node.bootstrap, compression_type=codec, retries=0)
        delivered, errors = util.produce(p, topic, [(None, b"no key")], partition=0)
        assert not delivered
        assert len(errors) == 1
        assert errors[0][0].code() == 87, errors[0][0]  # INVALID_RECORD
    # Keyed records are fine, and tombstones too.
    util.produce_ok(node.bootstrap, topic, [(b"k", b"v"), (b"k", None)], partition=0)


def test_compact_delete_policy_and_plain_topics_accept_null_keys(node_factory, topic):
    node = node_factory()
    util.create_topic(node.bootstrap, topic, 1, {"cleanup.policy": "delete"})
    util.produce_ok(node.bootstrap, topic, [(None, b"fine")], partition=0)
    other = topic + "-cd"
    util.create_topic(node.bootstrap, other, 1, {"cleanup.policy": "compact,delete"})
    p = util.producer(node.bootstrap, retries=0)
    delivered, errors = util.produce(p, other, [(None, b"no key")], partition=0)
    assert errors and errors[0][0].code() == 87
