"""A wall-clock jump on a leader, with real node processes: node 1 runs under libfaketime
(Debian's `faketime` package, which `make test` installs), and the test steps its wall clock an
hour back, then freezes a follower (SIGSTOP, short of the session timeout, so the controller
keeps it unfenced). The leader's ISR lag timers run on the monotonic clock, so it still drops
the frozen follower after replica.lag.time.max.ms. With wall-clock timers the follower's "last
caught up" lies an hour in the leader's future and it stays in the ISR for that hour, which
blocks every acks=all produce to the partition.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

import util
from cluster import Cluster
from conftest import running

pytestmark = pytest.mark.timeout(150)

# Debian installs it under its multiarch directory (x86_64-linux-gnu, aarch64-linux-gnu, ...).
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
JUMP_S = -3600
CONFIG = [
    "replica.lag.time.max.ms=2000",
    # Long, so only the leader's lag timer can take the frozen follower out of the ISR.
    "broker.session.timeout.ms=60000",
    "auto.leader.rebalance.enable=false",
]
PARTITIONS = 3
SHRINK_TIMEOUT_S = 20.0


@pytest.fixture
def cluster_with_fake_clock(request, tmp_path):
    if LIBFAKETIME is None:
        pytest.fail("libfaketime is not installed (make test installs Debian's faketime)")
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    cluster = Cluster(3, tmp_path / "cluster", CONFIG)
    cluster.node(1).extra_env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        # Read the file on every call, so the jump takes effect at once.
        "FAKETIME_NO_CACHE": "1",
        # Only the wall clock jumps, as an NTP step does; the monotonic clock never does.
        "DONT_FAKE_MONOTONIC": "1",
    }
    for c in running(request, cluster):
        yield c, clock


def led_by_node_1(cluster: Cluster, topic: str) -> dict[int, list[int]]:
    md = cluster.node(1).metadata([topic]).topics[topic]
    return {p: sorted(pm.isr) for p, pm in md.partitions.items() if pm.leader == 1}


def log_stamp(line: str) -> float | None:
    try:
        return datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def test_a_wall_clock_step_back_on_the_leader_does_not_keep_a_frozen_follower_in_sync(
    cluster_with_fake_clock, topic
):
    cluster, clock = cluster_with_fake_clock
    created = util.cli("topic", "create", topic, "-p", str(PARTITIONS), "-r", "3", "-b", cluster.bootstrap)
    assert created.returncode == 0, created.stderr
    led = cluster.wait_for(
        "node 1 to lead a partition with the full ISR",
        lambda: (isrs := led_by_node_1(cluster, topic)) and all(isr == [1, 2, 3] for isr in isrs.values()) and isrs,
        timeout=30,
    )
    partition = min(led)
    util.produce_ok(cluster.node(1).bootstrap, topic, [(b"k", b"before")] * 10, partition=partition)

    clock.write_text(f"{JUMP_S:+d}\n")
    time.sleep(1.0)  # the followers fetch under the new clock
    stepped_at = time.time()
    frozen = cluster.node(2)
    frozen.stop_signal()
    try:
        # Records the frozen follower does not fetch; acks=1, since acks=all waits for it.
        util.produce_ok(cluster.node(1).bootstrap, topic, [(b"k", b"after")] * 10, partition=partition, acks="1")
        cluster.wait_for(
            f"node 1 to drop the frozen node 2 from the ISR of partition {partition}",
            lambda: led_by_node_1(cluster, topic).get(partition) == [1, 3],
            timeout=SHRINK_TIMEOUT_S,
        )
    finally:
        frozen.cont()

    # The step really reached node 1: the line asking for the shrink is stamped an hour back.
    asked = [
        stamp
        for line in cluster.node(1).log_path.read_text(errors="replace").splitlines()
        if "asking the controller to change the ISR" in line and (stamp := log_stamp(line)) is not None
    ]
    assert asked and min(asked) < stepped_at + JUMP_S / 2, (
        f"node 1's clock did not step back: its ISR requests are stamped {asked}, the step was at {stepped_at}"
    )
