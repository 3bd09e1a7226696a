"""`runnel experiment replication --target compose`: one cell on the compose cluster, with the
partition leader's container killed and started again mid-run."""

from __future__ import annotations

import csv
import os
import subprocess

from compose import NODES
from conftest import runnel_bin

RUN_TIMEOUT_S = 180


def test_one_cell_on_the_compose_cluster_loses_no_acknowledged_record(cluster, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    proc = subprocess.run(
        [str(runnel_bin()), "experiment", "replication", "--target", "compose",
         "--compose-project", cluster.project, "--rf", "3", "--acks", "all", "--duration", "3",
         "--out-dir", str(tmp_path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert "docker-compose containers" in proc.stdout
    with open(tmp_path / "replication.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert (row["rf"], row["acks"]) == ("3", "all")
    assert int(row["records"]) > 0
    assert row["fault_killed_node"] in {str(n) for n in NODES}
    assert int(row["fault_acked"]) > 0
    assert row["fault_lost_acked"] == "0", row
    # The killed container was started again.
    cluster.wait_healthy(timeout=60)
