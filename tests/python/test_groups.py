"""Consumer groups end to end: real clients (confluent-kafka, kafka-python) in groups against a
node — sharing partitions, rebalancing on join/leave, cooperative and static membership,
committed offsets across a crash, session expiry — and the `runnel group` CLI.

Every node runs with group.initial.rebalance.delay.ms=0 so joins are not held back 3 s.
Members commit each record synchronously after processing it and leave cleanly, so no
record may be read twice: duplicates are bugs here, not at-least-once noise.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

import util
from group_helpers import (
    LOG_LEVEL,
    Member,
    log_ends,
    ProcessMember,
    describe_rows,
    describe_summary,
    run_cli,
    run_cli_ok,
    settled,
    wait_until,
)

FAST_GROUPS = ["group.initial.rebalance.delay.ms=0"]
PARTITIONS = 4


def group_node(node_factory):
    return node_factory(extra_config=FAST_GROUPS)


class NumberedProducer(threading.Thread):
    """Sends records "0".."count-1" (keyed by number, so they spread over partitions) at a
    steady pace."""

    def __init__(self, bootstrap: str, topic: str, count: int, per_second: float):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.count, self.per_second = bootstrap, topic, count, per_second
        self.errors: list = []
        self.delivered = 0
        self.done = threading.Event()

    def run(self):
        p = util.producer(self.bootstrap, linger_ms=0)

        def on_delivery(err, msg):
            if err is not None:
                self.errors.append(err)
            else:
                self.delivered += 1

        start = time.monotonic()
        try:
            for i in range(self.count):
                delay = start + i / self.per_second - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                p.produce(self.topic, key=str(i).encode(), value=str(i).encode(), on_delivery=on_delivery)
                p.poll(0)
            p.flush(30)
        finally:
            self.done.set()


def assert_exactly_once(members, count: int):
    values = [int(r.value) for m in members for r in m.records]
    dupes = {v: n for v, n in Counter(values).items() if n > 1}
    missing = sorted(set(range(count)) - set(values))
    detail = "\n".join(m.summary() for m in members)
    assert not dupes, f"{len(dupes)} records read more than once (e.g. {list(dupes.items())[:10]})\n{detail}"
    assert not missing, f"{len(missing)} records never read (e.g. {missing[:10]})\n{detail}"
    for m in members:
        assert not m.commit_errors, f"{m.member_name}: commits failed: {m.commit_errors[:5]}\n{detail}"
        assert not m.errors, f"{m.member_name}: consumer errors: {m.errors[:5]}\n{detail}"


def run_share_scenario(node, topic, count=600, **conf):
    """Two members share the topic while records arrive, a third joins, the first leaves;
    returns the members (all closed)."""
    util.create_topic(node.bootstrap, topic, PARTITIONS)
    group = f"g-{topic}"
    a = Member("a", node.bootstrap, topic, group, **conf)
    b = Member("b", node.bootstrap, topic, group, **conf)
    c = Member("c", node.bootstrap, topic, group, **conf)
    members = [a, b, c]
    times: dict[str, float] = {}
    details = lambda: "\n".join(m.summary() for m in members)  # noqa: E731
    producer = NumberedProducer(node.bootstrap, topic, count, per_second=120)
    try:
        a.start()
        b.start()
        wait_until(lambda: settled([a, b], PARTITIONS, quiet=0.3), 20, "a and b to share the partitions", details=details)
        assert a.snapshot()[0] and b.snapshot()[0], details()
        producer.start()
        time.sleep(1.0)
        times["c_start"] = time.monotonic()
        c.start()
        wait_until(lambda: settled([a, b, c], PARTITIONS, quiet=0.3), 20, "c to get partitions", details=details)
        assert c.snapshot()[0], f"the third member got no partition\n{details()}"
        time.sleep(0.5)
        a_had = a.snapshot()[0]
        a.close()
        wait_until(lambda: settled([b, c], PARTITIONS, quiet=0.3), 20, "b and c to take over a's partitions", details=details)
        assert a_had <= b.snapshot()[0] | c.snapshot()[0], details()
        assert producer.done.wait(30), "producer did not finish"
        assert not producer.errors, f"delivery errors: {producer.errors[:3]}"
        assert producer.delivered == count
        wait_until(
            lambda: len({int(r.value) for m in members for r in m.records}) >= count,
            30,
            f"all {count} records to be consumed",
            details=details,
        )
        time.sleep(1.0)  # anything read twice would show up by now
    finally:
        for m in members:
            if m.is_alive():
                m.close()
    assert_exactly_once(members, count)
    return members, times


def test_members_share_partitions_join_and_leave(node_factory, topic):
    node = group_node(node_factory)
    (a, b, c), _ = run_share_scenario(node, topic)
    # Eager protocol: every rebalance revokes everything and assigns anew.
    assert any(e.kind == "revoke" for e in b.events), b.summary()


def test_cooperative_sticky(node_factory, topic):
    node = group_node(node_factory)
    (a, b, c), times = run_share_scenario(node, topic, **{"partition.assignment.strategy": "cooperative-sticky"})
    # Incremental rebalancing: a and b never had all their partitions revoked to let another
    # member in (only a member's own close, its last event, revokes all it has), and the
    # partitions they gave up when c joined went to c.
    for m in (a, b):
        owned: set[int] = set()
        for i, e in enumerate(m.events):
            assert e.kind != "lost", f"{m.member_name} lost its partitions: {m.summary()}"
            if e.kind == "assign":
                owned |= set(e.partitions)
                continue
            if i == len(m.events) - 1:
                break  # the member's own close
            owned -= set(e.partitions)
            assert owned, f"{m.member_name} had all its partitions revoked in a cooperative rebalance: {m.summary()}"
    c_first = next(e for e in c.events if e.kind == "assign" and e.partitions)
    moved = {
        p
        for m in (a, b)
        for e in m.events
        if e.kind == "revoke" and times["c_start"] <= e.t <= c_first.t
        for p in e.partitions
    }
    assert moved and moved <= set(c_first.partitions), (
        f"partitions revoked when c joined: {sorted(moved)}; c first got {c_first.partitions}\n"
        + "\n".join(m.summary() for m in (a, b, c))
    )


def test_static_member_restart_keeps_partitions(node_factory, topic):
    node = group_node(node_factory)
    util.create_topic(node.bootstrap, topic, PARTITIONS)
    group = f"g-{topic}"
    conf = {"session.timeout.ms": 10000}
    s1 = Member("s1", node.bootstrap, topic, group, **{"group.instance.id": "static-1"}, **conf)
    s2 = Member("s2", node.bootstrap, topic, group, **{"group.instance.id": "static-2"}, **conf)
    s1b = Member("s1-restarted", node.bootstrap, topic, group, **{"group.instance.id": "static-1"}, **conf)
    members = [s1, s2, s1b]
    details = lambda: "\n".join(m.summary() for m in members)  # noqa: E731
    try:
        s1.start()
        s2.start()
        wait_until(lambda: settled([s1, s2], PARTITIONS, quiet=1.0), 25, "s1 and s2 to share the partitions", details=details)
        s1_parts = s1.snapshot()[0]
        s2_parts, s2_events = s2.snapshot()
        assert s1_parts and s2_parts, details()
        described = run_cli_ok("group", "describe", group, "--members", "--bootstrap-server", node.bootstrap).stdout
        instance_ids = {r["GROUP-INSTANCE-ID"] for r in describe_rows(described)}
        assert instance_ids == {"static-1", "static-2"}, described

        # A static member does not leave the group on close; its replacement (same
        # group.instance.id) within session.timeout.ms takes over its member slot.
        s1.close()
        s1b.start()
        wait_until(lambda: s1b.snapshot()[0], 8, "the restarted static member to get partitions", details=details)
        assert s1b.snapshot()[0] == s1_parts, f"restarted static member got other partitions\n{details()}"
        time.sleep(2.0)  # a rebalance the restart caused would reach s2 within a few heartbeats
        assert s2.snapshot() == (s2_parts, s2_events), f"s2 saw a rebalance when s1 restarted\n{details()}"
    finally:
        for m in members:
            if m.is_alive():
                m.close()
    for m in members:
        assert not m.errors and not m.commit_errors, details()


def test_committed_offsets_survive_sigkill(node_factory, topic):
    node = group_node(node_factory)
    util.create_topic(node.bootstrap, topic, 2)
    util.produce_ok(node.bootstrap, topic, [(str(i).encode(), str(i).encode()) for i in range(100)])
    group = f"g-{topic}"

    # kafka-python reads about a third and commits its position.
    kc = KafkaConsumer(
        topic,
        group_id=group,
        bootstrap_servers=node.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        seen = 0
        deadline = time.monotonic() + 20
        while seen < 30 and time.monotonic() < deadline:
            for recs in kc.poll(timeout_ms=500, max_records=7).values():
                seen += len(recs)
        assert seen >= 30, f"kafka-python read only {seen} records in 20 s"
        kc.commit()
        committed = {tp.partition: kc.position(tp) for tp in kc.assignment()}
        assert {p: kc.committed(KpTopicPartition(topic, p)) for p in committed} == committed
    finally:
        kc.close()
    assert sorted(committed) == [0, 1] and 0 < sum(committed.values()) < 100, committed

    node.kill()
    node.start()

    c = Consumer(
        {
            "bootstrap.servers": node.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": LOG_LEVEL,
        }
    )
    first: dict[int, int] = {}
    got = 0
    try:
        after = c.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=15)
        assert {tp.partition: tp.offset for tp in after} == committed, "committed offsets changed across the crash"
        c.subscribe([topic])
        deadline = time.monotonic() + 25
        while got < 100 - sum(committed.values()) and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            first.setdefault(msg.partition(), msg.offset())
            got += 1
    finally:
        c.close()
    ends = log_ends(node.bootstrap, topic, 2)
    expect_first = {p: o for p, o in committed.items() if o < ends[p]}
    assert first == expect_first, f"resumed at {first}, committed {committed}, log ends {ends}"
    assert got == 100 - sum(committed.values())


def test_cli_list_describe_reset_delete(node_factory, topic):
    node = group_node(node_factory)
    bs = ["--bootstrap-server", node.bootstrap]
    util.create_topic(node.bootstrap, topic, 2)
    util.produce_ok(node.bootstrap, topic, [(str(i).encode(), str(i).encode()) for i in range(40)])
    idle, busy = f"idle-{topic}", f"busy-{topic}"

    # `idle` reads and commits some records, then leaves.
    c = Consumer(
        {
            "bootstrap.servers": node.bootstrap,
            "group.id": idle,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": LOG_LEVEL,
        }
    )
    try:
        c.subscribe([topic])
        n, deadline = 0, time.monotonic() + 20
        while n < 25 and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                n += 1
                if n == 25:
                    c.commit(asynchronous=False)
        assert n == 25
        committed = {
            tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
        }
    finally:
        c.close()
    ends = log_ends(node.bootstrap, topic, 2)
    assert sum(ends.values()) == 40

    # `busy` has a live member.
    m = Member("busy", node.bootstrap, topic, busy, **{"client.id": "busy-client"})
    m.start()
    try:
        wait_until(lambda: settled([m], 2, quiet=0.3), 20, "the busy member to get both partitions", details=m.summary)

        listed = describe_rows(run_cli_ok("group", "list", *bs).stdout)
        by_group = {r["GROUP"]: r for r in listed}
        assert by_group.get(idle, {}).get("STATE") == "Empty", listed
        assert by_group.get(busy, {}).get("STATE") == "Stable", listed
        assert by_group[busy]["PROTOCOL-TYPE"] == "consumer", listed
        stable = describe_rows(run_cli_ok("group", "list", "--state", "stable", *bs).stdout)
        assert [r["GROUP"] for r in stable] == [busy], stable

        # describe: LAG = log end - committed, per partition.
        out = run_cli_ok("group", "describe", idle, *bs).stdout
        assert describe_summary(out)["State"].startswith("Empty"), out
        rows = {int(r["PARTITION"]): r for r in describe_rows(out) if r["TOPIC"] == topic}
        for p in (0, 1):
            if p not in committed or committed[p] < 0:
                continue
            r = rows[p]
            assert int(r["CURRENT-OFFSET"]) == committed[p], out
            assert int(r["LOG-END-OFFSET"]) == ends[p], out
            assert int(r["LAG"]) == ends[p] - committed[p], out
        out = run_cli_ok("group", "describe", busy, *bs).stdout
        summary = describe_summary(out)
        assert summary["State"] == "Stable" and summary["Members"] == "1", out
        assert summary["Protocol"].startswith("consumer"), out
        rows = describe_rows(out)
        assert {int(r["PARTITION"]) for r in rows} == {0, 1}, out
        assert len({r["CONSUMER-ID"] for r in rows}) == 1 and rows[0]["CONSUMER-ID"] != "-", out
        # Like Kafka, the member's client id and host (as "/address") come from its JoinGroup.
        assert {(r["CLIENT-ID"], r["HOST"]) for r in rows} == {("busy-client", "/127.0.0.1")}, out
        wait_until(
            lambda: all(
                r["LAG"] == "0"
                for r in describe_rows(run_cli_ok("group", "describe", busy, *bs).stdout)
            ),
            15,
            "the busy member to commit everything (LAG 0)",
        )

        # An active group cannot be reset or deleted, and the CLI says what to do.
        r = run_cli("group", "reset-offsets", busy, "--topic", topic, "--to-earliest", "--execute", *bs)
        assert r.returncode != 0, r.stdout
        assert f"stop the consumers of group {busy}" in r.stderr, r.stderr
        r = run_cli("group", "delete", busy, *bs)
        assert r.returncode != 0, r.stdout
        assert "still has active members" in r.stderr and f"stop the consumers of group {busy}" in r.stderr, r.stderr
    finally:
        m.close()

    # reset-offsets: a dry run changes nothing; --execute commits.
    dry = run_cli_ok("group", "reset-offsets", idle, "--topic", topic, "--to-earliest", *bs)
    plan = {int(r["PARTITION"]): r for r in describe_rows(dry.stdout)}
    assert {p: r["NEW-OFFSET"] for p, r in plan.items()} == {0: "0", 1: "0"}, dry.stdout
    assert "dry run" in dry.stderr
    out = run_cli_ok("group", "describe", idle, *bs).stdout
    assert {int(r["PARTITION"]): int(r["CURRENT-OFFSET"]) for r in describe_rows(out) if r["CURRENT-OFFSET"] != "-"} == {
        p: o for p, o in committed.items() if o >= 0
    }, out
    run_cli_ok("group", "reset-offsets", idle, "--topic", f"{topic}:0,1", "--to-earliest", "--execute", *bs)
    out = run_cli_ok("group", "describe", idle, *bs).stdout
    rows = {int(r["PARTITION"]): r for r in describe_rows(out)}
    for p in (0, 1):
        assert (rows[p]["CURRENT-OFFSET"], rows[p]["LAG"]) == ("0", str(ends[p])), out
    run_cli_ok("group", "reset-offsets", idle, "--topic", f"{topic}:1", "--to-offset", "3", "--execute", *bs)
    run_cli_ok("group", "reset-offsets", idle, "--topic", f"{topic}:1", "--shift-by", "-1", "--execute", *bs)
    run_cli_ok("group", "reset-offsets", idle, "--topic", f"{topic}:0", "--to-latest", "--execute", *bs)
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": idle, "log_level": LOG_LEVEL})
    try:
        now = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)}
    finally:
        c.close()
    assert now == {0: ends[0], 1: max(0, min(3, ends[1]) - 1)}, now

    # Delete: the empty groups go; list no longer shows them; describe says they are gone.
    r = run_cli_ok("group", "delete", idle, busy, *bs)
    assert f"deleted consumer group '{idle}'" in r.stdout and f"deleted consumer group '{busy}'" in r.stdout, r.stdout
    r = run_cli("group", "list", *bs)
    assert r.returncode == 0, r.stderr
    assert idle not in r.stdout and busy not in r.stdout, r.stdout
    r = run_cli("group", "describe", idle, *bs)
    assert r.returncode != 0 and "does not exist" in r.stderr, (r.stdout, r.stderr)
    r = run_cli("group", "delete", idle, *bs)
    assert r.returncode != 0 and "does not exist" in r.stderr, (r.stdout, r.stderr)


def test_session_timeout_moves_partitions_and_member_rejoins(node_factory, topic):
    node = group_node(node_factory)
    util.create_topic(node.bootstrap, topic, PARTITIONS)
    group = f"g-{topic}"
    a = ProcessMember(node.bootstrap, topic, group)
    b = ProcessMember(node.bootstrap, topic, group)
    details = lambda: f"a {a.summary()}\nb {b.summary()}"  # noqa: E731

    def shared():
        pa, pb = a.assigned(), b.assigned()
        return pa and pb and not (pa & pb) and pa | pb == set(range(PARTITIONS))

    try:
        wait_until(shared, 25, "a and b to share the partitions", details=details)
        os.kill(a.proc.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            # session.timeout.ms=6000: the coordinator expires a and gives b everything.
            wait_until(lambda: b.assigned() == set(range(PARTITIONS)), 20, "b to get a's partitions", details=details)
            took = time.monotonic() - stopped_at
            assert took > 3.0, f"b took a's partitions {took:.1f} s after a stopped, before its session could expire"
            described = run_cli_ok("group", "describe", group, "--members", "--bootstrap-server", node.bootstrap).stdout
            assert describe_summary(described)["Members"] == "1", described
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        # a notices it was removed, rejoins and gets partitions back.
        resumed = len(a.snapshot())
        wait_until(
            lambda: shared() and any(e["ev"] == "assign" and e["p"] for e in a.snapshot()[resumed:]),
            25,
            "a to rejoin and get partitions again",
            details=details,
        )
    finally:
        a.stop()
        b.stop()
        a.kill()
        b.kill()
