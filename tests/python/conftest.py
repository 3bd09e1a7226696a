"""Fixtures for the end-to-end suite: a real `runnel node` process per test.

Each node gets its own free 127.0.0.1 ports and a data directory under the test's tmp_path,
so tests run in parallel (pytest-xdist) safely. The process is always killed at teardown,
and, should the test process itself die, by the kernel (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

_LIVE_NODES: set["Node"] = set()


def runnel_bin() -> Path:
    p = Path(os.environ.get("RUNNEL_BIN", "target/release/runnel"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (sockets held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _health(port: int) -> int | None:
    """HTTP status of GET /health, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


class Node:
    """One `runnel node` subprocess."""

    # A one-node cluster, configured as Kafka's single-broker quick start is: the default
    # offsets.topic.replication.factor (3) could never be met, and groups would never work.
    BASE_CONFIG = ["offsets.topic.replication.factor=1"]

    def __init__(self, data_dir: Path, log_path: Path, extra_config: list[str] | None = None, node_id: int = 1):
        self.bin = runnel_bin()
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.extra_config = list(extra_config or [])
        self.node_id = node_id
        self.kafka_port, self.rpc_port, self.http_port = free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Environment variables of this node's process only (e.g. libfaketime's).
        self.extra_env: dict[str, str] = {}

    # -- addresses --
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def args(self) -> list[str]:
        cmd = [
            str(self.bin),
            "node",
            "--node-id",
            str(self.node_id),
            "--data-dir",
            str(self.data_dir),
            "--kafka-listen",
            self.bootstrap,
            "--rpc-listen",
            f"127.0.0.1:{self.rpc_port}",
            "--http-listen",
            f"127.0.0.1:{self.http_port}",
        ]
        for kv in self.BASE_CONFIG + self.extra_config:
            cmd += ["--config", kv]
        return cmd

    # -- lifecycle --
    def start(self) -> "Node":
        self.spawn()
        self.wait_ready()
        return self

    def spawn(self) -> "Node":
        """Starts the process without waiting for it to be ready."""
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        if not self.bin.is_file():
            pytest.fail(f"runnel binary not found at {self.bin} (build it: make build, or set RUNNEL_BIN)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        # Only the flags configure the node: drop RUNNEL_* settings of the calling shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
        env.setdefault("RUST_LOG", "info")
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.args())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.data_dir.parent,
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        _LIVE_NODES.add(self)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Ready when GET /health answers 200; a node whose HTTP port never answers counts
        as ready 3 s after its Kafka port first accepts connections."""
        deadline = time.monotonic() + timeout
        kafka_up_since = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"runnel node exited with code {self.proc.returncode} during start-up\n{self.log_tail()}")
            status = _health(self.http_port)
            if status == 200:
                return
            if _port_accepts(self.kafka_port):
                kafka_up_since = kafka_up_since or time.monotonic()
                if status is None and time.monotonic() - kafka_up_since > 3.0:
                    return
            time.sleep(0.1)
        pytest.fail(f"runnel node not ready within {timeout:.0f} s (GET /health != 200)\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        _LIVE_NODES.discard(self)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        _LIVE_NODES.discard(self)
        return self.proc.returncode

    def restart(self) -> "Node":
        """Stops the node if it runs (SIGTERM), then starts it on the same data dir and ports."""
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def __repr__(self) -> str:
        return f"Node({self.bootstrap}, data={self.data_dir})"


@atexit.register
def _kill_leftovers() -> None:
    for n in list(_LIVE_NODES):
        try:
            n.kill()
        except Exception:
            pass


# --- fixtures -----------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, node in enumerate(getattr(item, "_runnel_nodes", [])):
            rep.sections.append((f"runnel node {i} log ({node.bootstrap})", node.log_tail()))


@pytest.fixture
def node_factory(request, tmp_path):
    """Starts nodes: node_factory(extra_config=["message.max.bytes=1000"]). All are stopped
    at teardown (SIGTERM, then SIGKILL)."""
    nodes: list[Node] = []
    request.node._runnel_nodes = nodes

    def make(extra_config: list[str] | None = None, name: str | None = None) -> Node:
        name = name or f"node{len(nodes)}"
        n = Node(tmp_path / name / "data", tmp_path / f"{name}.log", extra_config)
        nodes.append(n)
        return n.start()

    try:
        yield make
    finally:
        for n in nodes:
            try:
                n.stop()
            finally:
                n.kill()


@pytest.fixture
def node(node_factory) -> Node:
    return node_factory()


def three_node_cluster(request, path: Path, extra_config: list[str] | None = None):
    """Generator for fixtures: three `runnel node` processes forming one cluster (all
    controllers and brokers) with short broker session timeouts (see cluster.py), their logs
    shown on failure, all stopped at teardown."""
    from cluster import Cluster  # imported here: cluster.py imports this module

    yield from running(request, Cluster(3, path, extra_config))


def running(request, cluster):
    """Generator for fixtures: starts `cluster`, its logs shown on failure, and stops it at
    teardown."""
    request.node._runnel_nodes = cluster.nodes
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster3(request, tmp_path):
    yield from three_node_cluster(request, tmp_path / "cluster")


@pytest.fixture(scope="session")
def kcat_bin() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if not path:
        pytest.fail("kcat is not installed (make test installs Debian's kcat)")
    return path


@pytest.fixture
def topic(request) -> str:
    """A topic name unique to the test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"{base}-{os.urandom(3).hex()}"
