"""Compacted partitions re-replicate: a follower that misses records while its leader's cleaner
removes whole batches must take the batches the leader still has across the offset gaps (as
Kafka's followers do), reach the leader's log end and rejoin the ISR. Checked on an RF=3
compacted topic (the follower resumed after SIGSTOP, or SIGKILLed and restarted) and on
__consumer_offsets (many commits of one group).

The logs are read from the nodes' data directories: the leader's must really have a gap where
the follower resumes fetching, and the follower's copy must end where the leader's does and
hold the latest value of every key.
"""

from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

import kafkawire as kw
import util
from cluster import Cluster, ClusterNode
from conftest import three_node_cluster

pytestmark = pytest.mark.timeout(150)

CLUSTER_CONFIG = [
    # An eager cleaner, so the leader compacts while the follower is stopped.
    "log.cleaner.backoff.ms=200",
    "log.cleaner.min.cleanable.ratio=0.01",
    # The stopped follower leaves the ISR soon, so the high watermark (up to which the leader
    # cleans) moves on without it.
    "replica.lag.time.max.ms=2000",
    "offsets.topic.num.partitions=1",
    "offsets.topic.replication.factor=3",
    "group.initial.rebalance.delay.ms=0",
]
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
}
KEYS = [f"key-{i}".encode() for i in range(8)]
ROUNDS_BEFORE = 5  # replicated everywhere before the follower stops
ROUNDS_MISSED = 150  # about 40 segments the leader cleans while the follower is stopped
COMMITS_MISSED = 1500
OFFSETS_TOPIC = "__consumer_offsets"
CATCH_UP_TIMEOUT_S = 30.0
# The size of a batch header up to and including lastOffsetDelta.
LAST_OFFSET_DELTA_END = 27


@pytest.fixture
def cluster(request, tmp_path):
    yield from three_node_cluster(request, tmp_path / "cluster", CLUSTER_CONFIG)


# --- the logs on disk -------------------------------------------------------------------


def scan_log(node: ClusterNode, topic: str, partition: int = 0) -> tuple[list[tuple[int, int]], int]:
    """The (base offset, last offset) of every whole batch in the partition's segments, in
    order, and the log end offset (an empty active segment's base counts). Raises OSError
    when the cleaner swaps a file under the scan; callers retry."""
    batches = []
    log_end = 0
    for seg in sorted((node.data_dir / f"{topic}-{partition}").glob("*.log"), key=lambda p: int(p.stem)):
        log_end = max(log_end, int(seg.stem))
        data = seg.read_bytes()
        pos = 0
        while pos + LAST_OFFSET_DELTA_END <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            if pos + 12 + length > len(data):
                break  # being written
            (delta,) = struct.unpack_from(">i", data, pos + 23)
            batches.append((base, base + delta))
            log_end = max(log_end, base + delta + 1)
            pos += 12 + length
    return batches, log_end


def on_disk(read, *args):
    """read(*args), again when the cleaner swaps or deletes a file under it (bounded)."""
    for _ in range(50):
        try:
            return read(*args)
        except OSError:
            time.sleep(0.1)
    return read(*args)


def latest_per_key(node: ClusterNode, topic: str, partition: int = 0) -> dict[bytes, tuple[int, bytes | None]]:
    """Key -> (offset, value) of the last record of each key in the partition's segments."""
    latest = {}
    for seg in sorted((node.data_dir / f"{topic}-{partition}").glob("*.log"), key=lambda p: int(p.stem)):
        for offset, rec in kw.decode_batches(seg.read_bytes()):
            latest[rec.key] = (offset, rec.value)
    return latest


def read_to_end(bootstrap: str, topic: str, timeout: float = 20.0) -> list[util.Consumed]:
    """Every record of partition 0 from the log start to the high watermark."""
    c = util.consumer(bootstrap)
    out: list[util.Consumed] = []
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, low)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (not out or out[-1].offset < high - 1):
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() is None:
                    out.append(util.Consumed(m.key(), m.value(), m.headers(), m.partition(), m.offset(), 0))
    finally:
        c.close()
    assert out and out[-1].offset == high - 1, f"read up to {out[-1].offset if out else None}, high watermark {high}"
    return out


