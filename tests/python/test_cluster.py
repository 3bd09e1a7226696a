"""Three-node clusters: metadata agreement, controller and broker failover, fencing of a
frozen node, full restart, `runnel dev` and `runnel cluster status`.

Partition data is not replicated between nodes yet, so nothing here expects records to
survive a leader change; only metadata is checked across failures. Every cluster uses free
ports and its own tmp dir, so the tests run in parallel under pytest-xdist like the rest.
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
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

import util
from cluster import SESSION_TIMEOUT_S, Cluster, children_of, pid_alive, ports_free
from conftest import _die_with_parent, running, runnel_bin
from group_helpers import member_conf

# A whole-cluster test runs longer than a one-node test.
pytestmark = pytest.mark.timeout(150)

FAILOVER_TIMEOUT_S = 20.0


# --- helpers ------------------------------------------------------------------------------


def create(bootstrap: str, name: str, partitions: int, rf: int, config: dict | None = None) -> None:
    a = util.admin(bootstrap)
    a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})])[name].result(
        timeout=20
    )


def converged(cluster, topics: dict[str, tuple[int, int]], nodes=None):
    """Metadata of every node in `nodes` (each asked alone) once they agree and show all
    brokers and every topic with its (partitions, rf), each partition led, ISR = replicas."""
    nodes = nodes or cluster.nodes
    mds = {nd.node_id: nd.metadata(list(topics)) for nd in nodes}
    shapes = {i: md.shape(topics) for i, md in mds.items()}
    first = next(iter(shapes.values()))
    assert all(s == first for s in shapes.values()), f"nodes disagree: {shapes}"
    md = next(iter(mds.values()))
    assert set(md.brokers) == {nd.node_id for nd in cluster.nodes}, f"brokers: {md.brokers}"
    for name, (partitions, rf) in topics.items():
        tm = md.topics.get(name)
        assert tm is not None and tm.error == 0 and len(tm.partitions) == partitions, f"{name}: {tm}"
        for p, pm in tm.partitions.items():
            assert pm.error == 0 and pm.leader >= 0, f"{name}-{p}: {pm}"
            assert len(pm.replicas) == rf and sorted(pm.isr) == sorted(pm.replicas), f"{name}-{p}: {pm}"
    return mds


def leaders(md, topic: str) -> dict[int, int]:
    return {p: pm.leader for p, pm in md.topics[topic].partitions.items()}


def pick_broker_victim(cluster, md, topic: str, controller: int):
    """A node other than the active controller that leads at least one partition of `topic`."""
    led = set(leaders(md, topic).values())
    for nd in cluster.nodes:
        if nd.node_id != controller and nd.node_id in led:
            return nd
    pytest.fail(f"no node but the controller {controller} leads a partition of {topic}: {leaders(md, topic)}")


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = util.admin(bootstrap)
    entries = a.describe_configs([res])[res].result(timeout=15)
    return {k: v.value for k, v in entries.items()}


def cli_bin() -> Path:
    """The binary for `runnel dev` / `runnel cluster` (RUNNEL_CLI_BIN, default RUNNEL_BIN)."""
    p = os.environ.get("RUNNEL_CLI_BIN")
    return Path(p).resolve() if p else runnel_bin()


def require_subcommand(binary: Path, *args: str, needs: str | None = None) -> None:
    if not binary.is_file():
        pytest.fail(f"runnel binary not found at {binary}")
    r = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, timeout=20)
    if r.returncode != 0 or (needs is not None and needs not in r.stdout):
        pytest.skip(f"{binary} has no `{' '.join(args)}`{f' with {needs}' if needs else ''}")


def cluster_status(binary: Path, http: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary), "cluster", "status", "--http", http, *extra],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")},
    )


# --- metadata -----------------------------------------------------------------------------


def test_topics_created_through_each_node_agree_everywhere(cluster3, topic):
    c = cluster3
    topics: dict[str, tuple[int, int]] = {}
    for nd in c.nodes:
        for rf in (1, 2, 3):
            name = f"{topic}-via{nd.node_id}-rf{rf}"
            create(nd.bootstrap, name, 3, rf)
            topics[name] = (3, rf)

    with pytest.raises(KafkaException) as exc:
        create(c.node(2).bootstrap, f"{topic}-rf4", 1, 4)
    assert exc.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR, exc.value

    mds = c.wait_for("every node reports the same brokers, leaders, replicas and ISR", lambda: converged(c, topics))
    md = mds[1]
    assert md.brokers == {nd.node_id: ("127.0.0.1", nd.kafka_port) for nd in c.nodes}
    led_by = set()
    for name, (_, rf) in topics.items():
        for p, pm in md.topics[name].partitions.items():
            assert len(set(pm.replicas)) == rf, f"{name}-{p}: replicas {pm.replicas} repeat a broker"
            assert set(pm.replicas) <= set(md.brokers), f"{name}-{p}: replicas {pm.replicas}"
            assert pm.leader == pm.replicas[0], f"{name}-{p}: leader {pm.leader} is not the preferred {pm.replicas}"
            led_by.add(pm.leader)
    assert led_by == {1, 2, 3}, f"leadership is not spread over the brokers: leaders are {led_by}"
    md4 = c.node(1).metadata([f"{topic}-rf4"])
    assert f"{topic}-rf4" not in md4.topics or md4.topics[f"{topic}-rf4"].error != 0, "the RF 4 topic exists"


@pytest.fixture
def dedicated_controller(request, tmp_path):
    """Node 1 is the controller quorum alone and serves no Kafka clients; nodes 2 and 3 are
    brokers only."""
    yield from running(request, Cluster(3, tmp_path / "cluster", ["offsets.topic.replication.factor=1"], controllers=1))


def test_admin_client_works_with_a_dedicated_controller(dedicated_controller, topic):
    """librdkafka's admin client sends CreateTopics to the Metadata controller id, so that id
    must be a broker (as in KRaft Kafka), which forwards the request to the active controller."""
    c = dedicated_controller
    bootstrap = c.bootstrap_of([c.node(2), c.node(3)])
    md = c.node(2).metadata([])
    assert md.controller_id in (2, 3), f"Metadata names node {md.controller_id} as controller"
    a = util.admin(bootstrap)
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=2)])[topic].result(timeout=20)
    util.wait_for_partitions(bootstrap, topic, 2)
    described = a.describe_cluster(request_timeout=10).result(timeout=15)
    assert described.controller is not None and described.controller.id in (2, 3), described.controller


# --- failover -----------------------------------------------------------------------------


def test_controller_failover_and_rejoin(cluster3, topic):
    c = cluster3
    old = c.active_controller()
    old_term = c.node(old).status()["controller"]["term"]
    c.node(old).kill()
    survivors = [nd for nd in c.nodes if nd.node_id != old]

    new = c.active_controller(timeout=FAILOVER_TIMEOUT_S, exclude={old})
    assert new != old
    assert c.node(new).status()["controller"]["term"] > old_term

    name = f"{topic}-after"

    def create_through_survivor():
        try:
            create(survivors[0].bootstrap, name, 2, 2)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        return True

    c.wait_for("CreateTopics through a surviving node", create_through_survivor, timeout=FAILOVER_TIMEOUT_S)
    c.wait_for(
        "the new topic in the survivors' metadata",
        lambda: all(len(nd.metadata([name]).topics[name].partitions) == 2 for nd in survivors),
    )

    c.node(old).start()
    c.wait_for(
        f"node {old} listed again on every node",
        lambda: all(set(nd.metadata().brokers) == {1, 2, 3} for nd in c.nodes),
    )
    assert c.active_controller() in {1, 2, 3}
    rejoined = c.node(old).status()
    assert rejoined["controller"]["raft_state"] in ("Follower", "Leader"), rejoined
    # The restarted node follows the metadata: it knows the topic created while it was down.
    c.wait_for(f"node {old} knows {name}", lambda: len(c.node(old).metadata([name]).topics[name].partitions) == 2)


def test_dead_broker_loses_leadership_and_gets_it_back(cluster3, topic):
    c = cluster3
    controller = c.active_controller()
    create(c.bootstrap, topic, 6, 3)
    before = c.wait_for("the topic on every node", lambda: converged(c, {topic: (6, 3)}))[controller]
    victim = pick_broker_victim(c, before, topic, controller)
    led = [p for p, pm in before.topics[topic].partitions.items() if pm.leader == victim.node_id]
    epochs = {p: pm.leader_epoch for p, pm in before.topics[topic].partitions.items()}

    victim.kill()
    survivors = [nd for nd in c.nodes if nd is not victim]

    def failed_over():
        for nd in survivors:
            md = nd.metadata([topic])
            assert victim.node_id not in md.brokers, f"node {nd.node_id} lists brokers {md.brokers}"
            for p, pm in md.topics[topic].partitions.items():
                assert pm.leader not in (victim.node_id, -1) and pm.leader in md.brokers, f"node {nd.node_id}: {p}: {pm}"
                if p in led:
                    assert pm.leader_epoch > epochs[p], f"node {nd.node_id}: {p}: epoch {pm.leader_epoch} was {epochs[p]}"
        return True

    c.wait_for(
        f"new leaders for partitions {led} of dead broker {victim.node_id}",
        failed_over,
        timeout=SESSION_TIMEOUT_S + FAILOVER_TIMEOUT_S - 3,
    )

    # A client that only knows the survivors can produce to every partition.
    p = util.producer(c.bootstrap_of(survivors), acks=1, message_timeout_ms=15000)
    for part in range(6):
        delivered, errors = util.produce(p, topic, [(b"k", f"after-{part}".encode())], partition=part, flush_timeout=20)
        assert not errors and len(delivered) == 1, f"partition {part}: {errors[:1]}"

    victim.start()
    c.wait_for(
        f"broker {victim.node_id} listed again on every node",
        lambda: all(set(nd.metadata().brokers) == {1, 2, 3} for nd in c.nodes),
    )

    # Back and caught up: the restarted broker fetches what it missed, its leaders put it back
    # in every ISR (AlterPartition), and a preferred-leader election (what the automatic
    # rebalance asks for too) makes it lead its preferred partitions again.
    from confluent_kafka import ElectionType, TopicPartition

    def back_in_sync():
        parts = c.nodes[0].metadata([topic]).topics[topic].partitions
        return all(victim.node_id in pm.isr for pm in parts.values()) and parts

    after = c.wait_for(f"broker {victim.node_id} back in every ISR", back_in_sync, timeout=FAILOVER_TIMEOUT_S)
    preferred = [p for p, pm in after.items() if pm.replicas[0] == victim.node_id]
    assert preferred, "the victim is some partition's preferred leader"
    a = util.admin(c.bootstrap)
    tps = [TopicPartition(topic, p) for p in preferred]
    results = a.elect_leaders(ElectionType.PREFERRED, tps).result(timeout=20)
    # None: elected now; ELECTION_NOT_NEEDED: the automatic rebalance was first.
    assert all(e is None or e.code() == KafkaError.ELECTION_NOT_NEEDED for e in results.values()), results
    c.wait_for(
        f"broker {victim.node_id} leads its preferred partitions {preferred} again",
        lambda: all(c.nodes[0].metadata([topic]).topics[topic].partitions[p].leader == victim.node_id for p in preferred),
    )
    # Everything produced while it was down is on it: read it back through the new leaders.
    consumed = util.consume(c.bootstrap, topic, partitions=range(6), expected=6, timeout=30)
    assert sorted(m.value for m in consumed) == sorted(f"after-{part}".encode() for part in range(6)), consumed


def test_frozen_node_is_fenced_then_unfenced(cluster3, topic):
    c = cluster3
    controller = c.active_controller()
    create(c.bootstrap, topic, 6, 3)
    before = c.wait_for("the topic on every node", lambda: converged(c, {topic: (6, 3)}))[controller]
    victim = pick_broker_victim(c, before, topic, controller)
    others = [nd for nd in c.nodes if nd is not victim]

    victim.stop_signal()
    time.sleep(SESSION_TIMEOUT_S)

    def fenced():
        for nd in others:
            md = nd.metadata([topic])
            assert victim.node_id not in md.brokers, f"node {nd.node_id} lists brokers {md.brokers}"
            for p, pm in md.topics[topic].partitions.items():
                assert pm.leader not in (victim.node_id, -1), f"node {nd.node_id}: {p}: {pm}"
        view = c.node(controller).status()
        return any(b["id"] == victim.node_id and b["fenced"] for b in view["brokers"])

    c.wait_for(f"frozen node {victim.node_id} fenced and its partitions led elsewhere", fenced, timeout=FAILOVER_TIMEOUT_S)

    victim.cont()

    def unfenced():
        for nd in c.nodes:
            brokers = nd.metadata().brokers
            assert victim.node_id in brokers, f"node {nd.node_id} lists brokers {brokers}"
        view = c.node(controller).status()
        return any(b["id"] == victim.node_id and not b["fenced"] for b in view["brokers"])

    c.wait_for(f"node {victim.node_id} unfenced after SIGCONT", unfenced, timeout=FAILOVER_TIMEOUT_S)
    victim.wait_healthy(FAILOVER_TIMEOUT_S)


# --- restart ------------------------------------------------------------------------------


def test_full_cluster_restart_keeps_topics_and_configs(cluster3, topic):
    c = cluster3
    specs = {
        f"{topic}-a": (3, 1, {"retention.ms": "123456789"}),
        f"{topic}-b": (2, 3, {"cleanup.policy": "compact"}),
        f"{topic}-c": (4, 2, {"segment.bytes": "1048576", "retention.ms": "3600000"}),
    }
    for i, (name, (partitions, rf, config)) in enumerate(specs.items()):
        create(c.nodes[i % 3].bootstrap, name, partitions, rf, config)
    shape = {name: (p, rf) for name, (p, rf, _) in specs.items()}
    before = c.wait_for("the topics on every node", lambda: converged(c, shape))[1]
    replicas = {name: {p: pm.replicas for p, pm in before.topics[name].partitions.items()} for name in specs}

    c.kill_all()
    c.start()

    def back():
        for nd in c.nodes:
            md = nd.metadata(list(specs))
            for name, (partitions, rf, _) in specs.items():
                tm = md.topics.get(name)
                assert tm is not None and tm.error == 0 and len(tm.partitions) == partitions, f"node {nd.node_id}: {name}: {tm}"
                got = {p: pm.replicas for p, pm in tm.partitions.items()}
                assert got == replicas[name], f"node {nd.node_id}: {name}: replicas {got}, were {replicas[name]}"
                assert all(pm.leader >= 0 for pm in tm.partitions.values()), f"node {nd.node_id}: {name}: {tm}"
        return True

    c.wait_for("every topic back on every node with its replicas", back, timeout=30)
    for nd in c.nodes:
        for name, (_, _, config) in specs.items():
            got = topic_config(nd.bootstrap, name)
            for k, v in config.items():
                assert got.get(k) == v, f"{name} via node {nd.node_id}: {k}={got.get(k)!r}, want {v!r}"


# --- runnel dev and runnel cluster status -------------------------------------------------


def free_base_port(nodes: int = 3) -> tuple[int, list[int]]:
    """A base port where `runnel dev` finds all its ports free (below the ephemeral range)."""
    for _ in range(500):
        base = random.randrange(11000, 30000)
        ports = [base + 100 * i + off for i in range(nodes) for off in (0, 1, 552)]
        if ports_free(ports):
            return base, ports
    pytest.fail("no base port with 9 free ports found")


def test_runnel_dev_smoke(tmp_path, topic):
    binary = cli_bin()
    require_subcommand(binary, "dev")
    require_subcommand(binary, "node", needs="--voters")
    base, ports = free_base_port()
    out_path, err_path = tmp_path / "dev.out", tmp_path / "dev.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    env["NO_COLOR"] = "1"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        dev = subprocess.Popen(
            [str(binary), "dev", "--nodes", "3", "--data-dir", str(tmp_path / "data"), "--base-port", str(base),
             "--config", "broker.session.timeout.ms=3000", "--config", "broker.heartbeat.interval.ms=500"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=tmp_path,
            preexec_fn=_die_with_parent,
        )
    children: list[int] = []

    def logs() -> str:
        return f"--- stdout ---\n{out_path.read_text(errors='replace')}\n--- stderr (tail) ---\n" + "\n".join(
            err_path.read_text(errors="replace").splitlines()[-60:]
        )

    try:
        deadline = time.monotonic() + 70
        bootstrap = None
        while time.monotonic() < deadline and bootstrap is None:
            assert dev.poll() is None, f"runnel dev exited with {dev.returncode}\n{logs()}"
            for line in out_path.read_text(errors="replace").splitlines():
                if line.startswith("bootstrap servers: "):
                    bootstrap = line.removeprefix("bootstrap servers: ").strip()
            time.sleep(0.2)
        assert bootstrap == ",".join(f"127.0.0.1:{base + 100 * i}" for i in range(3)), logs()
        assert "runnel cluster status" in out_path.read_text(), logs()
        children = children_of(dev.pid)
        assert len(children) == 3, f"runnel dev's children: {children}"
        err_text = err_path.read_text(errors="replace")
        for i in (1, 2, 3):
            assert f"[node-{i}] " in err_text, f"no [node-{i}] log lines\n{logs()}"

        util.create_topic(bootstrap, topic, 3)
        util.produce_ok(bootstrap, topic, [(b"k", b"hello dev")], partition=1)
        got = util.consume(bootstrap, topic, partitions=[1], expected=1)
        assert [m.value for m in got] == [b"hello dev"]

        http = ",".join(f"127.0.0.1:{base + 552 + 100 * i}" for i in range(3))
        r = cluster_status(binary, http)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert "nodes: 3 of 3 reachable" in r.stdout, r.stdout
        assert len([ln for ln in r.stdout.splitlines() if ln.startswith("active controller: node ")]) == 1, r.stdout
        j = json.loads(cluster_status(binary, http, "--json").stdout)
        assert sorted(n["node_id"] for n in j["nodes"]) == [1, 2, 3]
        assert all(n["reachable"] for n in j["nodes"]), j["nodes"]
        assert j["controller"] is not None and j["controller"]["id"] in (1, 2, 3)

        # A node killed under `runnel dev` is restarted from its data dir.
        os.kill(children[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            "restarting it" in err_path.read_text(errors="replace")
            and len(children_of(dev.pid)) == 3
            and "nodes: 3 of 3 reachable" in cluster_status(binary, http).stdout
        ):
            time.sleep(0.5)
        assert "restarting it with its data dir" in err_path.read_text(errors="replace"), logs()
        assert dev.poll() is None, logs()
        children = children_of(dev.pid)
        assert len(children) == 3, f"runnel dev's children after the restart: {children}"

        dev.send_signal(signal.SIGTERM)
        rc = dev.wait(timeout=20)
        assert rc == 0, f"runnel dev exited {rc} after SIGTERM\n{logs()}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (any(pid_alive(p) for p in children) or not ports_free(ports)):
            time.sleep(0.2)
        assert not [p for p in children if pid_alive(p)], "nodes still running after runnel dev stopped"
        assert ports_free(ports), "ports still held after runnel dev stopped"
        assert "all nodes stopped" in err_path.read_text(errors="replace"), logs()
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(timeout=20)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait(timeout=10)
        for pid in children:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_runnel_dev_one_node_serves_groups(tmp_path, topic):
    """One node cannot meet Kafka's offsets.topic.replication.factor (3): `runnel dev` sets
    it to the number of nodes, so consumer groups work."""
    binary = cli_bin()
    require_subcommand(binary, "dev")
    base, _ = free_base_port(1)
    err_path = tmp_path / "dev.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    env["NO_COLOR"] = "1"
    with open(err_path, "wb") as err:
        dev = subprocess.Popen(
            [str(binary), "dev", "--nodes", "1", "--data-dir", str(tmp_path / "data"), "--base-port", str(base),
             "--config", "group.initial.rebalance.delay.ms=0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env, cwd=tmp_path, text=True,
            preexec_fn=_die_with_parent,
        )
    bootstrap = f"127.0.0.1:{base}"
    consumer = None
    try:
        line = dev.stdout.readline()  # the first line once the node is healthy (bounded by dev's own 60 s)
        assert line.startswith("bootstrap servers: "), f"{line!r}\n{err_path.read_text(errors='replace')[-3000:]}"
        util.create_topic(bootstrap, topic, 1)
        util.produce_ok(bootstrap, topic, [(b"k", b"v")])
        consumer = Consumer(member_conf(bootstrap, f"g-{topic}"))
        consumer.subscribe([topic])
        got = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got = [m for m in consumer.consume(num_messages=1, timeout=0.5) if m.error() is None]
        assert [m.value() for m in got] == [b"v"], err_path.read_text(errors="replace")[-3000:]
        consumer.commit(message=got[0], asynchronous=False)
        assert [tp.offset for tp in consumer.committed([TopicPartition(topic, 0)], timeout=10)] == [1]
    finally:
        if consumer is not None:
            consumer.close()
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in children_of(dev.pid):
                os.kill(pid, signal.SIGKILL)
            dev.kill()
            dev.wait(timeout=10)


def test_runnel_dev_refuses_busy_port(tmp_path):
    binary = cli_bin()
    require_subcommand(binary, "dev")
    base, _ = free_base_port(1)
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 552))
        held.listen()
        r = subprocess.run(
            [str(binary), "dev", "--nodes", "1", "--data-dir", str(tmp_path / "d"), "--base-port", str(base)],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
    assert r.returncode != 0
    assert f"port {base + 552} (node 1's HTTP port)" in r.stderr and "in use" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir()), "nothing should start"


def test_cluster_status_with_a_dead_node(cluster3):
    binary = cli_bin()
    require_subcommand(binary, "cluster", "status")
    c = cluster3
    controller = c.active_controller()

    r = cluster_status(binary, c.http_addrs)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "nodes: 3 of 3 reachable" in r.stdout, r.stdout
    assert f"active controller: node {controller} " in r.stdout, r.stdout

    victim = next(nd for nd in c.nodes if nd.node_id != controller)
    victim.kill()

    def fenced():
        view = c.node(controller).status()
        return any(b["id"] == victim.node_id and b["fenced"] for b in view["brokers"])

    c.wait_for(f"node {victim.node_id} fenced", fenced, timeout=SESSION_TIMEOUT_S + FAILOVER_TIMEOUT_S)

    r = cluster_status(binary, c.http_addrs)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "nodes: 2 of 3 reachable" in r.stdout, r.stdout
    row = next(ln for ln in r.stdout.splitlines() if victim.http_addr in ln and not ln.strip().startswith("unreachable"))
    cols = row.split()
    assert cols[0] == str(victim.node_id) and cols[2] == "no" and cols[-1] == "yes", row
    assert f"fenced brokers: {victim.node_id}" in r.stdout, r.stdout

    j = json.loads(cluster_status(binary, c.http_addrs, "--json").stdout)
    dead = [n for n in j["nodes"] if n["http"] == victim.http_addr]
    assert dead and dead[0]["node_id"] == victim.node_id and not dead[0]["reachable"] and dead[0]["fenced"], j["nodes"]
    assert j["controller"]["id"] == controller
    assert j["fenced_brokers"] == [victim.node_id]

    # No node answering is an error that says what to do.
    for nd in c.nodes:
        nd.kill()
    r = cluster_status(binary, c.http_addrs)
    assert r.returncode != 0
    assert "no node answered" in r.stderr, r.stderr
