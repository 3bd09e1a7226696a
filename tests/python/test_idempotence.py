"""Idempotent producer: InitProducerId, duplicate batches dropped with their original offset,
sequence gaps and fenced epochs rejected, producer state surviving a SIGKILL.

The client tests put a TCP proxy between the client and the node (the node advertises the
proxy, so every connection goes through it) and have the proxy cut every connection every
~300 ms. Requests already forwarded lose their responses, the client retries them, and the
node must drop the retries: every record exactly once, in order.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

import kafkawire as kw
from conftest import Node, free_ports
from util import consume, create_topic, producer

DUP_LINE = "dropped a duplicate batch"
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
UNSUPPORTED_VERSION = 35


class ChaosProxy:
    """Forwards 127.0.0.1:<port> to `target`. While `cutting` is set, every `cut_every`
    seconds it closes every open connection (both sides), losing whatever was in flight, and
    every `drop_response_every`-th chunk the node sends is swallowed and its connection cut:
    the node has processed that request but the client never hears back, so it must retry."""

    def __init__(self, port: int, target: tuple[str, int], cut_every: float = 0.3, drop_response_every: int = 50):
        self.port = port
        self.target = target
        self.cut_every = cut_every
        self.drop_response_every = drop_response_every
        self.responses = 0
        self.dropped_responses = 0
        self.cutting = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.conns: list[tuple[socket.socket, socket.socket]] = []
        self.cuts = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._chaos, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_node: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_node and self.cutting.is_set():
                    with self.lock:
                        self.responses += 1
                        drop = self.responses % self.drop_response_every == 0
                    if drop:
                        self.dropped_responses += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _chaos(self) -> None:
        while not self.stopped.wait(self.cut_every):
            if not self.cutting.is_set():
                continue
            with self.lock:
                conns, self.conns = self.conns, []
            for pair in conns:
                self.cuts += 1
                for s in pair:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        with self.lock:
            for pair in self.conns:
                for s in pair:
                    s.close()


class ProxiedNode(Node):
    """A node that advertises the proxy's address instead of its own."""

    def __init__(self, *args, advertised: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.advertised = advertised

    def args(self) -> list[str]:
        return super().args() + ["--advertised-kafka", self.advertised]


@pytest.fixture
def proxied(request, tmp_path):
    """(node, proxy): a node whose clients all go through a ChaosProxy."""
    (proxy_port,) = free_ports(1)
    node = ProxiedNode(tmp_path / "node" / "data", tmp_path / "node.log", advertised=f"127.0.0.1:{proxy_port}")
    request.node._runnel_nodes = [node]
    node.start()
    proxy = ChaosProxy(proxy_port, ("127.0.0.1", node.kafka_port))
    try:
        yield node, proxy
    finally:
        proxy.close()
        try:
            node.stop()
        finally:
            node.kill()


def dup_lines(node: Node) -> int:
    return node.log_path.read_text(errors="replace").count(DUP_LINE)


def check_exactly_once(node: Node, topic: str, count: int) -> None:
    got = consume(node.bootstrap, topic, expected=count, timeout=60, settle=1.0)
    values = [int(c.value) for c in got]
    assert len(values) == count, f"read {len(values)} records, wanted {count}"
    assert values == list(range(count)), "records are duplicated, lost or out of order"
    assert [c.offset for c in got] == list(range(count))


def test_librdkafka_idempotent_through_connection_cuts(proxied, topic):
    node, proxy = proxied
    count = 20_000
    create_topic(node.bootstrap, topic, 1)
    p = producer(
        proxy.address,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        batch_num_messages=200,
        message_timeout_ms=120_000,
        reconnect_backoff_ms=10,
        reconnect_backoff_max_ms=100,
        # librdkafka >= 2.10 "re-bootstraps" (KIP-899) when every broker connection is down
        # at once, which this proxy does every 300 ms; the re-bootstrap cycle then rarely gets
        # as far as a producer id. Cutting is the point of the test, so keep the brokers.
        metadata_recovery_strategy="none",
    )
    errors = []
    delivered = [0]

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[0] += 1

    proxy.cutting.set()
    for i in range(count):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if i % 500 == 0:
            time.sleep(0.02)  # spread the produce over several cuts
    deadline = time.monotonic() + 90  # below pytest's timeout, so a stall fails readably
    while p.flush(1.0) > 0 and time.monotonic() < deadline:
        pass
    proxy.cutting.clear()
    assert not errors, errors[:5]
    assert delivered[0] == count
    assert proxy.cuts + proxy.dropped_responses > 0
    check_exactly_once(node, topic, count)
    assert dup_lines(node) > 0, "no retried batch reached the node: the dedup path never ran"


def test_kafka_python_idempotent_through_connection_cuts(proxied, topic):
    from kafka import KafkaProducer

    node, proxy = proxied
    count = 3_000
    create_topic(node.bootstrap, topic, 1)
    before = dup_lines(node)
    proxy.drop_response_every = 7  # kafka-python sends fewer, larger requests
    p = KafkaProducer(
        bootstrap_servers=proxy.address,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        batch_size=512,
        retries=1_000_000,
        retry_backoff_ms=20,
        reconnect_backoff_ms=10,
        reconnect_backoff_max_ms=100,
        request_timeout_ms=10_000,
        delivery_timeout_ms=120_000,
    )
    try:
        proxy.cutting.set()
        futures = []
        for i in range(count):
            futures.append(p.send(topic, value=str(i).encode(), partition=0))
            if i % 100 == 0:
                time.sleep(0.02)
        p.flush(timeout=120)
        proxy.cutting.clear()
        for f in futures:
            f.get(timeout=60)
    finally:
        proxy.cutting.clear()
        p.close(timeout=10)
    check_exactly_once(node, topic, count)
    assert proxy.dropped_responses > 0
    assert dup_lines(node) > before, "no retried batch reached the node: the dedup path never ran"


# --- raw protocol -------------------------------------------------------------------------


def init_producer_id(bootstrap: str, transactional_id: str | None = None) -> kw.InitProducerIdV0:
    resp = kw.roundtrip(bootstrap, kw.init_producer_id_v0_request(7, transactional_id))
    return kw.parse_init_producer_id_v0_response(resp)


def produce(bootstrap: str, topic: str, batch: bytes) -> kw.PartitionProduceResult:
    resp = kw.roundtrip(bootstrap, kw.produce_v3_request(11, topic, 0, batch))
    _, results = kw.parse_produce_v3_response(resp)
    assert len(results) == 1
    return results[0]


def high_watermark(bootstrap: str, topic: str) -> int:
    resp = kw.roundtrip(bootstrap, kw.fetch_v4_request(3, topic, 0, 0, max_wait_ms=0, max_bytes=1))
    _, results = kw.parse_fetch_v4_response(resp)
    return results[0].high_watermark


def batch(pid: int, epoch: int, seq: int, n: int, tag: str = "r") -> bytes:
    return kw.idempotent_record_batch(
        [kw.Record(None, f"{tag}{seq + i}".encode()) for i in range(n)], pid, epoch, seq
    )


def test_raw_duplicate_gap_and_fenced_epoch(node, topic):
    create_topic(node.bootstrap, topic, 1)
    init = init_producer_id(node.bootstrap)
    assert init.error_code == 0 and init.producer_id >= 0 and init.producer_epoch == 0
    pid = init.producer_id
    assert init_producer_id(node.bootstrap).producer_id != pid

    first = produce(node.bootstrap, topic, batch(pid, 0, 0, 3))
    assert (first.error_code, first.base_offset) == (0, 0)
    assert produce(node.bootstrap, topic, batch(pid, 0, 3, 2)).base_offset == 3
    assert high_watermark(node.bootstrap, topic) == 5

    # The same batch again: success, the original offset, nothing appended.
    again = produce(node.bootstrap, topic, batch(pid, 0, 0, 3))
    assert (again.error_code, again.base_offset) == (0, 0)
    assert high_watermark(node.bootstrap, topic) == 5

    # A gap in the sequence.
    gap = produce(node.bootstrap, topic, batch(pid, 0, 9, 1))
    assert gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
    # A newer epoch starts over at 0; the old epoch is then fenced.
    assert produce(node.bootstrap, topic, batch(pid, 1, 0, 1)).error_code == 0
    old = produce(node.bootstrap, topic, batch(pid, 0, 5, 1))
    assert old.error_code == INVALID_PRODUCER_EPOCH
    assert high_watermark(node.bootstrap, topic) == 6
    log = node.log_path.read_text(errors="replace")
    assert DUP_LINE in log
    assert "out of order sequence number" in log and "expected sequence 5, got 9" in log

    # Transactions are not supported yet.
    txn = init_producer_id(node.bootstrap, transactional_id="txn-1")
    assert txn.error_code == UNSUPPORTED_VERSION
    assert "transactions are not supported yet" in node.log_path.read_text(errors="replace")


@pytest.mark.parametrize("how", ["sigkill", "clean"])
def test_duplicate_recognised_after_restart(node, topic, how):
    create_topic(node.bootstrap, topic, 1)
    pid = init_producer_id(node.bootstrap).producer_id
    offsets = []
    for i in range(10):
        r = produce(node.bootstrap, topic, batch(pid, 0, i * 4, 4))
        assert r.error_code == 0
        offsets.append(r.base_offset)
    if how == "sigkill":
        node.kill()
        node.start()
    else:
        node.restart()
        snapshots = list((node.data_dir / f"{topic}-0").glob("*.snapshot"))
        assert [s.name for s in snapshots] == [f"{40:020}.snapshot"]
    # The retry of the last batch (and of an older one of the last five) is still a duplicate.
    last = produce(node.bootstrap, topic, batch(pid, 0, 36, 4))
    assert (last.error_code, last.base_offset) == (0, offsets[-1])
    older = produce(node.bootstrap, topic, batch(pid, 0, 24, 4))
    assert (older.error_code, older.base_offset) == (0, offsets[6])
    assert high_watermark(node.bootstrap, topic) == 40
    # And the producer continues where it was.
    assert produce(node.bootstrap, topic, batch(pid, 0, 44, 1)).error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(node.bootstrap, topic, batch(pid, 0, 40, 1)).base_offset == 40
    # Ids are not reused after the restart.
    assert init_producer_id(node.bootstrap).producer_id > pid
