"""Every compression codec, produced and consumed by both Python clients."""

import random
import time
import zlib

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

import util

N = 1000


def make_records(seed: int) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    out = []
    for i in range(N):
        if i % 3 == 0:  # compressible
            value = (f"record {i} " * rnd.randint(1, 40)).encode()
        elif i % 3 == 1:  # incompressible
            value = rnd.randbytes(rnd.randint(1, 400))
        else:
            value = str(i).encode()
        out.append((f"k{i % 13}".encode(), value))
    return out


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_compression_roundtrip(node, topic, codec):
    records = make_records(zlib.crc32(codec.encode()))
    delivered = util.produce_ok(
        node.bootstrap, topic, records, partition=0, compression_type=codec, linger_ms=50, batch_num_messages=300
    )
    assert [d.offset for d in delivered] == list(range(N))
    got = util.consume(node.bootstrap, topic, partitions=[0], expected=N)
    assert [m.offset for m in got] == list(range(N))
    assert [(m.key, m.value) for m in got] == records


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_compression_roundtrip(node, topic, codec):
    records = make_records(1000 + len(codec))
    producer = KafkaProducer(
        bootstrap_servers=node.bootstrap,
        acks="all",
        compression_type=codec,
        linger_ms=50,
        batch_size=64 * 1024,
        request_timeout_ms=15000,
        max_block_ms=15000,
    )
    try:
        futures = [producer.send(topic, key=k, value=v, partition=0) for k, v in records]
        producer.flush(timeout=30)
        offsets = [f.get(timeout=10).offset for f in futures]
    finally:
        producer.close(timeout=5)
    assert offsets == list(range(N))

    consumer = KafkaConsumer(
        bootstrap_servers=node.bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=15000
    )
    try:
        consumer.assign([KTopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        got = []
        deadline = time.monotonic() + 30
        while len(got) < N and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend(recs)
    finally:
        consumer.close()
    assert [r.offset for r in got] == list(range(N))
    assert [(r.key, r.value) for r in got] == records
