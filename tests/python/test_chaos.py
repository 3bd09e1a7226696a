"""`runnel chaos` end to end: the real binary starts its own 3-node cluster, produces with
idempotent acks=all producers while a fault schedule kills, pauses and restarts nodes, then
reads everything back. Every schedule must lose, duplicate and reorder no acknowledged record.

Each run gets its own process group, so every node it started is killed at teardown even if
the run hangs or the test fails; ports come from a range of their own per xdist worker.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cluster import ports_free
from conftest import _die_with_parent, runnel_bin
from test_disk_fault import faulty_bin

# A run starts its cluster (seconds), produces for its duration (longer when the schedule
# needs it to restore every node), lets the cluster settle and reads back.
RUN_TIMEOUT_S = 120
# Seconds of load per faulty run.
LOAD_S = 15
SEED = 20251123
# Ports below the ephemeral range (where conftest's free_ports picks), split among workers.
PORT_RANGE = (11000, 30000)
# A node's ports are base + 100 * i + {0, 1, 552}, and + 2 for its private RPC port behind the
# link proxy of the schedules that cut links.
PORT_OFFSETS = (0, 1, 2, 552)
PORT_SPAN = 100 * 2 + 553

pytestmark = pytest.mark.timeout(RUN_TIMEOUT_S + 30)


def free_base_port(nodes: int = 3) -> int:
    """A base port whose Kafka, RPC and HTTP ports are free for every node, from this xdist
    worker's own slice of PORT_RANGE (so two workers never race for the same ports)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (PORT_RANGE[1] - PORT_RANGE[0]) // max(workers, 1)
    low = PORT_RANGE[0] + index * width
    for _ in range(500):
        base = random.randrange(low, low + width - PORT_SPAN)
        if ports_free([base + 100 * i + off for i in range(nodes) for off in PORT_OFFSETS]):
            return base
    pytest.fail(f"no base port with all of chaos's ports free in {low}..{low + width}")


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_chaos(
    tmp_path: Path, schedule: str, duration: int, *extra: str, binary: Path | None = None, seed: int = SEED,
    expect_exit: int = 0,
) -> tuple[dict | None, str]:
    """Runs `runnel chaos --json` (`binary`, default RUNNEL_BIN) to completion; returns the
    report (None unless it exits 0) and the stderr. Fails on another exit than `expect_exit`,
    a hang, or a node left running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    cmd = [
        str(binary or runnel_bin()), "chaos", "--schedule", schedule, "--seed", str(seed),
        "--duration", str(duration), "--json", "--base-port", str(free_base_port()),
        "--data-dir", str(tmp_path / "chaos"), *extra,
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=tmp_path, start_new_session=True, preexec_fn=_die_with_parent,
    )
    try:
        try:
            stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            stdout, stderr = proc.communicate(timeout=10)
            pytest.fail(f"runnel chaos --schedule {schedule} did not finish within {RUN_TIMEOUT_S} s\n"
                        f"stderr:\n{stderr[-4000:]}")
        leftovers = group_members(proc.pid)
        assert not leftovers, f"runnel chaos left processes running: {leftovers}"
    finally:
        kill_group(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    took = time.monotonic() - started
    assert proc.returncode == expect_exit, (
        f"runnel chaos --schedule {schedule} exited with {proc.returncode} after {took:.0f} s\n"
        f"stdout:\n{stdout[-6000:]}\nstderr:\n{stderr[-4000:]}"
    )
    return (json.loads(stdout) if proc.returncode == 0 else None), stderr


def assert_nothing_acknowledged_went_wrong(report: dict, schedule: str) -> None:
    totals = report["totals"]
    assert report["schedule"] == schedule
    assert report["passed"] is True
    assert totals["acked"] > 0, "nothing was acknowledged, so nothing was checked"
    assert totals["lost"] == 0, report["per_partition"]
    assert totals["duplicated"] == 0, report["per_partition"]
    assert totals["reordered"] == 0, report["per_partition"]
    assert len(report["per_partition"]) == report["partitions"]
    assert all(p["read_error"] is None for p in report["per_partition"]), report["per_partition"]
    # Every replica's batches below the high watermark are the leader's, byte for byte.
    for p in report["per_partition"]:
        assert p["replica_divergence"] == [], p
        assert p["replicas_compared"] >= 2, p
    # The side checks: they ran, and found nothing.
    compacted = report["compacted"]
    assert compacted["acked"] > 0 and compacted["read_error"] is None, compacted
    assert compacted["missing_keys"] == compacted["stale_keys"] == 0, compacted
    assert report["commits"]["acknowledged_commits"] > 0 and report["commits"]["lost"] == 0
    high_watermarks = report["high_watermarks_sampled"]
    assert high_watermarks["samples"] > 0 and high_watermarks["went_backwards"] == 0, high_watermarks
    assert report["committed_offsets_sampled"]["went_backwards"] == 0
    visible = report["consumed_stay_visible"]
    assert visible["seen"] > 0 and visible["vanished"] == visible["changed"] == 0, visible


def actions(report: dict) -> list[str]:
    return [f["action"] for f in report["faults"]]


def count(report: dict, prefix: str) -> int:
    return sum(a.startswith(prefix) for a in actions(report))


def test_chaos_without_faults_loses_nothing(tmp_path):
    report, stderr = run_chaos(tmp_path, "none", 5)
    assert_nothing_acknowledged_went_wrong(report, "none")
    assert report["idempotent"] is True
    assert report["totals"]["retry_duplicates"] == 0
    assert report["faults"] == []
    assert "acked" in stderr  # the progress lines


def test_chaos_without_idempotence_still_checks(tmp_path):
    report, _ = run_chaos(tmp_path, "none", 3, "--no-idempotence")
    assert_nothing_acknowledged_went_wrong(report, "none")
    assert report["idempotent"] is False
    assert "without idempotence" in report["note"]


# schedule -> (fault actions that must appear with at least that count)
SCHEDULES = {
    "kill-leader": {"SIGKILL node": 1, "restart node": 1},
    "kill-random": {"SIGKILL node": 1, "restart node": 1},
    "pause-leader": {"SIGSTOP node": 1, "SIGCONT node": 1},
    "kill-controller": {"SIGKILL node": 1, "restart node": 1},
    "rolling-restart": {"SIGTERM node": 3, "restart node": 3},
    "kill-two": {"SIGKILL node": 2, "restart node": 2},
    "pause-follower": {"SIGSTOP node": 1, "SIGCONT node": 1, "node ": 1},
    "replace-disk": {"SIGKILL node": 1, "deleted the": 1, "restart node": 1},
    "lose-unflushed": {"SIGKILL node": 1, "cut node": 1, "restart node": 1},
    "kill-while-paused": {"SIGSTOP node": 1, "SIGKILL node": 1, "restart node": 1, "SIGCONT node": 1},
    # The cuts go through runnel chaos's link proxy between the local nodes.
    "partition-leader": {"cut every link of node": 1, "isolated node": 1, "heal every link of node": 1},
    "partition-one-way": {"cut links": 1, "isolated node": 1, "heal links": 1},
    "partition-controller": {"cut links": 1, "heal links": 1},
    "kill-during-partition": {
        "cut every link of node": 1, "SIGKILL node": 1, "restart node": 1, "isolated node": 1,
        "heal every link of node": 1,
    },
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_chaos_schedule_keeps_every_acknowledged_record(tmp_path, schedule):
    report, _ = run_chaos(tmp_path, schedule, LOAD_S)
    assert_nothing_acknowledged_went_wrong(report, schedule)
    assert report["idempotent"] is True
    for prefix, at_least in SCHEDULES[schedule].items():
        assert count(report, prefix) >= at_least, f"expected {at_least}x '{prefix}...': {actions(report)}"
    assert not any("failed" in a or "not healthy" in a or "not in sync" in a
                   for a in actions(report)), actions(report)
    # Every node was back before the read: the cluster settled and produce recovered.
    assert report["settled_after_s"] is not None
    assert report["time_to_recover_s"] is not None, "no produce succeeded after the last fault"
    if schedule in ("kill-while-paused", "kill-during-partition"):
        assert len(report["quorum_loss"]) == 1 and report["acks_during_quorum_loss"] == 0
    if schedule in ("partition-leader", "partition-one-way", "kill-during-partition"):
        # The probe reached the cut-off leader, which acknowledged nothing.
        probe = report["isolated_leader"]
        assert probe is not None and probe["acked"] == 0, probe
    if schedule == "kill-two":
        assert len(report["quorum_loss"]) == 1, report["quorum_loss"]
        # With two of three nodes down acks=all must be refused; none acknowledged may be lost.
        assert report["acks_during_quorum_loss"] == 0
        assert report["lost_acked_during_quorum_loss"] == 0
        assert report["recovered_with_one_node_back_s"] is not None, actions(report)


@pytest.mark.parametrize("durable", [True, False], ids=["flush-every-append", "default-flush"])
def test_chaos_power_loss_of_a_quorum(tmp_path, durable):
    """lose-unflushed-quorum: two of three nodes lose their unfsynced writes at once. With
    flush.messages=1 nothing acknowledged may be lost; with the default (no fsync) the run
    reports what was lost but passes, as Kafka promises no more there."""
    extra = ("--topic-config", "flush.messages=1") if durable else ()
    report, _ = run_chaos(tmp_path, "lose-unflushed-quorum", LOAD_S, *extra)
    totals = report["totals"]
    assert report["passed"] is True
    assert totals["acked"] > 0
    assert totals["duplicated"] == 0 and totals["reordered"] == 0, report["per_partition"]
    assert all(p["replica_divergence"] == [] for p in report["per_partition"]), report["per_partition"]
    assert count(report, "cut node") == 2, actions(report)
    assert len(report["quorum_loss"]) == 1 and report["acks_during_quorum_loss"] == 0
    assert not any("failed" in a or "not healthy" in a or "not in sync" in a
                   for a in actions(report)), actions(report)
    if durable:
        assert report["topic_configs"] == ["flush.messages=1"]
        assert report["loss_allowed"] is None
        assert totals["lost"] == 0, report["per_partition"]
    else:
        assert "flush.messages=1" in report["loss_allowed"]


def test_chaos_disk_fault_needs_the_faulty_binary(tmp_path):
    """A release `runnel` has no failpoints: disk-fault refuses to run and says what to run."""
    _, stderr = run_chaos(tmp_path, "disk-fault", 1, expect_exit=1)
    assert "make build-faulty" in stderr and "target/release/runnel-faulty chaos" in stderr, stderr


# A seed whose draw is an EIO that takes the data dir offline (see the fault log): the node is
# fenced, its failpoint removed and the node restarted.
DISK_FAULT_SEED = 306


def test_chaos_disk_fault_loses_nothing(tmp_path):
    """disk-fault with `runnel-faulty`: an EIO on one node's disk takes its data dir offline;
    the controller fences it, it is restarted and catches up, and no acknowledged record is
    lost, duplicated or reordered. flush.messages=1, so an fsync fault fires too."""
    path = faulty_bin()
    if not path.is_file():
        pytest.skip(f"{path} is missing: build it with `make build-faulty` (make test-e2e does)")
    report, _ = run_chaos(
        tmp_path, "disk-fault", LOAD_S, "--topic-config", "flush.messages=1", binary=path, seed=DISK_FAULT_SEED
    )
    assert_nothing_acknowledged_went_wrong(report, "disk-fault")
    for prefix in ("failpoint ", "removed failpoint", "SIGTERM node", "restart node"):
        assert count(report, prefix) >= 1, f"expected '{prefix}...': {actions(report)}"
    assert any("took its data dir offline" in a for a in actions(report)), actions(report)
    assert any("fenced, leading nothing and in no ISR" in a for a in actions(report)), actions(report)
    assert not any(
        "failed" in a or "not healthy" in a or "not in sync" in a or "not fenced" in a or "unexpectedly" in a
        for a in actions(report)
    ), actions(report)
    assert report["settled_after_s"] is not None
    assert report["time_to_recover_s"] is not None, "no produce succeeded after the last fault"
