"""A standard Kafka quick start, run unchanged against a node: a producer (acks=all,
idempotent) sends JSON values and a consumer in group `my-group` reads them from the earliest
offset with manual commits — once with kafka-python, once with confluent-kafka. The programs
are the standalone scripts in `quickstart/`, run with the venv's python; they take only the
bootstrap address, the topic and the record count from argv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

import util
from group_helpers import describe_rows, log_ends, run_cli_ok

SCRIPTS = Path(__file__).resolve().parent / "quickstart"
COUNT = 200
PARTITIONS = 3


def run_script(name: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"{name} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


@pytest.mark.parametrize("client", ["kafka_python", "confluent"])
def test_quickstart(node_factory, topic, client):
    node = node_factory(extra_config=["group.initial.rebalance.delay.ms=0"])
    util.create_topic(node.bootstrap, topic, PARTITIONS)

    run_script(f"{client}_producer.py", node.bootstrap, topic, str(COUNT))
    out = run_script(f"{client}_consumer.py", node.bootstrap, topic, str(COUNT)).stdout

    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    ns = [r["value"]["n"] for r in records]
    assert sorted(ns) == list(range(COUNT)), (
        f"consumed {len(ns)} records, {len(set(ns))} distinct; missing: {sorted(set(range(COUNT)) - set(ns))[:10]}"
    )
    assert all(r["value"]["msg"] == f"hello {r['value']['n']}" for r in records)
    # The idempotent producer's retries must not have written any record twice.
    ends = log_ends(node.bootstrap, topic, PARTITIONS)
    assert sum(ends.values()) == COUNT, f"log end offsets {ends} hold more than the {COUNT} records sent"
    # The producers key every record, so each partition gets some: a client commits only the
    # partitions it consumed from, and librdkafka's sticky partitioner would otherwise put all
    # unkeyed records of a fast run into one partition.
    assert all(end > 0 for end in ends.values()), f"a partition got no records: {ends}"

    # The committed offsets are the log end offsets: through OffsetFetch (confluent's
    # committed()) ...
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "my-group", "log_level": util.LOG_LEVEL})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in committed} == ends
    # ... and as the CLI shows them: LAG 0 everywhere.
    described = run_cli_ok("group", "describe", "my-group", "--bootstrap-server", node.bootstrap).stdout
    rows = describe_rows(described)
    assert {(r["TOPIC"], int(r["PARTITION"])) for r in rows} == {(topic, p) for p in range(PARTITIONS)}, described
    for r in rows:
        p = int(r["PARTITION"])
        assert (r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) == (str(ends[p]), str(ends[p]), "0"), described
