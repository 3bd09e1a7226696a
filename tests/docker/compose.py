"""A docker-compose project of deploy/docker-compose.yml for the tests: its own project name
and free host ports, so it never meets a cluster started by `make cluster-up`, and a teardown
that removes its containers, networks and volumes."""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "deploy" / "docker-compose.yml"
PROJECT_PREFIX = "runneltest"
NODES = (1, 2, 3)
# Short liveness settings so every fault is noticed within a test, as `runnel chaos` uses
# for its local nodes.
CHAOS_CONFIG = ",".join([
    "broker.session.timeout.ms=3000",
    "broker.heartbeat.interval.ms=500",
    "replica.lag.time.max.ms=3000",
    "default.replication.factor=3",
    "num.partitions=3",
    "group.initial.rebalance.delay.ms=0",
])
HEALTHY_TIMEOUT_S = 180
COMMAND_TIMEOUT_S = 120


def compose_command() -> list[str]:
    """docker-compose 1.x where installed, else the Compose plugin (the Makefile's choice)."""
    configured = os.environ.get("RUNNEL_COMPOSE")
    if configured:
        return shlex.split(configured)
    if subprocess.run(["sh", "-c", "command -v docker-compose"], capture_output=True).returncode == 0:
        return ["docker-compose"]
    return ["docker", "compose"]


def run(cmd: list[str], timeout: float = COMMAND_TIMEOUT_S, check: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int) -> list[int]:
    """n host ports free now and outside the kernel's ephemeral range.

    Docker re-binds a published port whenever a container restarts or changes networks (the
    chaos faults do both). A port from the ephemeral range can meanwhile be taken as the
    source port of any outgoing connection on the host, and the re-bind then fails."""
    low, high = ephemeral_range()
    candidates = [p for p in range(20000, 32768) if p < low or p > high]
    random.shuffle(candidates)
    ports = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise AssertionError(f"no {n} free ports outside the ephemeral range {low}-{high}")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def cluster_view(port: int) -> dict | None:
    """GET /v1/cluster of one node, or None when it does not answer with JSON."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/cluster", timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def unsettled(view: dict | None) -> str | None:
    """Why a node's view of the cluster is not yet usable by a client (None when it is): a
    node may answer /health while the controller quorum is still electing or a restarted
    broker is still fenced, and a CreateTopics with replication factor 3 would wait on it."""
    if view is None:
        return "no /v1/cluster"
    if view.get("controller", {}).get("leader_id") is None:
        return "no controller leader"
    brokers = view.get("brokers", [])
    if len(brokers) != len(NODES) or any(b.get("fenced") for b in brokers):
        return f"brokers {[(b.get('id'), 'fenced' if b.get('fenced') else 'live') for b in brokers]}"
    return None


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


@dataclass
class ComposeCluster:
    project: str
    kafka_ports: dict[int, int]
    http_ports: dict[int, int]
    image: str = field(default_factory=lambda: os.environ.get("RUNNEL_IMAGE", "runnel:latest"))

    @classmethod
    def new(cls) -> "ComposeCluster":
        ports = free_ports(2 * len(NODES))
        return cls(
            project=f"{PROJECT_PREFIX}{os.getpid()}",
            kafka_ports={n: ports[i] for i, n in enumerate(NODES)},
            http_ports={n: ports[len(NODES) + i] for i, n in enumerate(NODES)},
        )

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
        env["RUNNEL_IMAGE"] = self.image
        env["RUNNEL_CONFIG"] = CHAOS_CONFIG
        for n in NODES:
            env[f"RUNNEL_{n}_KAFKA_PORT"] = str(self.kafka_ports[n])
            env[f"RUNNEL_{n}_HTTP_PORT"] = str(self.http_ports[n])
        return env

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT_S,
                check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*compose_command(), "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        return run(cmd, timeout=timeout, check=check, env=self.env())

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_ports[n]}" for n in NODES)

    def container(self, node: int) -> str:
        out = run(["docker", "ps", "-aq",
                   "--filter", f"label=com.docker.compose.project={self.project}",
                   "--filter", f"label=com.docker.compose.service=runnel-{node}"]).stdout.split()
        assert len(out) == 1, f"expected one container for runnel-{node}, found {out}"
        return out[0]

    def inspect(self, node: int) -> dict:
        return json.loads(run(["docker", "inspect", self.container(node)]).stdout)[0]

    def up(self) -> None:
        self.compose("up", "-d")
        self.wait_healthy()

    def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT_S) -> None:
        """Every node's /health answers 200, Docker's own health check agrees, its published
        Kafka port accepts connections, and it sees a controller leader and every broker live."""
        deadline = time.monotonic() + timeout
        while True:
            pending = []
            for n in NODES:
                state = self.inspect(n)["State"]
                docker_health = state.get("Health", {}).get("Status", state["Status"])
                if health(self.http_ports[n]) != 200 or docker_health != "healthy":
                    pending.append(f"runnel-{n} ({state['Status']}, {docker_health})")
                elif not accepts(self.kafka_ports[n]):
                    pending.append(f"runnel-{n} (Kafka port {self.kafka_ports[n]} refuses)")
                elif why := unsettled(cluster_view(self.http_ports[n])):
                    pending.append(f"runnel-{n} ({why})")
            if not pending:
                return
            if time.monotonic() > deadline:
                ports = "\n".join(run(["docker", "port", self.container(n)], check=False).stdout
                                  for n in NODES)
                raise AssertionError(f"not healthy after {timeout:.0f} s: {', '.join(pending)}\n"
                                     f"published ports:\n{ports}\n{self.logs(tail=40)}")
            time.sleep(1)

    def logs(self, tail: int = 200) -> str:
        proc = self.compose("logs", "--no-color", f"--tail={tail}", check=False, timeout=60)
        return proc.stdout[-20000:] + proc.stderr[-2000:]

    def volumes(self) -> list[str]:
        return run(["docker", "volume", "ls", "-q",
                    "--filter", f"label=com.docker.compose.project={self.project}"]).stdout.split()

    def destroy(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)


def remove_stale_projects() -> None:
    """Removes test projects whose pytest process is gone (a run killed before its teardown)."""
    out = run(["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}'],
              check=False).stdout.split()
    for project in sorted(set(out)):
        pid = project[len(PROJECT_PREFIX):]
        if not project.startswith(PROJECT_PREFIX) or not pid.isdigit():
            continue
        if Path(f"/proc/{pid}").exists():
            continue
        stale = ComposeCluster(project=project, kafka_ports={n: 0 for n in NODES},
                               http_ports={n: 0 for n in NODES})
        stale.destroy()
