"""Network-level fuzzer: mutated real client frames sent to a live cluster's Kafka ports while a
well-behaved workload runs (an idempotent acks=all producer and a consumer group). The
pytest test (test_netfuzz.py) runs a short round; `python tests/python/netfuzz.py --seconds
600` runs a long one against its own three-node cluster and prints the figures that
docs/robustness.md records.

Seeds are the frames captured from real clients (librdkafka, confluent-kafka, kafka-python:
crates/runnel-gateway/tests/fixtures) plus frames built here (Produce with real batches,
Fetch, Metadata, ApiVersions). Mutations: bit flips, interesting bytes (0x00, 0x7f, 0x80,
0xff), 2- and 4-byte length lies, truncation, splicing two frames, garbage tails, and a lying
frame-length prefix. Each fuzz connection sends a few mutated frames pipelined, reads for a
moment and closes."""

from __future__ import annotations

import argparse
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import kafkawire as kw

FIXTURES = Path(__file__).resolve().parents[2] / "crates" / "runnel-gateway" / "tests" / "fixtures"


def seed_frames(topic: str) -> list[bytes]:
    """Request frames without their 4-byte length prefix."""
    seeds = [p.read_bytes() for p in sorted(FIXTURES.glob("*.bin"))]
    batch = kw.record_batch([kw.Record(b"key", b"value" * 10, [("h", b"v")]) for _ in range(3)])
    built = [
        kw.produce_v3_request(1, topic, 0, batch, acks=1),
        kw.produce_v8_request(2, topic, 0, batch, acks=-1),
        kw.fetch_v4_request(3, topic, 0, 0, max_wait_ms=10),
        kw.api_versions_request(3, 4),
        kw.api_versions_request(0, 5),
        kw.frame(kw.request_header_v1(kw.API_METADATA, 1, 6) + kw.i32(1) + kw.string(topic)),
    ]
    seeds += [f[4:] for f in built]
    return seeds


INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF]
LIES = [0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0x00FFFFFF, 0x0000FFFF, 0x7FFF, 0xFFFF]


def mutate(rnd: random.Random, frame: bytes, seeds: list[bytes]) -> bytes:
    b = bytearray(frame)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(8)
        if not b:
            b += rnd.randbytes(8)
        i = rnd.randrange(len(b))
        if op == 0:  # bit flip
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:  # interesting byte
            b[i] = rnd.choice(INTERESTING)
        elif op == 2 and len(b) >= 4:  # a 4-byte length or count lie
            i = rnd.randrange(len(b) - 3)
            b[i : i + 4] = struct.pack(">I", rnd.choice(LIES))
        elif op == 3 and len(b) >= 2:  # a 2-byte length lie
            i = rnd.randrange(len(b) - 1)
            b[i : i + 2] = struct.pack(">H", rnd.choice(LIES) & 0xFFFF)
        elif op == 4:  # truncation
            del b[rnd.randrange(len(b)) :]
        elif op == 5:  # splice with another seed
            other = rnd.choice(seeds)
            j = rnd.randrange(len(other) + 1)
            b = b[:i] + bytearray(other[j:])
        elif op == 6:  # garbage tail
            b += rnd.randbytes(rnd.randint(1, 64))
        else:  # a varint-ish run
            b[i : i + 5] = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
    return bytes(b)


def wire(rnd: random.Random, body: bytes) -> bytes:
    """The frame with a length prefix: usually true, sometimes a lie."""
    r = rnd.random()
    if r < 0.9:
        n = len(body)
    elif r < 0.95:
        n = len(body) + rnd.randint(1, 1 << 20)
    else:
        n = rnd.choice([-1, 0, 7, 0x7FFFFFFF, len(body) // 2])
    return struct.pack(">i", n) + body


@dataclass
class Stats:
    frames: int = 0
    connections: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_fuzzers(addrs, topic: str, seconds: float, threads: int, seed: int = 1) -> Stats:
    seeds = seed_frames(topic)
    stats = Stats()
    stop = threading.Event()
    workers = [
        threading.Thread(target=counted_worker, args=(seed * 1000 + i, addrs, seeds, stop, stats), daemon=True)
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join(timeout=10)
    return stats


def counted_worker(seed: int, addrs, seeds, stop: threading.Event, stats: Stats) -> None:
    """One fuzz thread: connections of 1-8 mutated frames each; counts the frames sent."""
    rnd = random.Random(seed)
    while not stop.is_set():
        host, port = rnd.choice(addrs)
        try:
            s = socket.create_connection((host, port), timeout=2)
        except OSError:
            with stats.lock:
                stats.refused += 1
            time.sleep(0.05)
            continue
        n = rnd.randint(1, 8)
        try:
            s.settimeout(0.2)
            s.sendall(b"".join(wire(rnd, mutate(rnd, rnd.choice(seeds), seeds)) for _ in range(n)))
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
        except OSError:
            n = 0
        finally:
            s.close()
        with stats.lock:
            stats.connections += 1
            stats.frames += n


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    """Samples the nodes' resident set every 200 ms; `peak` per pid."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {p: 0.0 for p in pids}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self.pids:
                try:
                    self.peak[p] = max(self.peak[p], rss_mib(p))
                except OSError:
                    pass
            time.sleep(0.2)


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import tempfile

    from cluster import Cluster
    from test_netfuzz import Workload

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(3, Path(tmp))
        try:
            c.start()
            work = Workload(c.bootstrap, "netfuzz-workload")
            work.start()
            sampler = RssSampler([nd.proc.pid for nd in c.nodes])
            sampler.start()
            t0 = time.monotonic()
            addrs = [("127.0.0.1", nd.kafka_port) for nd in c.nodes]
            stats = run_fuzzers(addrs, "netfuzz-target", args.seconds, args.threads, args.seed)
            elapsed = time.monotonic() - t0
            report = work.finish()
            sampler.stop.set()
            dead = [nd.node_id for nd in c.nodes if not nd.alive()]
            print(f"fuzzed frames: {stats.frames} over {stats.connections} connections in {elapsed:.0f} s "
                  f"({stats.frames / elapsed:.0f}/s), refused connects: {stats.refused}")
            print(f"peak RSS per node (MiB): {[round(v) for v in sampler.peak.values()]}")
            print(f"workload: {report}")
            print(f"dead nodes: {dead}")
            sys.exit(1 if dead or report.lost or report.duplicated else 0)
        finally:
            c.close()


if __name__ == "__main__":
    main()
