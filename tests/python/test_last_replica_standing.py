"""The last replica standing (Kafka's KIP-966 problem), with real node processes.

RF=3, min.insync.replicas=2: one follower stops, records are acknowledged by the leader and
the other follower, then that follower stops too and the leader shrinks the ISR to itself.
The leader is SIGKILLed and comes back without what it had: an empty data dir (a replaced
disk) or log files cut to nothing (power loss before any fsync). It must not lead again: the
follower that left the ISR last (an eligible leader replica) does, and every acknowledged
record stays readable.

Node 1 is the controller quorum alone; nodes 2-4 are brokers only, so stopping brokers never
costs the quorum.
"""

from __future__ import annotations

import shutil
import time

import pytest

import util
from cluster import SESSION_TIMEOUT_S, Cluster
from conftest import running

pytestmark = pytest.mark.timeout(180)

CONFIG = [
    "replica.lag.time.max.ms=1500",
    "offsets.topic.replication.factor=1",
    # The check of who leads after the restart must not race the preferred-leader election.
    "auto.leader.rebalance.enable=false",
]
RECORDS = 200


@pytest.fixture
def split_cluster(request, tmp_path):
    yield from running(request, Cluster(4, tmp_path / "cluster", CONFIG, controllers=1))


def partition(cluster: Cluster, node_id: int, topic: str):
    return cluster.node(node_id).metadata([topic]).topics[topic].partitions[0]


def batch(tag: str) -> list[tuple[bytes, bytes]]:
    return [(f"{tag}-{i}".encode(), f"{tag}-{i}".encode()) for i in range(RECORDS)]


@pytest.mark.parametrize("loss", ["empty-disk", "lost-tail"])
def test_last_isr_member_without_its_data_does_not_lead_again(split_cluster, topic, loss):
    cluster = split_cluster
    brokers = [cluster.node(i) for i in (2, 3, 4)]
    bootstrap = cluster.bootstrap_of(brokers)
    created = util.cli("topic", "create", topic, "-p", "1", "-r", "3", "-c", "min.insync.replicas=2", "-b", bootstrap)
    assert created.returncode == 0, created.stderr
    p = cluster.wait_for(
        "a leader with the full ISR",
        lambda: (p := partition(cluster, 2, topic)).leader >= 0 and sorted(p.isr) == [2, 3, 4] and p,
    )
    leader = cluster.node(p.leader)
    last, first = (cluster.node(r) for r in p.replicas if r != p.leader)
    on_leader = cluster.bootstrap_of([leader])

    acked = util.produce_ok(on_leader, topic, batch("a"))
    first.stop_signal()
    both = sorted([leader.node_id, last.node_id])
    cluster.wait_for(f"the ISR to shrink to {both}", lambda: sorted(partition(cluster, leader.node_id, topic).isr) == both)
    acked += util.produce_ok(on_leader, topic, batch("b"))
    last.stop_signal()
    cluster.wait_for(
        "the ISR to shrink to the leader", lambda: partition(cluster, leader.node_id, topic).isr == [leader.node_id]
    )
    # acks=1 reaches the leader alone: its log grows past what 3 holds, none of it promised.
    util.produce_ok(on_leader, topic, batch("c"), acks="1")

    leader.kill()
    if loss == "empty-disk":
        shutil.rmtree(leader.data_dir)
    else:
        logs = list(leader.data_dir.glob(f"{topic}-0/*.log"))
        assert logs, f"no log files for {topic}-0 in {leader.data_dir}"
        for f in logs:
            f.write_bytes(b"")
    # The controller fences the killed leader; the partition has no live ISR member.
    time.sleep(SESSION_TIMEOUT_S + 1)
    leader.start()
    time.sleep(2)
    last.cont()
    first.cont()

    seen = util.consume(bootstrap, topic, expected=len(acked), timeout=60)
    have = {m.value for m in seen}
    lost = [d.value for d in acked if d.value not in have]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost, e.g. {lost[:3]}"
    p = cluster.wait_for("a leader", lambda: (p := partition(cluster, last.node_id, topic)).leader >= 0 and p)
    assert p.leader == last.node_id, f"the eligible replica {last.node_id} should lead, not {p.leader}"
    # The restarted broker rejoins by copying from the new leader.
    cluster.wait_for(
        "the ISR back to three",
        lambda: sorted(partition(cluster, last.node_id, topic).isr) == [2, 3, 4],
        timeout=40,
    )
