"""`runnel chaos --target compose` against the session's compose cluster: the same workload
and checker as on local processes, with container faults (docker kill, pause, restart and a
network partition). Every schedule must lose, duplicate and reorder no acknowledged record,
and leave every container running, unpaused and connected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from compose import NODES
from conftest import runnel_bin

LOAD_S = 15
SEED = 20261123
RUN_TIMEOUT_S = 240


def run_chaos(cluster, schedule: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    cmd = [str(runnel_bin()), "chaos", "--target", "compose", "--compose-project", cluster.project,
           "--schedule", schedule, "--seed", str(SEED), "--duration", str(LOAD_S), "--json"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGINT first: chaos restores the containers it touched on the way out.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=10)
        pytest.fail(f"runnel chaos --schedule {schedule} did not finish within {RUN_TIMEOUT_S} s\n"
                    f"stderr:\n{stderr[-4000:]}")
    assert proc.returncode == 0, (
        f"runnel chaos --target compose --schedule {schedule} exited with {proc.returncode}\n"
        f"stdout:\n{stdout[-6000:]}\nstderr:\n{stderr[-4000:]}"
    )
    return json.loads(stdout), stderr


def assert_nothing_acknowledged_went_wrong(report: dict, schedule: str) -> None:
    totals = report["totals"]
    assert report["schedule"] == schedule
    assert report["passed"] is True
    assert totals["acked"] > 0, "nothing was acknowledged, so nothing was checked"
    assert totals["lost"] == 0, report["per_partition"]
    assert totals["duplicated"] == 0, report["per_partition"]
    assert totals["reordered"] == 0, report["per_partition"]
    assert all(p["read_error"] is None for p in report["per_partition"]), report["per_partition"]


def assert_cluster_restored(cluster) -> None:
    for n in NODES:
        info = cluster.inspect(n)
        assert info["State"]["Running"] and not info["State"]["Paused"], (n, info["State"])
        assert f"{cluster.project}_cluster" in info["NetworkSettings"]["Networks"], n
    cluster.wait_healthy(timeout=60)


def actions(report: dict) -> list[str]:
    return [f["action"] for f in report["faults"]]


@pytest.mark.parametrize("schedule", ["kill-leader", "pause-leader", "rolling-restart", "partition-leader"])
def test_container_faults_lose_no_acknowledged_record(cluster, schedule):
    started = time.monotonic()
    report, _stderr = run_chaos(cluster, schedule)
    assert_nothing_acknowledged_went_wrong(report, schedule)
    assert report["faults"], "the schedule injected no fault"
    assert_cluster_restored(cluster)
    print(f"{schedule}: {report['totals']} in {time.monotonic() - started:.0f} s; faults {actions(report)}")
