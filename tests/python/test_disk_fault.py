"""A disk error on a partition leader (injected through the failpoints of `runnel-faulty`,
docs/robustness.md): the broker takes its data dir offline and answers KAFKA_STORAGE_ERROR,
the controller moves its leaderships and drops it from the ISRs, and an idempotent acks=all
producer that keeps writing through it loses nothing and duplicates nothing.

Two faults: every data write failing from some point on (a dead disk), and one failed
offset-index write after the batch itself was written (which used to count the batch as
appended, so the producer's retry wrote it twice)."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

import kafkawire as kw
import util
from cluster import Cluster
from conftest import running, runnel_bin

pytestmark = pytest.mark.timeout(180)

KAFKA_STORAGE_ERROR = 56
RECORDS = 3000
# Records acknowledged before the fault is injected.
BEFORE_FAULT = 500


def faulty_bin() -> Path:
    """`runnel-faulty` beside RUNNEL_BIN (make test builds both), or RUNNEL_FAULTY_BIN."""
    return Path(os.environ.get("RUNNEL_FAULTY_BIN", runnel_bin().parent / "runnel-faulty"))


@pytest.fixture
def faulty_cluster(request, tmp_path):
    path = faulty_bin()
    if not path.is_file():
        pytest.skip(
            f"{path} is missing: build it with "
            "`cargo build --release -p runnel --bin runnel-faulty --features failpoints` (make test does)"
        )
    c = Cluster(3, tmp_path / "cluster")
    for nd in c.nodes:
        nd.bin = path
    yield from running(request, c)


def set_failpoint(node, name: str, action: str) -> None:
    req = urllib.request.Request(
        f"http://{node.http_addr}/debug/failpoints/{name}", data=action.encode(), method="PUT"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def partition_state(cluster, topic, exclude=()):
    """(leader, isr) of partition 0 as a node outside `exclude` sees it."""
    for nd in cluster.nodes:
        if nd.node_id not in exclude:
            p = nd.metadata([topic]).topics[topic].partitions[0]
            return p.leader, sorted(p.isr)
    raise AssertionError("no node to ask")


@pytest.mark.parametrize(
    "failpoint,action",
    [("segment-write", "return(eio)"), ("offset-index-write", "1*return(eio)")],
)
def test_disk_error_on_leader_moves_leadership_without_loss_or_duplicates(faulty_cluster, topic, failpoint, action):
    cluster = faulty_cluster
    admin = util.admin(cluster.bootstrap)
    # An offset index entry for every batch, so the one-shot index fault hits the next append.
    config = {"min.insync.replicas": "2", "index.interval.bytes": "1"}
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3, config=config)])[topic].result(timeout=20)
    leader_id = cluster.wait_for(
        "a leader with the full ISR",
        lambda: (s := partition_state(cluster, topic))[0] > 0 and len(s[1]) == 3 and s[0],
    )
    leader = cluster.node(leader_id)

    p = util.producer(
        cluster.bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        batch_num_messages=20,
        message_timeout_ms=90_000,
        retry_backoff_ms=50,
    )
    acked: list[bytes] = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append(msg.value())

    def produce(values):
        for v in values:
            while True:
                try:
                    p.produce(topic, value=v, partition=0, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)

    values = [f"v-{i}".encode() for i in range(RECORDS)]
    produce(values[:BEFORE_FAULT])
    deadline = time.monotonic() + 30
    while len(acked) < BEFORE_FAULT and time.monotonic() < deadline:
        p.poll(0.1)
    assert len(acked) == BEFORE_FAULT, f"only {len(acked)} of the first {BEFORE_FAULT} acknowledged: {errors[:3]}"

    set_failpoint(leader, failpoint, action)
    produce(values[BEFORE_FAULT:])
    deadline = time.monotonic() + 100  # below pytest's timeout, so a stall fails readably
    while p.flush(1.0) > 0 and time.monotonic() < deadline:
        pass
    remaining = len(p)
    assert remaining == 0 and not errors, f"{remaining} records unacknowledged, {len(errors)} failed: {errors[:3]}"
    got = [c.value for c in util.consume(cluster.bootstrap, topic, expected=RECORDS, timeout=60)]
    dups = len(got) - len(set(got))
    assert dups == 0, f"{dups} duplicated records"
    lost = set(acked) - set(got)
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:3]}"
    assert got == values, "records out of order"

    # The leadership moved and the faulty broker left the ISR.
    cluster.wait_for(
        "a new leader without the faulty broker in the ISR",
        lambda: (s := partition_state(cluster, topic, exclude={leader_id}))[0] not in (-1, leader_id)
        and leader_id not in s[1],
        timeout=30,
    )
    # The faulty broker refuses writes with KAFKA_STORAGE_ERROR and says why in its log.
    batch = kw.record_batch([kw.Record(key=None, value=b"direct")])
    payload = kw.roundtrip(leader.bootstrap, kw.produce_v3_request(7, topic, 0, batch))
    (result,) = kw.parse_produce_v3_response(payload)[1]
    assert result.error_code == KAFKA_STORAGE_ERROR
    assert b"taking the data dir offline" in leader.log_path.read_bytes()
