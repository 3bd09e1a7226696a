"""Helpers for the consumer-group tests: group members (a thread or a subprocess), parsing of
`runnel group describe` output, bounded waits.

Run as a script it is a group member in its own process (for SIGSTOP/SIGCONT):
    python group_helpers.py BOOTSTRAP TOPIC GROUP [CONF_JSON]
printing one JSON line per event: {"ev": "assign"|"revoke"|"lost", "p": [...]},
{"ev": "rec", "p": partition, "o": offset, "v": value}, {"ev": "error", "msg": ...}.
It stops (closing the consumer cleanly) when its stdin is closed or reads "stop".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import kafkawire as kw

# librdkafka logs to stderr; keep warnings and errors only.
LOG_LEVEL = 4


def member_conf(bootstrap: str, group: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "socket.timeout.ms": 10000,
        "log_level": LOG_LEVEL,
    }
    conf.update(extra)
    return conf


def wait_until(cond, timeout: float, what: str, interval: float = 0.05, details=None):
    """Polls `cond` until it returns a truthy value (returned) or `timeout` passes (fails)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------------- thread member


@dataclass
class Event:
    t: float
    kind: str  # assign | revoke | lost
    partitions: list[int]


@dataclass
class Record:
    partition: int
    offset: int
    value: bytes
    member: str


class Member(threading.Thread):
    """A confluent-kafka group member in a thread: subscribes, polls one record at a time and
    commits it synchronously after "processing" (appending it to `records`), so that a clean
    leave or rebalance never causes re-delivery. `close()` stops it and closes the consumer
    (LeaveGroup, except for static members).

    A commit refused with a retriable error is kept pending and retried, as Kafka
    applications must: with the cooperative protocol a member keeps consuming during a
    rebalance, and Kafka answers REBALANCE_IN_PROGRESS to commits that arrive while the group
    is CompletingRebalance (between JoinGroup and SyncGroup). Pending offsets are committed
    before partitions are revoked and before the consumer closes; a commit that still fails
    then is a real error (`commit_errors`)."""

    def __init__(self, name: str, bootstrap: str, topic: str, group: str, **conf):
        super().__init__(name=f"member-{name}", daemon=True)
        self.member_name = name
        self.topic = topic
        self.conf = member_conf(bootstrap, group, **conf)
        self.events: list[Event] = []
        self.records: list[Record] = []
        self.assigned: set[int] = set()
        self.commit_errors: list[str] = []
        self.commit_retries: list[str] = []
        self.pending: dict[int, int] = {}  # partition -> offset to commit (processed, not committed)
        self.errors: list[str] = []
        self._stop_flag = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()

    # callbacks run in this thread, inside poll()
    def _on_assign(self, consumer, parts):
        with self.lock:
            ps = sorted(p.partition for p in parts)
            self.events.append(Event(time.monotonic(), "assign", ps))
            self.assigned |= set(ps)

    def _on_revoke(self, consumer, parts):
        ps = sorted(p.partition for p in parts)
        self._commit_pending(consumer, set(ps), final=True)
        with self.lock:
            self.events.append(Event(time.monotonic(), "revoke", ps))
            self.assigned -= set(ps)

    def _on_lost(self, consumer, parts):
        with self.lock:
            ps = sorted(p.partition for p in parts)
            for p in ps:
                self.pending.pop(p, None)
            self.events.append(Event(time.monotonic(), "lost", ps))
            self.assigned -= set(ps)

    def _commit_pending(self, c, partitions: set[int] | None = None, final: bool = False):
        """Commits pending offsets (of `partitions`, or all). Failures stay pending, unless
        `final`, when they are errors."""
        todo = {p: o for p, o in self.pending.items() if partitions is None or p in partitions}
        if not todo:
            return
        try:
            c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in todo.items()], asynchronous=False)
        except KafkaException as e:
            err = e.args[0]
            note = f"{sorted(todo.items())}: {err}"
            if final or not err.retriable() and err.code() != KafkaError.REBALANCE_IN_PROGRESS:
                self.commit_errors.append(note)
                for p in todo:
                    self.pending.pop(p, None)
            else:
                self.commit_retries.append(note)
            return
        for p, o in todo.items():
            if self.pending.get(p) == o:
                del self.pending[p]

    def run(self):
        try:
            c = Consumer(self.conf)
        except Exception as e:  # pragma: no cover - configuration errors
            self.errors.append(f"cannot create consumer: {e}")
            self.closed.set()
            return
        try:
            c.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
            while not self._stop_flag.is_set():
                msg = c.poll(0.1)
                if msg is None:
                    self._commit_pending(c)
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(msg.error()))
                    continue
                with self.lock:
                    self.records.append(Record(msg.partition(), msg.offset(), msg.value(), self.member_name))
                self.pending[msg.partition()] = msg.offset() + 1
                self._commit_pending(c)
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            try:
                self._commit_pending(c, final=True)
                c.close()
            except Exception as e:
                self.errors.append(f"close: {e}")
            self.closed.set()

    def close(self, timeout: float = 20.0):
        self._stop_flag.set()
        assert self.closed.wait(timeout), f"{self.member_name} did not close within {timeout} s"
        self.join(timeout)

    def snapshot(self) -> tuple[set[int], list[Event]]:
        with self.lock:
            return set(self.assigned), list(self.events)

    def summary(self) -> str:
        with self.lock:
            evs = ", ".join(f"{e.kind}{e.partitions}" for e in self.events)
            return (
                f"{self.member_name}: assigned={sorted(self.assigned)} records={len(self.records)} "
                f"events=[{evs}] commit_errors={self.commit_errors[:3]} "
                f"retried_commits={self.commit_retries[:3]} errors={self.errors[:3]}"
            )


