"""What the group coordinator keeps in __consumer_offsets is replicated as configured, on a
3-node cluster:

- an OffsetCommit is served (OffsetFetch) only once its records are on the in-sync replicas:
  while the followers are frozen the commit is pending (not shown, UNSTABLE_OFFSET_COMMIT
  with require_stable), then fails, and the previous offset is still what OffsetFetch
  answers;
- __consumer_offsets is created only once offsets.topic.replication.factor brokers are live:
  a group looked up while a node is still down gets COORDINATOR_NOT_AVAILABLE (its clients
  retry) instead of an offsets topic with fewer replicas for good.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import NewTopic

import kafkawire as kw
import util
from cluster import Cluster
from conftest import three_node_cluster
from group_helpers import coordinator_of, find_coordinator, member_conf, wait_until

pytestmark = pytest.mark.timeout(150)

OFFSETS_TOPIC = "__consumer_offsets"
COMMIT_TIMEOUT_S = 3.0
GROUP_CONFIG = [
    "group.initial.rebalance.delay.ms=0",
    "offsets.topic.replication.factor=3",
    f"offsets.commit.timeout.ms={int(COMMIT_TIMEOUT_S * 1000)}",
]


def offset_commit(bootstrap: str, group: str, topic: str, offset: int) -> int:
    """Commits `offset` for partition 0 outside group management; the error code."""
    request = kw.offset_commit_v2_request(1, group, topic, 0, offset)
    return kw.parse_offset_commit_v2_response(kw.roundtrip(bootstrap, request, timeout=20.0))


def offset_fetch(bootstrap: str, group: str, topic: str, require_stable: bool) -> tuple[int, int]:
    """OffsetFetch v7 of partition 0: (error code, committed offset)."""
    request = kw.offset_fetch_v7_request(1, group, topic, 0, require_stable)
    group_error, error, offset = kw.parse_offset_fetch_v7_response(kw.roundtrip(bootstrap, request, timeout=5.0))
    assert group_error == 0, f"OffsetFetch failed for the whole group: error {group_error}"
    return error, offset


@pytest.fixture
def cluster(request, tmp_path):
    yield from three_node_cluster(request, tmp_path / "cluster", GROUP_CONFIG)


def test_an_unreplicated_commit_is_never_served(cluster, topic):
    a = util.admin(cluster.bootstrap)
    a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])[topic].result(timeout=20)
    util.wait_for_partitions(cluster.bootstrap, topic, 1)
    group = f"g-{topic}"
    coordinator = cluster.node(coordinator_of(cluster, group))
    wait_until(
        lambda: offset_commit(coordinator.bootstrap, group, topic, 5) == 0,
        timeout=30,
        what="the first commit to succeed",
        interval=0.2,
    )
    assert offset_fetch(coordinator.bootstrap, group, topic, require_stable=False) == (0, 5)

    # Frozen followers: nothing appended now reaches the ISR, and with two of three voters
    # stopped the controller cannot shrink it either.
    followers = [nd for nd in cluster.nodes if nd is not coordinator]
    for nd in followers:
        nd.stop_signal()
    try:
        outcome: dict[str, int] = {}
        committer = threading.Thread(
            target=lambda: outcome.setdefault("error", offset_commit(coordinator.bootstrap, group, topic, 9)),
            daemon=True,
        )
        committer.start()
        served, stable = set(), set()
        deadline = time.monotonic() + COMMIT_TIMEOUT_S + 15
        while committer.is_alive() and time.monotonic() < deadline:
            served.add(offset_fetch(coordinator.bootstrap, group, topic, require_stable=False))
            stable.add(offset_fetch(coordinator.bootstrap, group, topic, require_stable=True))
            time.sleep(0.05)
        committer.join(timeout=1)
        assert not committer.is_alive(), "the commit got no answer"
        assert served == {(0, 5)}, f"OffsetFetch served {served} while the commit of 9 was not replicated"
        # Before the commit arrives the stable answer is 5 too; once it is pending, UNSTABLE.
        assert (kw.ERROR_UNSTABLE_OFFSET_COMMIT, -1) in stable and stable <= {
            (kw.ERROR_UNSTABLE_OFFSET_COMMIT, -1),
            (0, 5),
        }, f"OffsetFetch with require_stable answered {stable} while the commit was pending"
        assert outcome["error"] == kw.ERROR_COORDINATOR_NOT_AVAILABLE, outcome
        # Failed, so dropped: the previous offset stays.
        for require_stable in (False, True):
            assert offset_fetch(coordinator.bootstrap, group, topic, require_stable) == (0, 5)
    finally:
        for nd in followers:
            nd.cont()

    # Once the followers are back, commits go through again.
    def commit_and_fetch():
        bootstrap = cluster.node(coordinator_of(cluster, group)).bootstrap
        return offset_commit(bootstrap, group, topic, 12) == 0 and offset_fetch(bootstrap, group, topic, True) == (0, 12)

    cluster.wait_for("a commit after the followers are back", commit_and_fetch, timeout=40, interval=0.5)


def test_offsets_topic_waits_for_its_replication_factor(request, tmp_path, topic):
    # Default offsets.topic.replication.factor (3). Two of the three voters form a quorum, so
    # nodes 1 and 2 run a cluster of two brokers while node 3 has not started yet.
    cluster = Cluster(3, tmp_path / "cluster", ["group.initial.rebalance.delay.ms=0"])
    request.node._runnel_nodes = cluster.nodes
    first, third = cluster.nodes[:2], cluster.node(3)
    bootstrap = cluster.bootstrap_of(first)
    consumer = None
    try:
        for nd in first:
            nd.spawn()
        for nd in first:
            nd.wait_healthy()
        cluster.wait_for("two live brokers", lambda: len(cluster.node(1).metadata([]).brokers) == 2)
        a = util.admin(bootstrap)
        a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=2)])[topic].result(timeout=20)
        util.wait_for_partitions(bootstrap, topic, 1)
        util.produce_ok(bootstrap, topic, [(b"k", str(i).encode()) for i in range(3)])

        group = f"g-{topic}"
        for _ in range(10):
            for nd in first:
                error, _ = find_coordinator(nd.bootstrap, group)
                assert error == kw.ERROR_COORDINATOR_NOT_AVAILABLE, (
                    f"FindCoordinator answered {error} from node {nd.node_id} with 2 of 3 brokers live"
                )
            time.sleep(0.2)
        md = cluster.node(1).metadata([OFFSETS_TOPIC])
        assert md.topics[OFFSETS_TOPIC].error != 0, f"{OFFSETS_TOPIC} exists: {md.topics[OFFSETS_TOPIC]}"

        # A consumer started now keeps looking for its coordinator...
        consumer = Consumer(member_conf(bootstrap, group))
        consumer.subscribe([topic])
        assert not [m for m in consumer.consume(num_messages=10, timeout=2) if m.error() is None]

        # ... and finds it once the third broker is up; the offsets topic has three replicas.
        third.start()
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            got += [m.value() for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
        assert sorted(got) == [b"0", b"1", b"2"], f"the group consumed {got} after the third broker started"
        md = cluster.node(3).metadata([OFFSETS_TOPIC])
        partitions = md.topics[OFFSETS_TOPIC].partitions
        assert partitions and all(len(p.replicas) == 3 for p in partitions.values()), md.topics[OFFSETS_TOPIC]
    finally:
        if consumer is not None:
            consumer.close()
        cluster.close()
