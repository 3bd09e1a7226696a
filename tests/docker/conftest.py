"""Fixtures for the docker-compose tests: one cluster for the session, removed at the end
(containers, networks and volumes) whether the tests pass or fail."""

from __future__ import annotations

import atexit
import os
import subprocess
from pathlib import Path

import pytest

from compose import REPO_ROOT, ComposeCluster, remove_stale_projects, run


def runnel_bin() -> Path:
    p = Path(os.environ.get("RUNNEL_BIN", "target/release/runnel"))
    return p if p.is_absolute() else REPO_ROOT / p


@pytest.fixture(scope="session")
def cluster():
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.fail("no Docker engine answers 'docker info'")
    image = os.environ.get("RUNNEL_IMAGE", "runnel:latest")
    if run(["docker", "image", "inspect", image], check=False).returncode != 0:
        pytest.fail(f"image {image} does not exist; run 'make docker-image' first")
    remove_stale_projects()
    c = ComposeCluster.new()
    atexit.register(c.destroy)  # also when the session dies before the fixture's teardown
    try:
        c.up()
        yield c
    finally:
        c.destroy()
        atexit.unregister(c.destroy)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the containers' logs as they were when it failed (the
    session's later tests would push them out of the tail)."""
    outcome = yield
    report = outcome.get_result()
    cluster = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
    if report.failed and cluster is not None:
        report.sections.append(("compose logs at the failure", cluster.logs()))