def settled(members: list[Member], partitions: int, quiet: float = 1.0) -> bool:
    """Every partition is owned by exactly one of `members`, every member owns at least one
    (there are no more members than partitions here) and no member saw a rebalance event for
    `quiet` seconds."""
    owned: list[int] = []
    last = 0.0
    for m in members:
        a, evs = m.snapshot()
        if not a:
            return False
        owned += sorted(a)
        if evs:
            last = max(last, evs[-1].t)
    return sorted(owned) == list(range(partitions)) and time.monotonic() - last >= quiet


# --------------------------------------------------------------------------- coordinators


def find_coordinator(bootstrap: str, group: str) -> tuple[int, int]:
    """FindCoordinator v1 for a consumer group, asked of the one broker at `bootstrap`:
    (error code, coordinator node id)."""
    request = kw.find_coordinator_v1_request(1, group)
    return kw.parse_find_coordinator_v1_response(kw.roundtrip(bootstrap, request, timeout=5.0))


def coordinator_of(cluster, group: str, exclude: frozenset = frozenset(), timeout: float = 30) -> int:
    """The coordinator every live node of `cluster` names, once they agree (bounded wait)."""

    def agreed():
        answers = set()
        for nd in cluster.alive():
            error, node_id = find_coordinator(nd.bootstrap, group)
            if error != 0:
                return None
            answers.add(node_id)
        if len(answers) == 1 and not answers & exclude:
            return answers.pop()
        return None

    return cluster.wait_for(f"an agreed coordinator for group {group}", agreed, timeout=timeout)


# --------------------------------------------------------------------------- subprocess member


class ProcessMember:
    """A group member in its own process (this file run as a script)."""

    def __init__(self, bootstrap: str, topic: str, group: str, **conf):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), bootstrap, topic, group, json.dumps(conf)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict] = []
        self.stderr: list[str] = []
        self.lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["t"] = time.monotonic()
            with self.lock:
                self.events.append(ev)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def assigned(self) -> set[int]:
        owned: set[int] = set()
        for ev in self.snapshot():
            if ev["ev"] == "assign":
                owned |= set(ev["p"])
            elif ev["ev"] in ("revoke", "lost"):
                owned -= set(ev["p"])
        return owned

    def records(self) -> list[dict]:
        return [e for e in self.snapshot() if e["ev"] == "rec"]

    def summary(self) -> str:
        evs = [f"{e['ev']}{e.get('p')}" for e in self.snapshot() if e["ev"] != "rec"]
        errs = [e for e in self.snapshot() if e["ev"] in ("error", "commit_error")]
        return (
            f"pid {self.proc.pid}: assigned={sorted(self.assigned())} records={len(self.records())} events={evs} "
            f"errors={errs[:3]} stderr={self.stderr[-5:]}"
        )

    def stop(self, timeout: float = 20.0):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _member_main(argv: list[str]) -> None:
    bootstrap, topic, group = argv[:3]
    extra = json.loads(argv[3]) if len(argv) > 3 else {}
    out_lock = threading.Lock()

    def emit(**ev):
        with out_lock:
            sys.stdout.write(json.dumps(ev) + "\n")
            sys.stdout.flush()

    stop = threading.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    c = Consumer(member_conf(bootstrap, group, **extra))
    c.subscribe(
        [topic],
        on_assign=lambda _c, ps: emit(ev="assign", p=sorted(p.partition for p in ps)),
        on_revoke=lambda _c, ps: emit(ev="revoke", p=sorted(p.partition for p in ps)),
        on_lost=lambda _c, ps: emit(ev="lost", p=sorted(p.partition for p in ps)),
    )
    try:
        while not stop.is_set():
            msg = c.poll(0.1)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    emit(ev="error", msg=str(msg.error()))
                continue
            emit(ev="rec", p=msg.partition(), o=msg.offset(), v=msg.value().decode())
            try:
                c.commit(message=msg, asynchronous=False)
            except KafkaException as e:
                emit(ev="commit_error", msg=str(e))
    finally:
        c.close()


def log_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High watermarks by partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "runnel-pytest-unused", "log_level": LOG_LEVEL})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    from conftest import runnel_bin

    return subprocess.run([str(runnel_bin()), *args], capture_output=True, text=True, timeout=timeout)


def run_cli_ok(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    r = run_cli(*args, timeout=timeout)
    assert r.returncode == 0, f"runnel {' '.join(args)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def describe_summary(text: str) -> dict[str, str]:
    """The `Key: value` lines above the table of `runnel group describe`."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            break
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def describe_rows(text: str) -> list[dict[str, str]]:
    """The table of `runnel group describe` (or any whitespace-separated table whose header
    starts with TOPIC or CONSUMER-ID) as dicts."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cols = line.split()
        if cols and cols[0] in ("TOPIC", "CONSUMER-ID", "GROUP"):
            rows = []
            for row in lines[i + 1 :]:
                if not row.strip():
                    break
                cells = row.split(None, len(cols) - 1)
                rows.append(dict(zip(cols, cells)))
            return rows
    raise AssertionError(f"no table in output:\n{text}")


if __name__ == "__main__":
    _member_main(sys.argv[1:])