def first_batch_from(batches: list[tuple[int, int]], offset: int) -> tuple[int, int] | None:
    """The batch a fetch at `offset` starts with: the first whose last offset >= `offset`."""
    return next((b for b in batches if b[1] >= offset), None)


# --- the cluster's view -----------------------------------------------------------------


def partition_meta(node: ClusterNode, topic: str, partition: int = 0):
    return node.metadata([topic]).topics[topic].partitions[partition]


def pick_follower(cluster: Cluster, topic: str) -> tuple[ClusterNode, ClusterNode]:
    """(leader, a follower that is not the active controller) once the ISR is complete."""
    pm = cluster.wait_for(
        f"{topic} led with all three replicas in sync",
        lambda: (pm := partition_meta(cluster.nodes[0], topic)).leader >= 0 and len(pm.isr) == 3 and pm,
    )
    controller = cluster.active_controller()
    follower = next(r for r in pm.replicas if r not in (pm.leader, controller))
    return cluster.node(pm.leader), cluster.node(follower)


def in_sync_everywhere(leader: ClusterNode, topic: str) -> bool:
    isr = sorted(partition_meta(leader, topic).isr)
    status = leader.status() or {}
    under = [p for p in status.get("under_replicated_partitions", []) if p["topic"] == topic]
    return isr == [1, 2, 3] and not under


def wait_isr_without(cluster: Cluster, leader: ClusterNode, follower: ClusterNode, topic: str) -> None:
    cluster.wait_for(
        f"node {follower.node_id} out of the ISR of {topic}",
        lambda: follower.node_id not in partition_meta(leader, topic).isr,
        timeout=20,
    )


def wait_caught_up(cluster: Cluster, leader: ClusterNode, follower: ClusterNode, topic: str) -> int:
    """Waits until the ISR is complete again and the follower's log ends where the leader's
    does; returns that log end offset."""

    def caught_up():
        _, leader_end = scan_log(leader, topic)
        _, follower_end = scan_log(follower, topic)
        assert follower_end == leader_end, f"follower ends at {follower_end}, leader at {leader_end}"
        assert in_sync_everywhere(leader, topic), f"ISR {partition_meta(leader, topic).isr}"
        return leader_end

    return cluster.wait_for(
        f"node {follower.node_id} caught up with node {leader.node_id} on {topic} and back in the ISR",
        caught_up,
        timeout=CATCH_UP_TIMEOUT_S,
    )


def wait_gap_at(cluster: Cluster, leader: ClusterNode, topic: str, stopped_at: int, reached: int) -> tuple[int, int]:
    """Waits until the leader's cleaner removed every batch from `stopped_at` (the follower's
    log end when it stopped) to `reached` (the leader's log end once the follower was out of
    the ISR: a fetch in flight at the stop may still bring that much), so the follower's
    next fetch answers with a batch past a gap; returns that batch."""

    def gap():
        batches, _ = scan_log(leader, topic)
        first = first_batch_from(batches, stopped_at)
        return first is not None and first[0] > reached and first

    return cluster.wait_for(f"the leader's cleaner removing offsets {stopped_at} to {reached}", gap, timeout=30)


def resume(follower: ClusterNode, how: str) -> None:
    if how == "sigcont":
        follower.cont()
    else:
        follower.kill()
        follower.start()


# --- tests --------------------------------------------------------------------------------


def produce_rounds(p, topic: str, first: int, rounds: int, expected: dict) -> None:
    """Every key once per round, one flush (so about one batch) per round; records the
    latest (offset, value) of each key in `expected`."""
    for r in range(first, first + rounds):
        records = [(k, f"{k.decode()}-round-{r}-".encode() * 3) for k in KEYS]
        delivered, errors = util.produce(p, topic, records, partition=0)
        assert not errors, errors[:3]
        for d in delivered:
            if d.key not in expected or expected[d.key][0] < d.offset:
                expected[d.key] = (d.offset, d.value)


