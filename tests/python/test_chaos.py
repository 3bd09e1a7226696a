"""`runnel chaos` end to end: a fault-free run on its own local cluster passes its checks."""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest

from cluster import ports_free
from conftest import _die_with_parent, runnel_bin

RUN_TIMEOUT_S = 180


def free_base_port(nodes: int = 3) -> int:
    """A base port whose Kafka, RPC and HTTP ports are free for every node (below the ephemeral range)."""
    for _ in range(500):
        base = random.randrange(11000, 30000)
        if ports_free([base + 100 * i + off for i in range(nodes) for off in (0, 1, 552)]):
            return base
    pytest.fail("no base port with all of chaos's ports free")


def test_chaos_without_faults_loses_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    proc = subprocess.run(
        [str(runnel_bin()), "chaos", "--schedule", "none", "--duration", "5", "--json",
         "--base-port", str(free_base_port()), "--data-dir", str(tmp_path / "chaos")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=RUN_TIMEOUT_S, preexec_fn=_die_with_parent,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    assert report["schedule"] == "none"
    assert report["passed"] is True
    assert report["totals"]["acked"] > 0
    assert report["totals"]["lost"] == 0
    assert report["totals"]["duplicated"] == 0
    assert report["totals"]["reordered"] == 0
    assert len(report["per_partition"]) == 3
    assert all(p["read_error"] is None for p in report["per_partition"])
    assert report["faults"] == []
    assert "acked" in proc.stderr  # the progress lines
