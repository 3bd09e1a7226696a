"""The two common Python clients against a node: confluent-kafka (librdkafka) and kafka-python."""

import json
import time
import zlib

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

import util


def test_confluent_produce_and_consume_with_keys_and_headers(node, topic):
    n = 300
    records = []
    for i in range(n):
        key = None if i % 10 == 9 else f"key-{i % 7}".encode()
        value = f"value-{i}-".encode() + bytes(range(i % 50))
        headers = [("seq", str(i).encode()), ("kind", b"even" if i % 2 == 0 else b"odd")] if i % 3 else []
        records.append((key, value, headers))

    p = util.producer(node.bootstrap, acks="all")
    delivered, errors = util.produce(p, topic, records, partition=0)
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0][0]}"
    assert [d.offset for d in delivered] == list(range(n))
    assert [d.partition for d in delivered] == [0] * n
    assert [d.value for d in delivered] == [r[1] for r in records]

    got = util.consume(node.bootstrap, topic, partitions=[0], expected=n)
    assert [m.offset for m in got] == list(range(n))
    assert [m.key for m in got] == [r[0] for r in records]
    assert [m.value for m in got] == [r[1] for r in records]
    assert [m.headers or [] for m in got] == [r[2] for r in records]


def test_kafka_python_json_produce_and_consume(node, topic):
    producer = KafkaProducer(
        bootstrap_servers=node.bootstrap,
        acks="all",
        value_serializer=lambda v: json.dumps(v).encode(),
        request_timeout_ms=15000,
        max_block_ms=15000,
    )
    docs = [{"i": i, "name": f"doc-{i}", "tags": ["a", "b"][: i % 3], "nested": {"sq": i * i}} for i in range(100)]
    try:
        futures = [producer.send(topic, value=d, partition=0) for d in docs]
        producer.flush(timeout=30)
        metas = [f.get(timeout=10) for f in futures]
    finally:
        producer.close(timeout=5)
    assert [m.offset for m in metas] == list(range(100))
    assert {(m.topic, m.partition) for m in metas} == {(topic, 0)}

    consumer = KafkaConsumer(
        bootstrap_servers=node.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        value_deserializer=lambda b: json.loads(b),
        request_timeout_ms=15000,
    )
    try:
        tp = KTopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning()
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 100 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
    finally:
        consumer.close()
    assert [r.offset for r in got] == list(range(100))
    assert [r.value for r in got] == docs


def test_keyed_records_stay_in_one_partition_in_order(node, topic):
    util.create_topic(node.bootstrap, topic, 4)
    assert util.partition_count(node.bootstrap, topic) == 4

    keys = [f"user-{k}".encode() for k in range(8)]
    records = [(k, f"{k.decode()}:{seq}".encode()) for seq in range(50) for k in keys]
    delivered = util.produce_ok(node.bootstrap, topic, records)  # default partitioner
    delivered_partition = {d.key: d.partition for d in delivered}
    # librdkafka's default partitioner (consistent_random) is CRC32(key) % partitions.
    assert delivered_partition == {k: zlib.crc32(k) % 4 for k in keys}

    got = util.consume(node.bootstrap, topic, partitions=[0, 1, 2, 3], expected=400)
    assert len(got) == 400
    per_partition_offsets = {}
    for m in got:
        per_partition_offsets.setdefault(m.partition, []).append(m.offset)
    for p, offsets in per_partition_offsets.items():
        assert offsets == list(range(len(offsets))), f"partition {p} offsets not dense from 0"

    partitions_of_key = {}
    seqs_of_key = {}
    for m in got:
        partitions_of_key.setdefault(m.key, set()).add(m.partition)
        k, seq = m.value.decode().split(":")
        assert k.encode() == m.key
        seqs_of_key.setdefault(m.key, []).append(int(seq))
    assert sorted(partitions_of_key) == sorted(keys)
    for k in keys:
        assert partitions_of_key[k] == {delivered_partition[k]}, f"key {k} in partitions {partitions_of_key[k]}"
        assert seqs_of_key[k] == list(range(50)), f"key {k} sequence: {seqs_of_key[k]}"
