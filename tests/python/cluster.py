"""A multi-node Runnel cluster for the end-to-end tests: N `runnel node` processes on free
127.0.0.1 ports sharing one --voters list, plus helpers to ask each node alone for its view
(GET /v1/cluster, and Kafka Metadata over a raw socket so the answer is that node's own).

Every process is killed at teardown (Cluster.close, the conftest's atexit cleanup, and
PR_SET_PDEATHSIG should the test process die); SIGSTOPped ones are continued first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import kafkawire as kw
from conftest import STOP_TIMEOUT_S, _LIVE_NODES, Node, _health, free_ports

# Short timeouts so failover happens within a test's patience.
DEFAULT_CONFIG = [
    "broker.session.timeout.ms=3000",
    "broker.heartbeat.interval.ms=500",
    "leader.imbalance.check.interval.seconds=1",
]
SESSION_TIMEOUT_S = 3.0
START_TIMEOUT_S = 40.0


class ClusterNode(Node):
    """One node of a Cluster: a conftest Node that also knows the voters."""

    # Kafka's defaults, offsets.topic.replication.factor=3 included.
    BASE_CONFIG: list[str] = []

    def __init__(self, cluster: "Cluster", node_id: int, ports: tuple[int, int, int]):
        super().__init__(
            cluster.base_dir / f"node-{node_id}" / "data",
            cluster.base_dir / f"node-{node_id}.log",
            cluster.config,
            node_id=node_id,
        )
        self.cluster = cluster
        self.kafka_port, self.rpc_port, self.http_port = ports
        self.paused = False
        # `--roles`; None leaves the default (controller and broker).
        self.roles: str | None = None

    @property
    def rpc(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def args(self) -> list[str]:
        roles = ["--roles", self.roles] if self.roles else []
        return super().args() + ["--voters", self.cluster.voters] + roles

    # -- lifecycle --
    def start(self, timeout: float = START_TIMEOUT_S) -> "ClusterNode":
        """Starts the process and waits until GET /health answers 200."""
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise AssertionError(f"node {self.node_id} is not running (exit code {code})\n{self.log_tail()}")
            last = _health(self.http_port)
            if last == 200:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"node {self.node_id} not healthy within {timeout:.0f} s (last GET /health: {last})\n{self.log_tail()}"
        )

    def _signal(self, sig: int) -> None:
        assert self.alive(), f"node {self.node_id} is not running"
        self.proc.send_signal(sig)

    def stop_signal(self) -> None:
        """SIGSTOP: the process freezes, its sockets stay open."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def cont(self) -> None:
        """SIGCONT after stop_signal."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`). Returns the exit code."""
        if self.paused:
            self.cont()
        return self.stop()

    def kill(self) -> None:
        """SIGKILL and wait."""
        if self.paused:
            self.cont()
        super().kill()

    def stop(self) -> int | None:
        if self.paused:
            self.cont()
        return super().stop()

    def restart(self, timeout: float = START_TIMEOUT_S) -> "ClusterNode":
        """Stops the node if it runs (SIGTERM), then starts it on the same data dir and ports."""
        self.stop()
        return self.start(timeout)

    # -- views --
    def status(self, timeout: float = 2.0) -> dict | None:
        """GET /v1/cluster as a dict, or None when the node does not answer 200."""
        try:
            with urllib.request.urlopen(f"http://{self.http_addr}/v1/cluster", timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def metadata(self, topics: list[str] | None = None, timeout: float = 5.0) -> "Metadata":
        """Kafka Metadata (v7) from this node alone."""
        return metadata(self.bootstrap, topics, timeout)

    def __repr__(self) -> str:
        return f"ClusterNode({self.node_id}, kafka={self.kafka_port}, rpc={self.rpc_port}, http={self.http_port})"


class Cluster:
    """N nodes with the same --voters list: all controllers and brokers, or with
    `controllers=k` nodes 1..k controllers only and the others brokers only."""

    def __init__(self, n: int, base_dir: Path, extra_config: list[str] | None = None, controllers: int | None = None):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config = DEFAULT_CONFIG + list(extra_config or [])
        ports = free_ports(3 * n)  # all at once, so no two nodes get the same port
        self.nodes: list[ClusterNode] = [
            ClusterNode(self, i + 1, tuple(ports[3 * i : 3 * i + 3])) for i in range(n)
        ]
        voters = self.nodes if controllers is None else self.nodes[:controllers]
        self.voters = ",".join(f"{nd.node_id}@{nd.rpc}" for nd in voters)
        if controllers is not None:
            for nd in self.nodes:
                nd.roles = "controller" if nd in voters else "broker"

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self) -> str:
        return ",".join(nd.bootstrap for nd in self.nodes)

    def bootstrap_of(self, nodes) -> str:
        return ",".join(nd.bootstrap for nd in nodes)

    @property
    def http_addrs(self) -> str:
        return ",".join(nd.http_addr for nd in self.nodes)

    def alive(self) -> list[ClusterNode]:
        return [nd for nd in self.nodes if nd.alive() and not nd.paused]

    def start(self, timeout: float = START_TIMEOUT_S) -> "Cluster":
        """Starts every node that is not running, then waits until all are healthy."""
        for nd in self.nodes:
            if not nd.alive():
                nd.spawn()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for nd in self.nodes:
            nd.wait_healthy(max(0.5, deadline - time.monotonic()))

    def kill_all(self) -> None:
        for nd in self.nodes:
            nd.kill()

    def close(self) -> None:
        """SIGTERM to all at once, SIGKILL to those still running STOP_TIMEOUT_S later."""
        for nd in self.nodes:
            try:
                if nd.paused:
                    nd.cont()
                if nd.alive():
                    nd.proc.terminate()
            except Exception:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for nd in self.nodes:
            try:
                if nd.proc is not None and nd.proc.poll() is None:
                    nd.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            finally:
                nd.kill()
                _LIVE_NODES.discard(nd)

    # -- cluster-wide views --
    def statuses(self) -> dict[int, dict | None]:
        return {nd.node_id: (nd.status() if nd.alive() and not nd.paused else None) for nd in self.nodes}

    def active_controller(self, timeout: float = 20.0, exclude: set[int] | frozenset = frozenset()) -> int:
        """Id of the node that reports itself Raft leader, once the other reachable nodes agree
        (bounded wait). Nodes in `exclude` do not count as the leader."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            views = {i: s for i, s in self.statuses().items() if s is not None}
            last = {i: (s["controller"].get("raft_state"), s["controller"].get("leader_id"), s["controller"].get("term")) for i, s in views.items()}
            leaders = [i for i, s in views.items() if s["controller"].get("raft_state") == "Leader" and i not in exclude]
            if len(leaders) == 1:
                lid = leaders[0]
                if all(s["controller"].get("leader_id") == lid for s in views.values()):
                    return lid
            time.sleep(0.2)
        raise AssertionError(f"no agreed active controller within {timeout:.0f} s; (raft_state, leader_id, term) per node: {last}")

    def wait_for(self, what: str, predicate, timeout: float = 20.0, interval: float = 0.2):
        """Calls predicate() until it returns a truthy value (returned) or `timeout` passes.
        Exceptions count as "not yet"; the last value or exception is in the failure."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                result = predicate()
                if result:
                    return result
                last = result
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
            time.sleep(interval)
        raise AssertionError(f"{what}: not within {timeout:.0f} s; last: {last!r}")


