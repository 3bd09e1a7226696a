"""The compose cluster as an operator and a Kafka client meet it: healthy containers, host
clients through the published ports of all three brokers, container clients by name."""

from __future__ import annotations

import subprocess

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from compose import NODES

RECORDS = 300


def test_containers_run_as_a_non_root_user_with_a_health_check(cluster):
    for n in NODES:
        info = cluster.inspect(n)
        assert info["Config"]["User"] == "runnel"
        assert info["State"]["Health"]["Status"] == "healthy"
        assert any(m["Destination"] == "/var/lib/runnel" and m["Type"] == "volume"
                   for m in info["Mounts"]), info["Mounts"]


def test_host_clients_produce_and_consume_through_every_broker(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topic = "host-clients"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(timeout=30)

    # Metadata through each broker's published port advertises every broker's host address.
    for n in NODES:
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.kafka_ports[n]}"}).list_topics(timeout=20)
        advertised = {(b.host, b.port) for b in md.brokers.values()}
        assert advertised == {("127.0.0.1", cluster.kafka_ports[m]) for m in NODES}, advertised

    # The three partitions are led by the three brokers, so the records cross all of them.
    leaders = {p.id: p.leader for p in admin.list_topics(topic, timeout=20).topics[topic].partitions.values()}
    assert sorted(leaders.values()) == list(NODES), leaders

    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    acked = []

    def on_delivery(err, msg):
        assert err is None, err
        acked.append((msg.partition(), msg.value()))

    for i in range(RECORDS):
        producer.produce(topic, value=f"r{i}".encode(), partition=i % 3, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(acked) == RECORDS

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "host-clients",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        seen = []
        for _ in range(200):
            if len(seen) >= RECORDS:
                break
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                assert msg.error() is None, msg.error()
                seen.append((msg.partition(), msg.value()))
    finally:
        consumer.close()
    assert sorted(seen) == sorted(acked)


def test_containers_reach_the_brokers_by_name(cluster):
    """A client inside the cluster network uses the INTERNAL listener: runnel-N:9092."""
    c1 = cluster.container(1)

    def runnel(*args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["docker", "exec", "-i", c1, "runnel", *args], input=stdin,
                              text=True, capture_output=True, timeout=60)
        assert proc.returncode == 0, f"runnel {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    runnel("topic", "create", "inside", "-b", "runnel-1:9092", "--partitions", "3",
           "--replication-factor", "3")
    runnel("produce", "inside", "-b", "runnel-2:9092",
           stdin="".join(f"inside-{i}\n" for i in range(10)))
    out = runnel("consume", "inside", "-b", "runnel-3:9092", "--from-beginning", "-n", "10",
                 "--timeout-ms", "20000")
    assert sorted(out.split()) == sorted(f"inside-{i}" for i in range(10))
