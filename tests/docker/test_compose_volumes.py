"""A full `docker-compose down` and `up` keeps every record and committed offset: the data
lives in the named volumes, not in the containers."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

RECORDS = 1000
COMMITTED = 600
GROUP = "survivor"
TOPIC = "survives-down-up"


def read_all(bootstrap: str, partitions: int, expected: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "volume-reader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
        seen = []
        for _ in range(240):
            if len(seen) >= expected:
                break
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                seen.append(msg.value())
        return seen
    finally:
        consumer.close()


def committed(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        [tp] = consumer.committed([TopicPartition(TOPIC, 0)], timeout=30)
        return tp.offset
    finally:
        consumer.close()


def test_data_and_committed_offsets_survive_down_and_up(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=3)])[TOPIC].result(timeout=30)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(RECORDS):
        producer.produce(TOPIC, value=f"v{i}".encode(), partition=0)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": GROUP,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(TOPIC, 0, COMMITTED)], asynchronous=False)
    finally:
        consumer.close()
    assert committed(cluster.bootstrap) == COMMITTED

    volumes = cluster.volumes()
    assert len(volumes) == 3, volumes
    cluster.compose("down", "-t", "20", timeout=180)
    assert cluster.volumes() == volumes, "docker-compose down must keep the named volumes"
    cluster.up()

    assert committed(cluster.bootstrap) == COMMITTED
    assert read_all(cluster.bootstrap, 1, RECORDS) == [f"v{i}".encode() for i in range(RECORDS)]
