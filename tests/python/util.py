"""Client-side helpers shared by the tests (confluent-kafka, kafka-python, the runnel CLI)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import runnel_bin

# librdkafka wants a group.id for a Consumer even when it only uses assign(); no group API
# is used: offsets are never committed and subscribe() is never called.
UNUSED_GROUP = "runnel-pytest-unused"
# librdkafka logs to stderr; keep warnings and errors only (syslog levels, 4 = warning).
LOG_LEVEL = 4


@dataclass
class Delivered:
    key: bytes | None
    value: bytes | None
    headers: list | None
    partition: int
    offset: int


@dataclass
class Consumed:
    key: bytes | None
    value: bytes | None
    headers: list | None
    partition: int
    offset: int
    timestamp: int


def producer(bootstrap: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "socket.timeout.ms": 10000,
        "log_level": LOG_LEVEL,
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base)


def produce(p: Producer, topic: str, records, partition: int | None = None, flush_timeout: float = 60.0):
    """Produces (key, value[, headers[, timestamp]]) tuples and flushes. Returns
    (delivered: list[Delivered] in delivery-report order, errors: list[(KafkaError, msg)])."""
    delivered: list[Delivered] = []
    errors: list = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append((err, msg))
        else:
            delivered.append(Delivered(msg.key(), msg.value(), msg.headers(), msg.partition(), msg.offset()))

    for rec in records:
        key, value = rec[0], rec[1]
        kwargs = {"key": key, "value": value, "on_delivery": on_delivery}
        if len(rec) > 2 and rec[2] is not None:
            kwargs["headers"] = rec[2]
        if len(rec) > 3 and rec[3] is not None:
            kwargs["timestamp"] = rec[3]
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(flush_timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {flush_timeout} s"
    return delivered, errors


def produce_ok(bootstrap: str, topic: str, records, partition: int | None = None, **conf) -> list[Delivered]:
    p = producer(bootstrap, **conf)
    delivered, errors = produce(p, topic, records, partition)
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0][0]}"
    assert len(delivered) == len(records)
    return delivered


def consumer(bootstrap: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": UNUSED_GROUP,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 10000,
        "log_level": LOG_LEVEL,
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(base)


def consume(
    bootstrap: str,
    topic: str,
    partitions=(0,),
    expected: int | None = None,
    timeout: float = 30.0,
    settle: float = 1.0,
    start_offset: int = OFFSET_BEGINNING,
    **conf,
) -> list[Consumed]:
    """Reads partitions from `start_offset` with assign() until `expected` records arrived (then
    for `settle` more seconds, to catch duplicates) or `timeout` passed."""
    c = consumer(bootstrap, **conf)
    out: list[Consumed] = []
    errors = []
    try:
        c.assign([TopicPartition(topic, p, start_offset) for p in partitions])
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            if expected is not None and len(out) >= expected:
                settle_until = settle_until or time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        errors.append(m.error())
                    continue
                out.append(Consumed(m.key(), m.value(), m.headers(), m.partition(), m.offset(), m.timestamp()[1]))
    finally:
        c.close()
    assert not errors, f"consumer errors: {errors[:5]}"
    return out


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, "log_level": LOG_LEVEL})


def create_topic(bootstrap: str, topic: str, partitions: int, config: dict | None = None) -> None:
    a = admin(bootstrap)
    futures = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})])
    futures[topic].result(timeout=20)
    wait_for_partitions(bootstrap, topic, partitions)


def partition_count(bootstrap: str, topic: str) -> int | None:
    md = admin(bootstrap).list_topics(topic=topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def wait_for_partitions(bootstrap: str, topic: str, partitions: int, timeout: float = 10.0) -> None:
    """Metadata shows `topic` with exactly `partitions` partitions, each with a leader."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = admin(bootstrap).list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        last = t and (t.error, {p: (pm.leader, pm.error) for p, pm in t.partitions.items()})
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            pm.leader >= 0 and pm.error is None for pm in t.partitions.values()
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} never showed {partitions} partitions with leaders; last metadata: {last}")


def metadata_ok(bootstrap: str, node_id: int = 1) -> None:
    """A fresh client can connect and get Metadata naming the node as broker."""
    md = admin(bootstrap).list_topics(timeout=10)
    assert list(md.brokers) == [node_id], f"brokers in metadata: {md.brokers}"
    b = md.brokers[node_id]
    assert f"{b.host}:{b.port}" == bootstrap


def cli(*args: str, input: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(runnel_bin()), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
