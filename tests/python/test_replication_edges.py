"""Replication edge cases with real node processes:

- retention on a replicated partition deletes only below the high watermark (as Kafka does):
  a segment the followers have not fetched yet stays on the leader;
- a follower catching up on several partitions of one leader gets all of them at once, not
  one after the other: its requests rotate the partition order, as Kafka's do;
- a follower whose log restarts at the leader's log start (Kafka's `truncateFullyAndStartAt`)
  forgets the producer state of the records it skipped, on disk too, so as leader it does
  not reject a producer's next batch as out of order;
- a new leader whose high watermark is below the offset where its leader epoch began answers
  ListOffsets with OFFSET_NOT_AVAILABLE until its followers catch up (Kafka's KIP-207), instead
  of a high watermark that may be lower than the one its predecessor served;
- a replica that fails to become leader (a full disk, injected through `runnel-faulty`'s
  failpoints; any other I/O error takes the data dir offline, see test_disk_fault.py) retries
  until it succeeds, even when no new metadata comes to trigger it.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic, OffsetSpec

import kafkawire as kw
import util
from cluster import SESSION_TIMEOUT_S, Cluster
from conftest import running, three_node_cluster
from test_disk_fault import faulty_bin, set_failpoint

pytestmark = pytest.mark.timeout(150)

SEGMENT_BYTES = 16 * 1024
# Followers stay in the ISR while frozen: neither the leader's lag timer nor the controller's
# session timeout may drop them during the test, or the high watermark would move on.
CONFIG = [
    "replica.lag.time.max.ms=120000",
    "broker.session.timeout.ms=120000",
    "log.retention.check.interval.ms=100",
]


@pytest.fixture
def slow_fencing_cluster(request, tmp_path):
    yield from three_node_cluster(request, tmp_path / "cluster", CONFIG)


@pytest.fixture
def dedicated_controller_cluster(request, tmp_path):
    """Node 1 is the controller quorum alone, nodes 2-4 brokers: stopping brokers never costs
    the quorum."""
    yield from running(request, Cluster(4, tmp_path / "cluster", CONFIG, controllers=1))


def watermarks(admin, topic: str) -> tuple[int, int]:
    """(log start offset, high watermark) of partition 0, with ListOffsets."""
    tp = TopicPartition(topic, 0)
    start, hw = (
        admin.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=15).offset
        for spec in (OffsetSpec.earliest(), OffsetSpec.latest())
    )
    return start, hw


def test_retention_keeps_segments_followers_have_not_fetched(slow_fencing_cluster, topic):
    cluster = slow_fencing_cluster
    admin = util.admin(cluster.bootstrap)
    admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=1,
                replication_factor=3,
                config={"segment.bytes": str(SEGMENT_BYTES), "retention.bytes": str(2 * SEGMENT_BYTES)},
            )
        ]
    )[topic].result(timeout=20)
    leader_id = cluster.wait_for(
        "a leader with the full ISR",
        lambda: (p := cluster.node(1).metadata([topic]).topics[topic].partitions[0]).leader >= 0
        and len(p.isr) == 3
        and p.leader,
    )
    leader = cluster.node(leader_id)
    followers = [nd for nd in cluster.nodes if nd.node_id != leader_id]
    on_leader = cluster.bootstrap_of([leader])
    leader_admin = util.admin(on_leader)

    for f in followers:
        f.stop_signal()
    # acks=1: the leader acknowledges what only it holds; ten segments' worth, far past
    # retention.bytes, all above the high watermark the frozen followers hold at 0.
    records = [(f"k{i}".encode(), bytes(1024)) for i in range(10 * SEGMENT_BYTES // 1024)]
    # Small batches, so segments roll at segment.bytes.
    util.produce_ok(on_leader, topic, records, partition=0, acks=1, batch_size=4096)

    # Several retention passes happen in this time. The frozen followers hold the high
    # watermark at 0, so every segment is above it and none may go (nor may the watermark
    # be pushed up to a new log start, as if the followers had the records).
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        start, hw = watermarks(leader_admin, topic)
        assert (start, hw) == (0, 0), f"retention deleted segments above the high watermark: log start {start}, HW {hw}"
        time.sleep(0.2)

    for f in followers:
        f.cont()
    # The followers copy everything; then the watermark moves and retention deletes as usual.
    cluster.wait_for(
        "the ISR back to 3 and the high watermark at the log end",
        lambda: len(leader.metadata([topic]).topics[topic].partitions[0].isr) == 3
        and watermarks(leader_admin, topic)[1] == len(records),
        timeout=40,
    )
    start, hw = cluster.wait_for(
        "retention to delete below the high watermark",
        lambda: (w := watermarks(leader_admin, topic))[0] > 0 and w,
        timeout=20,
    )
    assert start <= hw == len(records)


BACKLOG_BATCHES = 1500


def log_bytes(node, topic: str, partition: int) -> int:
    return sum(f.stat().st_size for f in (node.data_dir / f"{topic}-{partition}").glob("*.log"))


def test_follower_catches_up_on_every_partition_at_once(request, tmp_path, topic):
    # One batch per follower fetch response: the leader fills responses in request order, so
    # with a fixed order partition 1 would get nothing until partition 0 had caught up.
    gen = three_node_cluster(request, tmp_path / "cluster", ["replica.fetch.response.max.bytes=1"])
    cluster = next(gen)
    try:
        admin = util.admin(cluster.bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=2, replica_assignment=[[1, 2], [1, 2]])])[topic].result(timeout=20)
        cluster.wait_for(
            "node 1 leading both partitions with node 2 in sync",
            lambda: all(
                p.leader == 1 and sorted(p.isr) == [1, 2] for p in cluster.node(1).metadata([topic]).topics[topic].partitions.values()
            ),
        )
        follower = cluster.node(2)
        follower.stop_signal()
        records = [(None, b"x" * 100)] * BACKLOG_BATCHES
        for partition in (0, 1):
            util.produce_ok(cluster.bootstrap_of([cluster.node(1)]), topic, records, partition=partition, acks=1, batch_num_messages=1)
        leader_sizes = [log_bytes(cluster.node(1), topic, p) for p in (0, 1)]
        assert all(s > 0 for s in leader_sizes), leader_sizes
        follower.cont()

        both_in_progress = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sizes = [log_bytes(follower, topic, p) for p in (0, 1)]
            if sizes == leader_sizes:
                break
            both_in_progress |= all(0 < s < total for s, total in zip(sizes, leader_sizes))
            time.sleep(0.02)
        else:
            raise AssertionError(f"follower not caught up within 60 s: {sizes} of {leader_sizes}")
        assert both_in_progress, "the follower copied one partition after the other, never both at once"
    finally:
        gen.close()


def produce_raw(bootstrap: str, topic: str, batch: bytes) -> kw.PartitionProduceResult:
    (result,) = kw.parse_produce_v3_response(kw.roundtrip(bootstrap, kw.produce_v3_request(11, topic, 0, batch)))[1]
    return result


def idempotent_batch(pid: int, seq: int, n: int) -> bytes:
    return kw.idempotent_record_batch([kw.Record(None, f"r{seq + i}".encode()) for i in range(n)], pid, 0, seq)


def test_follower_reset_to_leader_log_start_drops_producer_snapshots(request, tmp_path, topic):
    gen = three_node_cluster(request, tmp_path / "cluster", ["log.retention.check.interval.ms=100"])
    cluster = next(gen)
    try:
        leader, follower = cluster.node(1), cluster.node(2)
        on_leader = cluster.bootstrap_of([leader])
        admin = util.admin(cluster.bootstrap)
        config = {"segment.bytes": str(SEGMENT_BYTES), "retention.bytes": str(2 * SEGMENT_BYTES)}
        admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[1, 2]], config=config)])[topic].result(timeout=20)

        def partition():
            return cluster.node(3).metadata([topic]).topics[topic].partitions[0]

        cluster.wait_for("node 1 leading with node 2 in sync", lambda: partition().leader == 1 and sorted(partition().isr) == [1, 2])
        init = kw.parse_init_producer_id_v0_response(kw.roundtrip(on_leader, kw.init_producer_id_v0_request(7)))
        pid = init.producer_id
        assert produce_raw(on_leader, topic, idempotent_batch(pid, 0, 5)).error_code == 0
        # A clean stop leaves the follower a producer snapshot at offset 5 (sequence 4).
        follower.stop()
        cluster.wait_for("node 2 out of the ISR", lambda: partition().isr == [1])
        assert produce_raw(on_leader, topic, idempotent_batch(pid, 5, 5)).error_code == 0
        # Retention then deletes the producer's batches, and more, before the follower is back.
        filler = [(None, bytes(1024)) for _ in range(10 * SEGMENT_BYTES // 1024)]
        util.produce_ok(on_leader, topic, filler, partition=0, acks=1, batch_size=4096)
        leader_admin = util.admin(on_leader)
        log_start = cluster.wait_for(
            "retention past the producer's batches", lambda: (s := watermarks(leader_admin, topic)[0]) > 10 and s
        )

        follower.start()
        cluster.wait_for("node 2 back in sync", lambda: sorted(partition().isr) == [1, 2], timeout=40)
        assert "restarting its log at the leader's log start" in follower.log_path.read_text(errors="replace")
        snapshots = [int(s.name.split(".")[0]) for s in (follower.data_dir / f"{topic}-0").glob("*.snapshot")]
        assert all(s >= log_start for s in snapshots), f"stale producer snapshots {snapshots} below log start {log_start}"
        # A crash after the reset must not bring the stale state back either.
        follower.kill()
        follower.start()
        cluster.wait_for("node 2 back in sync after a crash", lambda: sorted(partition().isr) == [1, 2], timeout=40)

        leader.stop()
        cluster.wait_for("node 2 leading", lambda: partition().leader == 2)
        # Node 2 never saw sequences 5-9: to it the producer is unknown and may go on at 10,
        # as it may on any leader that kept its state.
        result = produce_raw(cluster.bootstrap_of([follower]), topic, idempotent_batch(pid, 10, 1))
        assert result.error_code == 0, f"produce after the reset failed with error {result.error_code}"
    finally:
        gen.close()


def test_failed_leader_transition_is_retried_in_a_quiet_cluster(request, tmp_path, topic):
    path = faulty_bin()
    if not path.is_file():
        pytest.skip(f"{path} is missing: build it with `make build-faulty`")
    cluster = Cluster(3, tmp_path / "cluster")
    for nd in cluster.nodes:
        nd.bin = path
    request.node._runnel_nodes = cluster.nodes
    try:
        cluster.start()
        old, new = cluster.node(1), cluster.node(2)
        admin = util.admin(cluster.bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[1, 2]])])[topic].result(timeout=20)

        def partition():
            return cluster.node(3).metadata([topic]).topics[topic].partitions[0]

        cluster.wait_for("node 1 leading with node 2 in sync", lambda: partition().leader == 1 and sorted(partition().isr) == [1, 2])
        # A new leader writes its epoch to the leader-epoch checkpoint; a full disk fails it.
        set_failpoint(new, "checkpoint-write", "return(enospc)")
        old.stop()
        cluster.wait_for("node 2 named the only leader", lambda: partition().leader == 2 and partition().isr == [2])
        cluster.wait_for(
            "node 2 failing to take the leadership",
            lambda: "cannot take the role the metadata gives this replica" in new.log_path.read_text(errors="replace"),
        )
        # Past node 1's session timeout the metadata stays as it is: only a retry helps now.
        time.sleep(SESSION_TIMEOUT_S + 1)
        set_failpoint(new, "checkpoint-write", "off")
        on_new = cluster.bootstrap_of([new])
        cluster.wait_for(
            "node 2 taking produce requests as leader",
            lambda: produce_raw(on_new, topic, kw.record_batch([kw.Record(None, b"after")])).error_code == 0,
            timeout=20,
        )
    finally:
        cluster.close()



def list_offsets_latest(node, topic: str, version: int) -> tuple[int, int]:
    """(error code, offset) of ListOffsets LATEST for partition 0, asked of `node` directly."""
    payload = kw.roundtrip(node.bootstrap, kw.list_offsets_request(1, version, topic, 0, -1))
    error, _, offset = kw.parse_list_offsets_response(payload, version)
    return error, offset


OFFSET_NOT_AVAILABLE = 78
LEADER_NOT_AVAILABLE = 5


def test_a_new_leader_hides_its_high_watermark_until_it_is_known(dedicated_controller_cluster, topic):
    cluster = dedicated_controller_cluster
    brokers = [cluster.node(i) for i in (2, 3, 4)]
    bootstrap = cluster.bootstrap_of(brokers)
    created = util.cli("topic", "create", topic, "-p", "1", "-r", "3", "-b", bootstrap)
    assert created.returncode == 0, created.stderr
    p = cluster.wait_for(
        "a leader with the full ISR",
        lambda: (p := cluster.node(2).metadata([topic]).topics[topic].partitions[0]).leader >= 0
        and len(p.isr) == 3
        and p,
    )
    leader, successor, frozen = (cluster.node(r) for r in p.replicas)
    util.produce_ok(leader.bootstrap, topic, [(b"k", b"committed")] * 10, partition=0)

    # The last replica stops fetching but stays in the ISR (long lag and session timeouts), so
    # the high watermark stays at 10 while the leader and its successor get 10 more records.
    frozen.stop_signal()
    try:
        util.produce_ok(leader.bootstrap, topic, [(b"k", b"acks=1")] * 10, partition=0, acks=1)
        cluster.wait_for(
            "the successor to hold all 20 records",
            lambda: log_bytes(successor, topic, 0) == log_bytes(leader, topic, 0),
            timeout=20,
        )
        assert list_offsets_latest(leader, topic, 5) == (0, 10)
        # A controlled shutdown hands the leadership to the successor: its epoch begins at 20,
        # its high watermark is the 10 it knew as a follower, and the frozen replica holds it.
        leader.terminate()
        cluster.wait_for(
            "the successor to lead",
            lambda: successor.metadata([topic]).topics[topic].partitions[0].leader == successor.node_id,
            timeout=30,
        )
        assert list_offsets_latest(successor, topic, 5)[0] == OFFSET_NOT_AVAILABLE
        # Clients before v5 do not know that code; Kafka answers them LEADER_NOT_AVAILABLE.
        assert list_offsets_latest(successor, topic, 3)[0] == LEADER_NOT_AVAILABLE
    finally:
        frozen.cont()
    # The frozen replica fetches from the new leader; the high watermark reaches the epoch
    # start and is served again.
    cluster.wait_for(
        "the new leader to serve its high watermark",
        lambda: list_offsets_latest(successor, topic, 5) == (0, 20),
        timeout=30,
    )
