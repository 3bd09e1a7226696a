"""Hostile input (issue 13): frames, batches and connection patterns meant to crash, stall or
bloat a node. In every test a normal client keeps being served by the same node process."""

import random
import resource
import socket
import struct
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition

import kafkawire as kw
import util
from test_bad_input import still_serves

API_METADATA = 3


def test_metadata_with_a_lying_topic_count(node):
    """The Metadata v1 request of issue 13, whose topic array claims 2,147,483,647 entries,
    once made kafka-protocol ask for 154 GB and abort the process."""
    body = struct.pack(">hhi", 3, 1, 1) + struct.pack(">h", 1) + b"x" + struct.pack(">i", 0x7FFFFFFF)
    for _ in range(3):
        with kw.connect(node.bootstrap) as s:
            s.sendall(kw.frame(body))
            closed, data = kw.wait_closed(s, timeout=10)
        assert closed and data == b"", f"expected the connection closed unanswered, got {data!r}"
        still_serves(node)


def test_lying_counts_in_every_flexible_array(node):
    """The same lie in compact form (a varint count of 2^32-1) inside a flexible Metadata v12
    request, and in a tagged-field count."""
    header = kw.request_header_v1(API_METADATA, 12, 2, client_id="x") + b"\x00"
    lies = [
        header + kw.uvarint(0xFFFFFFFF),  # topics: 2^32-2 entries
        header + b"\x00" + b"\x01\x01" + kw.uvarint(0xFFFFFFFF),  # tagged fields: 2^32-1
    ]
    for body in lies:
        with kw.connect(node.bootstrap) as s:
            s.sendall(kw.frame(body))
            closed, _ = kw.wait_closed(s, timeout=10)
        assert closed
        still_serves(node)


# --- record batches ---------------------------------------------------------------------------

CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
INVALID_RECORD = 87


def peak_rss_mib(node) -> float:
    """The node process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def produce_raw(node, topic: str, batch: bytes, correlation_id: int = 7) -> int:
    """Produce v3 of one batch to partition 0; the partition's error code."""
    payload = kw.roundtrip(node.bootstrap, kw.produce_v3_request(correlation_id, topic, 0, batch), timeout=60)
    corr, results = kw.parse_produce_v3_response(payload)
    assert corr == correlation_id and len(results) == 1
    return results[0].error_code


def gzip_bomb(uncompressed_bytes: int) -> bytes:
    """A records section holding one record whose value is `uncompressed_bytes` zeros,
    gzip-compressed as it streams (DEFLATE shrinks zeros about 1,000-fold)."""
    value_len = kw.varint(uncompressed_bytes)
    body_len = 1 + 1 + 1 + len(kw.varint(1)) + 1 + len(value_len) + uncompressed_bytes + 1
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(kw.varint(body_len) + b"\x00\x00\x00" + kw.varint(1) + b"k" + value_len)]
    chunk = bytes(1 << 20)
    left = uncompressed_bytes
    while left:
        n = min(left, len(chunk))
        out.append(z.compress(chunk[:n]))
        left -= n
    out.append(z.compress(b"\x00"))  # no headers
    out.append(z.flush())
    return b"".join(out)


def test_gzip_bomb_is_refused_without_growing_memory(node, topic):
    """One batch of about 1 MiB that gunzips to 1 GiB. (A 1 KiB gzip stream cannot: DEFLATE
    expands at most 1032-fold, so 1 GiB needs about 1 MiB.)"""
    util.create_topic(node.bootstrap, topic, 1, {"max.message.bytes": str(2 << 20)})
    section = gzip_bomb(1 << 30)
    assert len(section) < 2 << 20
    rss_before = peak_rss_mib(node)
    err = produce_raw(node, topic, kw.raw_batch(section, 1, attributes=1))
    assert err == MESSAGE_TOO_LARGE, f"error code {err}"
    rss_after = peak_rss_mib(node)
    # The bound: max.message.bytes of output (twice while its buffer grows) plus the request.
    assert rss_after - rss_before < 64, f"peak RSS grew from {rss_before:.0f} to {rss_after:.0f} MiB"
    still_serves(node)