# --- Kafka Metadata v7 from one broker ----------------------------------------------------


@dataclass
class PartitionMeta:
    error: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline: list[int]


@dataclass
class TopicMeta:
    error: int
    internal: bool
    partitions: dict[int, PartitionMeta] = field(default_factory=dict)


@dataclass
class Metadata:
    brokers: dict[int, tuple[str, int]]
    cluster_id: str | None
    controller_id: int
    topics: dict[str, TopicMeta]

    def shape(self, topics) -> dict:
        """What must be the same on every node: brokers, and per partition the leader,
        leader epoch, replicas and ISR."""
        return {
            "brokers": dict(sorted(self.brokers.items())),
            "topics": {
                t: {p: (pm.leader, pm.leader_epoch, pm.replicas, sorted(pm.isr)) for p, pm in sorted(self.topics[t].partitions.items())}
                if t in self.topics and self.topics[t].error == 0
                else ("error", self.topics[t].error if t in self.topics else None)
                for t in topics
            },
        }


_correlation = 0


def metadata_v7_request(correlation_id: int, topics: list[str] | None) -> bytes:
    body = kw.i32(-1) if topics is None else kw.i32(len(topics)) + b"".join(kw.string(t) for t in topics)
    body += kw.i8(0)  # allow_auto_topic_creation
    return kw.frame(kw.request_header_v1(kw.API_METADATA, 7, correlation_id) + body)


def parse_metadata_v7(payload: bytes) -> Metadata:
    r = kw.Reader(payload)
    r.take("i")  # correlation id
    r.take("i")  # throttle
    brokers = {}
    for _ in range(r.take("i")):
        node_id = r.take("i")
        host = r.string()
        port = r.take("i")
        r.string()  # rack
        brokers[node_id] = (host, port)
    cluster_id = r.string()
    controller_id = r.take("i")
    topics = {}
    for _ in range(r.take("i")):
        err = r.take("h")
        name = r.string()
        internal = bool(r.take("b"))
        tm = TopicMeta(err, internal)
        for _ in range(r.take("i")):
            perr = r.take("h")
            index = r.take("i")
            leader = r.take("i")
            epoch = r.take("i")
            replicas = [r.take("i") for _ in range(r.take("i"))]
            isr = [r.take("i") for _ in range(r.take("i"))]
            offline = [r.take("i") for _ in range(r.take("i"))]
            tm.partitions[index] = PartitionMeta(perr, leader, epoch, replicas, isr, offline)
        topics[name] = tm
    return Metadata(brokers, cluster_id, controller_id, topics)


def metadata(bootstrap: str, topics: list[str] | None = None, timeout: float = 5.0) -> Metadata:
    """Metadata v7 from the one broker at `bootstrap` (None: all topics)."""
    global _correlation
    _correlation += 1
    payload = kw.roundtrip(bootstrap, metadata_v7_request(_correlation, topics), timeout)
    return parse_metadata_v7(payload)


# --- misc ---------------------------------------------------------------------------------


def ports_free(ports) -> bool:
    """Whether a listener could bind every port now. SO_REUSEADDR as the nodes use it: closed
    connections linger in TIME_WAIT on these ports and must not count as held."""
    import socket

    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
