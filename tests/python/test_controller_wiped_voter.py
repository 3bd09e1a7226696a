"""A controller voter whose data dir was wiped must not vote until it has caught up.

Raft assumes a voter never forgets its vote or its log. Node 2 is one of the majority (nodes
1 and 2) that commits a topic while node 3 is frozen; then nodes 1 and 2 die, node 2 comes
back with an empty data dir, and node 3 wakes up. If node 2 voted for node 3 as a fresh
node, node 3 (which never saw the topic) would become the active controller and, when node 1
returns, erase the topic from node 1's log too. With the rejoin rule, node 2 grants no vote
until it has caught up with an active controller, so no controller is elected until node 1
is back, and the topic survives everywhere.
"""

from __future__ import annotations

import shutil
import time

import pytest
from confluent_kafka.admin import NewTopic

import util
from conftest import three_node_cluster

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cluster(request, tmp_path):
    yield from three_node_cluster(request, tmp_path / "cluster")


def controller_view(node) -> tuple | None:
    """(raft_state, leader_id) as `node` reports it, or None if it does not answer."""
    status = node.status()
    if status is None:
        return None
    return status["controller"].get("raft_state"), status["controller"].get("leader_id")


def has_topic(node, topic: str) -> bool:
    meta = node.metadata([topic]).topics.get(topic)
    return meta is not None and meta.error == 0


def test_wiped_voter_does_not_elect_a_controller_without_committed_metadata(cluster, topic):
    n1, n2, n3 = (cluster.node(i) for i in (1, 2, 3))
    n3.stop_signal()
    admin = util.admin(cluster.bootstrap_of([n1, n2]))
    cluster.wait_for(
        f"topic {topic} created by nodes 1 and 2",
        lambda: admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=10)
        is None,
        timeout=40,
        interval=1.0,
    )
    for node in (n1, n2):
        cluster.wait_for(
            f"node {node.node_id} has applied {topic}",
            lambda node=node: has_topic(node, topic),
        )
    del admin

    n1.kill()
    n2.kill()
    shutil.rmtree(n2.data_dir)
    n2.spawn()
    n3.cont()

    # Several election timeouts (1-2 s each): node 3 asks node 2 for its vote again and again.
    elected = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for node in (n2, n3):
            view = controller_view(node)
            if view is not None and view[0] == "Leader":
                elected.add(node.node_id)
        time.sleep(0.2)

    n1.spawn()
    for node in (n1, n2, n3):
        cluster.wait_for(
            f"node {node.node_id} serves metadata with {topic}",
            lambda node=node: has_topic(node, topic),
            timeout=60,
            interval=0.5,
        )
    assert not elected, f"nodes {elected} became the active controller while node 1, which holds the committed topic, was down"
    assert "grants no vote" in n2.log_path.read_text()
    cluster.wait_for(
        "node 2 votes again",
        lambda: "votes again" in n2.log_path.read_text(),
        timeout=30,
    )