def test_snappy_block_claiming_4_gib(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    claims = [
        b"\xff\xff\xff\xff\x0f" + bytes(16),  # a raw block: varint length 2^32 - 1
        b"\x82SNAPPY\x00" + kw.i32(1) + kw.i32(1) + kw.i32(21) + b"\xff\xff\xff\xff\x0f" + bytes(16),
    ]
    rss_before = peak_rss_mib(node)
    for section in claims:
        err = produce_raw(node, topic, kw.raw_batch(section, 1, attributes=2))
        assert err in (MESSAGE_TOO_LARGE, CORRUPT_MESSAGE), f"error code {err}"
    assert peak_rss_mib(node) - rss_before < 32
    still_serves(node)


def test_garbage_records_with_a_valid_crc_are_refused(node, topic):
    """Kafka's record validation: the batch's CRC is right but its records are not."""
    util.create_topic(node.bootstrap, topic, 1)
    good = kw.encode_record(0, kw.Record(b"k", b"v"))
    cases = {
        "lying record count": kw.raw_batch(good, 0x7FFFFFFF),
        "record length past the batch": kw.raw_batch(b"\x7e" + good[1:], 1),
        "bytes after the last record": kw.raw_batch(good + b"\x00\x00", 1),
        "offset delta 5 for record 0": kw.raw_batch(kw.encode_record(5, kw.Record(b"k", b"v")), 1),
        "a control batch from a client": kw.raw_batch(good, 1, attributes=0x20),
    }
    for what, batch in cases.items():
        err = produce_raw(node, topic, batch)
        assert err == INVALID_RECORD, f"{what}: error code {err}"
    # Nothing was stored: the partition is empty and still takes good records.
    delivered = util.produce_ok(node.bootstrap, topic, [(b"k", b"fine")], partition=0)
    assert delivered[0].offset == 0
    still_serves(node)


def test_invalid_records_are_named_to_the_client(node, topic):
    """KIP-467: from Produce v8 the response names the refused records and says why; a real
    client gets the error codes."""
    util.create_topic(node.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    records = [kw.Record(b"k0", b"v"), kw.Record(None, b"v"), kw.Record(b"k2", b"v"), kw.Record(None, b"v")]
    payload = kw.roundtrip(node.bootstrap, kw.produce_v8_request(5, topic, 0, kw.record_batch(records)))
    _, [result] = kw.parse_produce_v8_response(payload)
    assert result.error_code == INVALID_RECORD and result.base_offset == -1
    assert [i for i, _ in result.record_errors] == [1, 3], result.record_errors
    assert all("without a key" in why for _, why in result.record_errors)
    assert "2 record(s)" in result.error_message, result.error_message

    p = util.producer(node.bootstrap)
    errors = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0  # one batch each
    future = int(time.time() * 1000) + 2 * 3_600_000
    p.produce(topic, key=b"k", value=b"late", partition=0, timestamp=future, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert [e.code() if e else None for e in errors] == [KafkaError.INVALID_RECORD, KafkaError.INVALID_TIMESTAMP]
    still_serves(node)


def test_a_stored_batch_with_a_lying_record_count(node_factory, topic):
    """A batch whose CRC is valid but whose record count claims 2^31-1 records, planted in a
    compacted partition's log (as a bad disk or an older version could leave it): recovery
    keeps it, and neither the log cleaner, ListOffsets by timestamp nor a fetch may allocate
    what it claims."""
    node = node_factory(extra_config=["log.cleaner.backoff.ms=200"])
    config = {"cleanup.policy": "compact", "segment.bytes": "200", "min.cleanable.dirty.ratio": "0.01"}
    util.create_topic(node.bootstrap, topic, 1, config)
    t0 = int(time.time() * 1000)
    util.produce_ok(node.bootstrap, topic, [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")], partition=0)
    node.stop()
    segment = sorted((node.data_dir / f"{topic}-0").glob("*.log"))[-1]
    end = 3
    lying = kw.raw_batch(
        kw.encode_record(0, kw.Record(b"a", b"4")),
        0x7FFFFFFF,
        last_offset_delta=0x7FFFFFFE,
        base_timestamp=t0 + 60_000,
        base_offset=end,
    )
    with open(segment, "ab") as f:
        f.write(lying)
    node.start()
    # More records after it roll segments, so the cleaner reaches the planted batch.
    for i in range(5):
        util.produce_ok(node.bootstrap, topic, [(b"c", str(i).encode())], partition=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "cannot decode batch" not in node.log_path.read_text(errors="replace"):
        time.sleep(0.2)
    assert "cannot decode batch" in node.log_path.read_text(errors="replace"), "the cleaner never read the planted batch"
    # ListOffsets by timestamp lands on the planted batch.
    c = util.consumer(node.bootstrap)
    found = c.offsets_for_times([TopicPartition(topic, 0, t0 + 30_000)], timeout=10)
    assert found[0].error is None and found[0].offset == end, found
    c.close()
    # A consumer reading across it: the node keeps serving, whatever the client makes of it.
    with kw.connect(node.bootstrap) as s:
        s.sendall(kw.fetch_v4_request(11, topic, 0, 0, max_wait_ms=100))
        kw.read_response(s)
    still_serves(node)


# --- connections ------------------------------------------------------------------------------


def rss_mib(node) -> float:
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc status")


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    closed, _ = kw.wait_closed(s, timeout=timeout)
    return closed


def test_2000_idle_connections(node_factory):
    """2,000 connections that never send a byte: a normal client is served throughout, and
    connections.max.idle.ms closes them all."""
    raise_fd_limit(2500)
    node = node_factory(extra_config=["connections.max.idle.ms=4000"])
    rss_before = rss_mib(node)
    host, port = node.bootstrap.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2000)]
    try:
        still_serves(node)
        assert rss_mib(node) - rss_before < 64, f"RSS {rss_before:.0f} -> {rss_mib(node):.0f} MiB"
        deadline = time.monotonic() + 30
        for s in idle:
            assert closed_by_peer(s, max(0.1, deadline - time.monotonic())), "an idle connection stayed open"
        still_serves(node)
    finally:
        for s in idle:
            s.close()


def test_slow_loris_senders_are_cut_off(node_factory):
    """Senders that dribble a frame one byte at a time are closed once
    socket.request.read.timeout.ms passes since the frame's first byte, while a normal client
    is served."""
    node = node_factory(extra_config=["socket.request.read.timeout.ms=2000"])
    frame = kw.api_versions_request(3, 99)
    slow = [kw.connect(node.bootstrap) for _ in range(50)]
    started = time.monotonic()
    try:
        for i in range(len(frame) - 1):  # never the last byte
            for s in slow:
                try:
                    s.sendall(frame[i : i + 1])
                except OSError:
                    pass
            if time.monotonic() - started > 6:
                break
            time.sleep(0.2)
        still_serves(node)
        for s in slow:
            assert closed_by_peer(s, 10), "a slow-loris connection stayed open"
        assert time.monotonic() - started < 15
        still_serves(node)
    finally:
        for s in slow:
            s.close()


def test_a_client_that_never_reads(node_factory, topic):
    """A client pipelines 200 Fetch requests for 1 MiB each and never reads a response: the
    node holds a bounded amount for it (socket.send.buffer.bytes plus one response plus the
    kernel's buffers), and closes it after connections.max.idle.ms without progress."""
    node = node_factory(extra_config=["connections.max.idle.ms=3000"])
    util.create_topic(node.bootstrap, topic, 1)
    value = bytes(1000)
    util.produce_ok(node.bootstrap, topic, [(None, value)] * 5000, partition=0, linger_ms=20)
    rss_before = rss_mib(node)
    s = kw.connect(node.bootstrap)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        for i in range(200):
            s.sendall(kw.fetch_v4_request(i, topic, 0, 0, max_wait_ms=0, max_bytes=1 << 20))
        time.sleep(2)
        still_serves(node)
        grown = rss_mib(node) - rss_before
        assert grown < 48, f"RSS grew {grown:.0f} MiB for a client that does not read"
        # No progress for connections.max.idle.ms: the node gives up on it.
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline and "read none of its responses" not in text:
            time.sleep(0.3)
            text = node.log_path.read_text(errors="replace")
        assert "read none of its responses" in text
        still_serves(node)
    finally:
        s.close()


def test_max_connections_per_ip(node_factory):
    node = node_factory(extra_config=["max.connections.per.ip=10"])
    held = [kw.connect(node.bootstrap) for _ in range(10)]
    try:
        extra = kw.connect(node.bootstrap)
        assert closed_by_peer(extra, 5), "an 11th connection from one address was kept"
        extra.close()
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    still_serves(node)


def test_a_frame_larger_than_the_memory_pool_still_goes_through(node_factory, topic):
    """queued.max.request.bytes bounds the request bytes the node holds; a single frame larger
    than the pool waits for the whole pool rather than forever."""
    node = node_factory(extra_config=["queued.max.request.bytes=65536"])
    util.create_topic(node.bootstrap, topic, 1)
    batch = kw.record_batch([kw.Record(b"k", bytes(200_000))])
    assert produce_raw(node, topic, batch) == 0
    still_serves(node)


def test_pipelined_produce_to_a_topic_being_auto_created(node):
    """Requests on one connection take effect in the order sent, also when the first waits
    for the topic's auto-creation: 50 pipelined acks=1 produce requests get increasing offsets
    and the log holds the records in the order they were sent."""
    topic = f"auto-{int(time.time() * 1000)}"
    n = 50
    with kw.connect(node.bootstrap) as s:
        s.sendall(b"".join(
            kw.produce_v3_request(i, topic, 0, kw.record_batch([kw.Record(None, str(i).encode())]), acks=1)
            for i in range(n)
        ))
        results = [kw.parse_produce_v3_response(kw.read_response(s)) for _ in range(n)]
    assert [corr for corr, _ in results] == list(range(n))
    offsets = [r[0].base_offset for _, r in results if r[0].error_code == 0]
    assert len(offsets) >= n - 1, results
    assert offsets == sorted(offsets), f"offsets out of request order: {offsets}"
    consumed = util.consume(node.bootstrap, topic, partitions=[0], expected=len(offsets))
    values = [int(m.value) for m in consumed]
    assert values == sorted(values), f"records stored out of order: {values}"


# --- the other ports ----------------------------------------------------------------------------


def test_rpc_and_http_ports_shrug_off_garbage(node_factory):
    """The gRPC port (Raft, controller, replication) and the HTTP port get garbage, truncated
    HTTP/2 frames, oversized headers, dribbled headers and silent connections; the node keeps
    serving Kafka clients and GET /health."""
    raise_fd_limit(2000)
    node = node_factory(extra_config=["socket.request.read.timeout.ms=2000"])
    rnd = random.Random(13)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    rpc_payloads = [
        rnd.randbytes(4096),
        preface,  # then nothing
        preface + b"\xff\xff\xff\x04\x00\x00\x00\x00\x00",  # a SETTINGS frame claiming 16 MiB
        preface + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\x00\x40\x00\x01\x00\x00\x00\x00\x01\x00\x00\x00\x01"
        + rnd.randbytes(64),  # HEADERS with a garbage block, END_STREAM
    ]
    http_payloads = [
        rnd.randbytes(4096),
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
        b"POST /v1/cluster HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" + bytes(1 << 16),
        b"GET /health HTTP/1.1\r\n",  # then nothing: an unfinished request
    ]
    sockets = []
    try:
        for port, payloads in ((node.rpc_port, rpc_payloads), (node.http_port, http_payloads)):
            for _ in range(50):
                for p in payloads:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    try:
                        s.sendall(p)
                    except OSError:
                        pass
                    sockets.append(s)
            for _ in range(200):
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        still_serves(node)
        with urllib.request.urlopen(f"{node.http}/health", timeout=10) as r:
            assert r.status == 200
        # An HTTP request whose headers never end is dropped (header read timeout, 10 s).
        unfinished = socket.create_connection(("127.0.0.1", node.http_port), timeout=5)
        sockets.append(unfinished)
        unfinished.sendall(b"GET /health HTTP/1.1\r\n")
        assert closed_by_peer(unfinished, 20), "an unfinished HTTP request was held open"
    finally:
        for s in sockets:
            s.close()
    time.sleep(1)
    assert node.alive()
    still_serves(node)
