"""Consumer-group offsets survive the loss of the group coordinator: with a replicated
__consumer_offsets (RF=3) on a 3-node cluster, SIGKILL the node FindCoordinator names; the
new coordinator must still return the committed offsets (OffsetFetch) and the group must
resume consuming from them."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

import util
from conftest import three_node_cluster
from group_helpers import coordinator_of, log_ends, member_conf, wait_until

pytestmark = pytest.mark.timeout(150)

PARTITIONS = 2
RECORDS = 100  # split evenly over the partitions
READ_FIRST = 15  # records per partition consumed and committed before the coordinator dies
OFFSETS_TOPIC = "__consumer_offsets"
# No initial rebalance delay, so the group forms at once; every node holds the offsets topic.
GROUP_CONFIG = ["group.initial.rebalance.delay.ms=0", "offsets.topic.replication.factor=3"]


def group_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(member_conf(bootstrap, group, **{"socket.timeout.ms": 5000}))


def committed(c: Consumer, topic: str) -> dict[int, int] | None:
    """OffsetFetch through `c`; None while the coordinator cannot answer."""
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=5)
    except KafkaException:
        return None
    if any(tp.error is not None for tp in tps):
        return None
    return {tp.partition: tp.offset for tp in tps}


@pytest.fixture
def cluster(request, tmp_path):
    yield from three_node_cluster(request, tmp_path / "cluster", GROUP_CONFIG)


def test_committed_offsets_survive_the_coordinator_sigkill(cluster, topic):
    a = util.admin(cluster.bootstrap)
    a.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)])[topic].result(timeout=20)
    util.wait_for_partitions(cluster.bootstrap, topic, PARTITIONS)
    for p in range(PARTITIONS):
        records = [(str(i).encode(), str(i).encode()) for i in range(RECORDS // PARTITIONS)]
        util.produce_ok(cluster.bootstrap, topic, records, partition=p)
    group = f"g-{topic}"

    # Consume the first READ_FIRST records of every partition (pausing each once it has them),
    # then commit exactly the positions reached.
    c = group_consumer(cluster.bootstrap, group)
    try:
        c.subscribe([topic])
        last: dict[int, int] = {}
        read: dict[int, int] = {p: 0 for p in range(PARTITIONS)}
        deadline = time.monotonic() + 30
        while min(read.values()) < READ_FIRST and time.monotonic() < deadline:
            for m in c.consume(num_messages=1, timeout=0.5):
                if m.error() is not None or read[m.partition()] >= READ_FIRST:
                    continue
                last[m.partition()] = m.offset()
                read[m.partition()] += 1
                if read[m.partition()] == READ_FIRST:
                    c.pause([TopicPartition(topic, m.partition())])
        assert min(read.values()) >= READ_FIRST, f"read only {read} records per partition in 30 s"
        positions = {p: o + 1 for p, o in last.items()}
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()], asynchronous=False)
        assert committed(c, topic) == positions
    finally:
        c.close()
    assert positions == {p: READ_FIRST for p in range(PARTITIONS)}, positions

    coordinator = coordinator_of(cluster, group)
    # The offsets topic is replicated to every node, or losing one node could lose offsets.
    md = cluster.node(coordinator).metadata([OFFSETS_TOPIC])
    assert md.topics[OFFSETS_TOPIC].error == 0, md.topics
    assert all(len(p.replicas) == 3 for p in md.topics[OFFSETS_TOPIC].partitions.values()), md.topics[OFFSETS_TOPIC]

    cluster.node(coordinator).kill()
    survivors = cluster.bootstrap_of(cluster.alive())
    new_coordinator = coordinator_of(cluster, group, exclude=frozenset({coordinator}))
    assert new_coordinator != coordinator

    # OffsetFetch from the new coordinator returns the offsets committed to the old one.
    c = group_consumer(survivors, group)
    try:
        after = wait_until(lambda: committed(c, topic), timeout=30, what="OffsetFetch from the new coordinator")
        assert after == positions, f"committed {positions}, the new coordinator (node {new_coordinator}) has {after}"

        # The group resumes exactly there.
        c.subscribe([topic])
        first: dict[int, int] = {}
        got = 0
        remaining = RECORDS - sum(positions.values())
        deadline = time.monotonic() + 40
        while got < remaining and time.monotonic() < deadline:
            for m in c.consume(num_messages=50, timeout=0.5):
                if m.error() is None:
                    first.setdefault(m.partition(), m.offset())
                    got += 1
    finally:
        c.close()
    ends = log_ends(survivors, topic, PARTITIONS)
    expect_first = {p: o for p, o in positions.items() if o < ends[p]}
    assert first == expect_first, f"resumed at {first}, committed {positions}"
    assert got == remaining, f"read {got} records after the failover, expected {remaining}"