@pytest.mark.parametrize("resume_by", ["sigcont", "restart"])
def test_follower_catches_up_across_compacted_gaps(cluster, topic, resume_by):
    a = util.admin(cluster.bootstrap)
    a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3, config=TOPIC_CONFIG)])[topic].result(
        timeout=20
    )
    util.wait_for_partitions(cluster.bootstrap, topic, 1)
    leader, follower = pick_follower(cluster, topic)
    expected: dict[bytes, tuple[int, bytes]] = {}
    p = util.producer(leader.bootstrap)
    produce_rounds(p, topic, 0, ROUNDS_BEFORE, expected)
    stopped_at = wait_caught_up(cluster, leader, follower, topic)
    assert stopped_at == ROUNDS_BEFORE * len(KEYS)

    follower.stop_signal()
    # One round acknowledged by the leader alone makes the follower lag, so it leaves the ISR.
    produce_rounds(util.producer(leader.bootstrap, acks=1), topic, ROUNDS_BEFORE, 1, expected)
    wait_isr_without(cluster, leader, follower, topic)
    _, reached = on_disk(scan_log, leader, topic)
    produce_rounds(p, topic, ROUNDS_BEFORE + 1, ROUNDS_MISSED, expected)
    gap = wait_gap_at(cluster, leader, topic, stopped_at, reached)

    resume(follower, resume_by)
    started = time.monotonic()
    log_end = wait_caught_up(cluster, leader, follower, topic)
    caught_up_s = time.monotonic() - started
    assert log_end == (ROUNDS_BEFORE + 1 + ROUNDS_MISSED) * len(KEYS)

    # The follower's copy: the latest value of every key at its original offset.
    assert on_disk(latest_per_key, follower, topic) == expected, f"gap fetched: {gap}, caught up in {caught_up_s:.1f} s"

    if resume_by == "restart":
        # A log with gaps recovers as it is: the follower restarts at the same log end.
        follower.kill()
        follower.start()
        assert wait_caught_up(cluster, leader, follower, topic) == log_end
        assert on_disk(latest_per_key, follower, topic) == expected

    # Clients see the compacted view: offsets only grow, every key's latest value is there.
    got = read_to_end(cluster.bootstrap, topic)
    offsets = [m.offset for m in got]
    assert offsets == sorted(set(offsets)), "offsets repeat or go backwards"
    latest = {}
    for m in got:
        latest[m.key] = (m.offset, m.value)
    assert latest == expected


def test_offsets_topic_follower_catches_up_across_compacted_gaps(cluster, topic):
    util.create_topic(cluster.bootstrap, topic, 1)
    group = f"g-{topic}"
    c = util.consumer(cluster.bootstrap, group_id=group)
    try:

        def commit(offset: int, asynchronous: bool = False) -> None:
            c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=asynchronous)

        # The first commit creates __consumer_offsets.
        cluster.wait_for("a first offset commit", lambda: commit(1) or True, timeout=30)
        res = ConfigResource(
            ConfigResource.Type.TOPIC,
            OFFSETS_TOPIC,
            incremental_configs=[ConfigEntry("segment.bytes", "4096", incremental_operation=AlterConfigOpType.SET)],
        )
        a = util.admin(cluster.bootstrap)  # kept alive until the future resolves
        a.incremental_alter_configs([res])[res].result(timeout=15)
        leader, follower = pick_follower(cluster, OFFSETS_TOPIC)
        for i in range(2, 50):
            commit(i)
        stopped_at = wait_caught_up(cluster, leader, follower, OFFSETS_TOPIC)

        follower.stop_signal()
        commit(50, asynchronous=True)  # held by the leader until the follower leaves the ISR
        wait_isr_without(cluster, leader, follower, OFFSETS_TOPIC)
        _, reached = on_disk(scan_log, leader, OFFSETS_TOPIC)
        last = 50 + COMMITS_MISSED
        for i in range(51, last):
            commit(i, asynchronous=True)
            c.poll(0)

        def final_commit():
            try:
                commit(last)
            except KafkaException:
                return False
            return True

        cluster.wait_for("the last offset commit", final_commit, timeout=30)
        gap = wait_gap_at(cluster, leader, OFFSETS_TOPIC, stopped_at, reached)

        follower.cont()
        started = time.monotonic()
        wait_caught_up(cluster, leader, follower, OFFSETS_TOPIC)
        caught_up_s = time.monotonic() - started

        # Both copies hold the same latest commit record per key.
        want = on_disk(latest_per_key, leader, OFFSETS_TOPIC)
        assert on_disk(latest_per_key, follower, OFFSETS_TOPIC) == want, f"gap fetched: {gap}, caught up in {caught_up_s:.1f} s"
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)
        assert [tp.offset for tp in committed] == [last]
    finally:
        c.close()
