"""The network-level fuzzer (netfuzz.py), short round: mutated client frames hit all three
nodes' Kafka ports while an idempotent acks=all producer and a consumer group run. No node may
die, each node's resident set stays under RSS_BOUND_MIB, and the workload loses and duplicates
nothing. `make fuzz-net` runs the long round (docs/robustness.md)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import NewTopic

import netfuzz
import util

FUZZ_SECONDS = float(os.environ.get("NETFUZZ_SECONDS", "45"))
RSS_BOUND_MIB = 256
PARTITIONS = 3


@dataclass
class Report:
    acked: int
    read_back: int
    lost: int
    duplicated: int
    group_consumed: int
    delivery_errors: int

    def __str__(self) -> str:
        return (f"acked {self.acked}, read back {self.read_back}, lost {self.lost}, "
                f"duplicated {self.duplicated}, consumed by the group {self.group_consumed}, "
                f"delivery errors {self.delivery_errors}")


class Workload:
    """An idempotent acks=all producer writing numbered records and a consumer group reading
    them, each on its own thread, until finish()."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap = bootstrap
        self.topic = topic
        self.stop = threading.Event()
        self.acked: list[int] = []
        self.delivery_errors: list = []
        self.group_consumed = 0
        self.group_errors: list = []
        admin = util.admin(bootstrap)
        futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3,
                                                config={"min.insync.replicas": "2"})])
        futures[topic].result(timeout=30)
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._consume, daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _produce(self) -> None:
        p = util.producer(self.bootstrap, enable_idempotence=True, linger_ms=5, message_timeout_ms=120000)

        def on_delivery(err, msg):
            if err is None:
                self.acked.append(int(msg.value()))
            else:
                self.delivery_errors.append(err)

        i = 0
        while not self.stop.is_set():
            try:
                p.produce(self.topic, key=str(i % 17).encode(), value=str(i).encode(), on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0.005)
        assert p.flush(120) == 0, "records still unacknowledged 120 s after the run"

    def _consume(self) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.topic}-group",
                      "auto.offset.reset": "earliest", "enable.auto.commit": True,
                      "session.timeout.ms": 10000, "log_level": util.LOG_LEVEL})
        c.subscribe([self.topic])
        try:
            while not self.stop.is_set():
                for m in c.consume(num_messages=500, timeout=0.2):
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            self.group_errors.append(m.error())
                    else:
                        self.group_consumed += 1
        finally:
            c.close()

    def finish(self) -> Report:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=150)
        read = util.consume(self.bootstrap, self.topic, partitions=range(PARTITIONS),
                            expected=len(self.acked), timeout=60)
        counts = Counter(int(m.value) for m in read)
        lost = sum(1 for v in self.acked if counts[v] == 0)
        duplicated = sum(1 for n in counts.values() if n > 1)
        return Report(len(self.acked), len(read), lost, duplicated, self.group_consumed, len(self.delivery_errors))


def test_network_fuzzing_against_a_live_cluster(cluster3):
    work = Workload(cluster3.bootstrap, "netfuzz-workload")
    work.start()
    sampler = netfuzz.RssSampler([nd.proc.pid for nd in cluster3.nodes])
    sampler.start()
    addrs = [("127.0.0.1", nd.kafka_port) for nd in cluster3.nodes]
    started = time.monotonic()
    # The fuzzer's own frames write to another topic, so the workload's records are all its own.
    stats = netfuzz.run_fuzzers(addrs, "netfuzz-target", FUZZ_SECONDS, threads=3)
    report = work.finish()
    sampler.stop.set()
    print(f"{stats.frames} fuzzed frames in {time.monotonic() - started:.0f} s; peak RSS {sampler.peak}; {report}")
    assert all(nd.alive() for nd in cluster3.nodes), "a node died under fuzzing"
    assert stats.frames > 1000, f"only {stats.frames} frames sent"
    assert max(sampler.peak.values()) < RSS_BOUND_MIB, f"peak RSS per node (MiB): {sampler.peak}"
    assert report.acked > 0 and report.lost == 0 and report.duplicated == 0, str(report)
    assert report.group_consumed > 0, str(report)
    assert not work.group_errors, work.group_errors[:5]
