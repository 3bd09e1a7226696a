"""Named Kafka listeners (KIP-103): one node reached under two addresses tells each client
the addresses of the listener it connected through, as the docker-compose cluster needs
(containers by name, host clients through a published port)."""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Node, free_ports, runnel_bin


class TwoListenerNode(Node):
    """A node with an INTERNAL listener advertised as `localhost` and an EXTERNAL one
    advertised as 127.0.0.1, on two ports."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        (self.external_port,) = free_ports(1)

    def args(self) -> list[str]:
        cmd = super().args()
        i = cmd.index("--kafka-listen")
        cmd[i + 1] = f"INTERNAL://127.0.0.1:{self.kafka_port},external://127.0.0.1:{self.external_port}"
        return cmd + ["--advertised-kafka",
                      f"INTERNAL://localhost:{self.kafka_port},EXTERNAL://127.0.0.1:{self.external_port}"]


@pytest.fixture
def two_listeners(tmp_path):
    n = TwoListenerNode(tmp_path / "data", tmp_path / "node.log")
    try:
        yield n.start()
    finally:
        try:
            n.stop()
        finally:
            n.kill()


def brokers_seen_through(port: int) -> set[tuple[str, int]]:
    md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=20)
    return {(b.host, b.port) for b in md.brokers.values()}


def test_each_listener_advertises_its_own_address(two_listeners):
    n = two_listeners
    assert brokers_seen_through(n.kafka_port) == {("localhost", n.kafka_port)}
    assert brokers_seen_through(n.external_port) == {("127.0.0.1", n.external_port)}

    topic = "two-listeners"
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{n.external_port}"})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=20)
    # Produce through one listener, consume through the other: the same partition log.
    for port, value in ((n.kafka_port, b"internal"), (n.external_port, b"external")):
        p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "acks": "all"})
        p.produce(topic, value=value)
        assert p.flush(20) == 0
    for port in (n.kafka_port, n.external_port):
        c = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": f"g{port}",
                      "auto.offset.reset": "earliest"})
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            got = []
            for _ in range(40):
                got += [m.value() for m in c.consume(10, timeout=0.5) if m.error() is None]
                if len(got) >= 2:
                    break
            assert got == [b"internal", b"external"]
            # The group coordinator is found at this listener's address too.
            c.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
        finally:
            c.close()

    # `runnel cluster status` shows both listeners.
    out = subprocess.run([str(runnel_bin()), "cluster", "status", "--http", f"127.0.0.1:{n.http_port}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"INTERNAL=localhost:{n.kafka_port}, EXTERNAL=127.0.0.1:{n.external_port}" in out, out


@pytest.mark.parametrize("listen, advertised, why", [
    ("A://127.0.0.1:0,B://127.0.0.1:0", "localhost:9092", "no listener name"),
    ("A://127.0.0.1:0", "C://localhost:9092", "only A"),
    ("A://127.0.0.1:0,a://127.0.0.1:0", "", "twice"),
])
def test_bad_listener_flags_stop_the_node_with_a_sentence(tmp_path, listen, advertised, why):
    cmd = [str(runnel_bin()), "node", "--data-dir", str(tmp_path / "d"), "--kafka-listen", listen,
           "--rpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    if advertised:
        cmd += ["--advertised-kafka", advertised]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert why in proc.stderr, proc.stderr
