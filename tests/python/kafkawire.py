"""Hand-built Kafka wire protocol for the tests: just enough to send malformed or exact
requests on a raw socket and read the answers.

Only non-flexible request versions are encoded here (request header v1), except the
ApiVersions request with an unsupported version, which uses header v2 like real clients.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

# --- CRC-32C ------------------------------------------------------------------------------


def _make_crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c_py(data: bytes) -> int:
    """Pure-Python CRC-32C (Castagnoli), the checksum of record batches v2."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the crc32c package is much faster; fall back to the table when it is missing
    import crc32c as _crc32c_mod

    def crc32c(data: bytes) -> int:
        return _crc32c_mod.crc32c(data)

except ImportError:  # pragma: no cover
    crc32c = crc32c_py


# --- primitive encoders -------------------------------------------------------------------


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def nbytes(b: bytes | None) -> bytes:
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v: int) -> bytes:
    """Zig-zag signed varint (also used for varlongs)."""
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


# --- record batch v2 ----------------------------------------------------------------------


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_delta: int = 0


def encode_record(offset_delta: int, rec: Record) -> bytes:
    body = bytearray()
    body += i8(0)  # attributes
    body += varint(rec.timestamp_delta)
    body += varint(offset_delta)
    for part in (rec.key, rec.value):
        if part is None:
            body += varint(-1)
        else:
            body += varint(len(part)) + part
    body += varint(len(rec.headers))
    for hk, hv in rec.headers:
        hkb = hk.encode()
        body += varint(len(hkb)) + hkb
        if hv is None:
            body += varint(-1)
        else:
            body += varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def record_batch(
    records: list[Record],
    base_timestamp: int | None = None,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
) -> bytes:
    """An uncompressed magic-2 record batch with a correct CRC-32C."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    after_crc = bytearray()
    after_crc += i16(0)  # attributes: no compression, CreateTime, not transactional
    after_crc += i32(len(records) - 1)  # last offset delta
    after_crc += i64(base_timestamp)
    after_crc += i64(max_ts)
    after_crc += i64(-1)  # producer id
    after_crc += i16(-1)  # producer epoch
    after_crc += i32(-1)  # base sequence
    after_crc += i32(len(records))
    for i, rec in enumerate(records):
        after_crc += encode_record(i, rec)
    after_length = i32(partition_leader_epoch) + i8(2) + u32(crc32c(bytes(after_crc))) + after_crc
    return i64(base_offset) + i32(len(after_length)) + after_length


def raw_batch(
    records_section: bytes,
    count: int,
    attributes: int = 0,
    last_offset_delta: int | None = None,
    base_timestamp: int | None = None,
    base_offset: int = 0,
) -> bytes:
    """A magic-2 batch around an already encoded (possibly compressed) records section, with
    whatever count and attributes it is told and a correct CRC-32C: for batches that lie."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    if last_offset_delta is None:
        last_offset_delta = count - 1
    after_crc = i16(attributes) + i32(last_offset_delta) + i64(base_timestamp) + i64(base_timestamp)
    after_crc += i64(-1) + i16(-1) + i32(-1) + i32(count) + records_section
    after_length = i32(-1) + i8(2) + u32(crc32c(after_crc)) + after_crc
    return i64(base_offset) + i32(len(after_length)) + after_length


CRC_OFFSET = 8 + 4 + 4 + 1  # base offset, batch length, leader epoch, magic


def flip_crc_byte(batch: bytes) -> bytes:
    b = bytearray(batch)
    b[CRC_OFFSET] ^= 0xFF
    return bytes(b)


def decode_batches(data: bytes) -> list[tuple[int, list[Record]]]:
    """Decodes uncompressed v2 batches into (offset, Record) pairs; a partial trailing batch
    (allowed in Fetch responses) is ignored. Returns [(offset, Record), ...]."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        base_offset, batch_len = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + batch_len
        if end > len(data):
            break
        magic = data[pos + 16]
        assert magic == 2, f"unexpected magic {magic}"
        attrs = struct.unpack_from(">h", data, pos + 21)[0]
        assert attrs & 0x7 == 0, "decode_batches handles uncompressed batches only"
        (base_ts,) = struct.unpack_from(">q", data, pos + 27)
        (count,) = struct.unpack_from(">i", data, pos + 57)
        rpos = pos + 61
        for _ in range(count):
            length, rpos = _read_varint(data, rpos)
            rec_end = rpos + length
            rpos += 1  # attributes
            ts_delta, rpos = _read_varint(data, rpos)
            off_delta, rpos = _read_varint(data, rpos)
            key, rpos = _read_varbytes(data, rpos)
            value, rpos = _read_varbytes(data, rpos)
            nh, rpos = _read_varint(data, rpos)
            headers = []
            for _ in range(nh):
                hk, rpos = _read_varbytes(data, rpos)
                hv, rpos = _read_varbytes(data, rpos)
                headers.append((hk.decode(), hv))
            assert rpos == rec_end, "record length mismatch"
            out.append((base_offset + off_delta, Record(key, value, headers, ts_delta)))
        pos = end
    return out


def _read_varint_unsigned(data: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result, pos = _read_varint_unsigned(data, pos)
    return (result >> 1) ^ -(result & 1), pos


def _read_varbytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = _read_varint(data, pos)
    if n < 0:
        return None, pos
    return bytes(data[pos : pos + n]), pos + n


# --- requests -----------------------------------------------------------------------------

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18

CLIENT_ID = "runnel-pytest"


def request_header_v1(api_key: int, api_version: int, correlation_id: int, client_id: str | None = CLIENT_ID) -> bytes:
    return i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id)


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


def api_versions_request(api_version: int, correlation_id: int) -> bytes:
    """ApiVersions; v3+ is flexible (header v2 with an empty tagged-field section)."""
    if api_version >= 3:
        header = request_header_v1(API_API_VERSIONS, api_version, correlation_id) + b"\x00"
        body = compact_string("runnel-pytest") + compact_string("1.0") + b"\x00"
    else:
        header = request_header_v1(API_API_VERSIONS, api_version, correlation_id)
        body = b""
    return frame(header + body)


def produce_v3_request(
    correlation_id: int,
    topic: str,
    partition: int,
    batch: bytes,
    acks: int = -1,
    timeout_ms: int = 10_000,
) -> bytes:
    body = string(None) + i16(acks) + i32(timeout_ms)
    body += i32(1) + string(topic) + i32(1) + i32(partition) + nbytes(batch)
    return frame(request_header_v1(API_PRODUCE, 3, correlation_id) + body)


def fetch_v4_request(
    correlation_id: int,
    topic: str,
    partition: int,
    offset: int,
    max_wait_ms: int,
    min_bytes: int = 1,
    max_bytes: int = 1 << 20,
) -> bytes:
    body = i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)
    body += i32(1) + string(topic) + i32(1) + i32(partition) + i64(offset) + i32(max_bytes)
    return frame(request_header_v1(API_FETCH, 4, correlation_id) + body)


# --- responses ----------------------------------------------------------------------------


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        (v,) = struct.unpack_from(">" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(">" + fmt)
        return v

    def string(self) -> str | None:
        n = self.take("h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def nbytes(self) -> bytes | None:
        n = self.take("i")
        if n < 0:
            return None
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(b)

    def uvarint(self) -> int:
        v, self.pos = _read_varint_unsigned(self.data, self.pos)
        return v

    def compact_string(self) -> str | None:
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.pos += self.uvarint()  # size, then the data

    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass
class ApiVersionsV0:
    correlation_id: int
    error_code: int
    apis: dict[int, tuple[int, int]]
    trailing: int  # bytes left after the v0 fields


def parse_api_versions_v0(payload: bytes) -> ApiVersionsV0:
    r = Reader(payload)
    corr = r.take("i")
    err = r.take("h")
    n = r.take("i")
    apis = {}
    for _ in range(n):
        key = r.take("h")
        apis[key] = (r.take("h"), r.take("h"))
    return ApiVersionsV0(corr, err, apis, len(payload) - r.pos)


@dataclass
class PartitionProduceResult:
    topic: str
    partition: int
    error_code: int
    base_offset: int
    log_append_time: int


def produce_v8_request(correlation_id: int, topic: str, partition: int, batch: bytes, acks: int = -1) -> bytes:
    """Produce v8: the first version whose response names refused records (KIP-467)."""
    body = string(None) + i16(acks) + i32(10_000)
    body += i32(1) + string(topic) + i32(1) + i32(partition) + nbytes(batch)
    return frame(request_header_v1(API_PRODUCE, 8, correlation_id) + body)


@dataclass
class ProduceV8Result:
    error_code: int
    base_offset: int
    record_errors: list[tuple[int, str | None]]
    error_message: str | None


def parse_produce_v8_response(payload: bytes) -> tuple[int, list[ProduceV8Result]]:
    r = Reader(payload)
    corr = r.take("i")
    results = []
    for _ in range(r.take("i")):
        r.string()
        for _ in range(r.take("i")):
            r.take("i")  # partition index
            code, base = r.take("h"), r.take("q")
            r.take("q")  # log append time
            r.take("q")  # log start offset
            errors = [(r.take("i"), r.string()) for _ in range(r.take("i"))]
            results.append(ProduceV8Result(code, base, errors, r.string()))
    r.take("i")  # throttle time
    assert r.done()
    return corr, results


def parse_produce_v3_response(payload: bytes) -> tuple[int, list[PartitionProduceResult]]:
    r = Reader(payload)
    corr = r.take("i")
    results = []
    for _ in range(r.take("i")):
        topic = r.string()
        for _ in range(r.take("i")):
            results.append(PartitionProduceResult(topic, r.take("i"), r.take("h"), r.take("q"), r.take("q")))
    r.take("i")  # throttle time
    assert r.done(), f"{len(payload) - r.pos} unexpected trailing bytes in Produce v3 response"
    return corr, results


@dataclass
class PartitionFetchResult:
    topic: str
    partition: int
    error_code: int
    high_watermark: int
    records: bytes | None


def parse_fetch_v4_response(payload: bytes) -> tuple[int, list[PartitionFetchResult]]:
    r = Reader(payload)
    corr = r.take("i")
    r.take("i")  # throttle time
    results = []
    for _ in range(r.take("i")):
        topic = r.string()
        for _ in range(r.take("i")):
            partition = r.take("i")
            err = r.take("h")
            hw = r.take("q")
            r.take("q")  # last stable offset
            n_aborted = r.take("i")
            for _ in range(max(n_aborted, 0)):
                r.take("q")
                r.take("q")
            results.append(PartitionFetchResult(topic, partition, err, hw, r.nbytes()))
    assert r.done(), f"{len(payload) - r.pos} unexpected trailing bytes in Fetch v4 response"
    return corr, results


# --- socket helpers -----------------------------------------------------------------------


def connect(bootstrap: str, timeout: float = 10.0) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_response(sock: socket.socket) -> bytes:
    """One size-delimited response (without its length prefix). Raises on EOF/timeout."""
    (n,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= n < 64 << 20, f"implausible response size {n}"
    return recv_exact(sock, n)


def roundtrip(bootstrap: str, request: bytes, timeout: float = 15.0) -> bytes:
    with connect(bootstrap, timeout) as s:
        s.sendall(request)
        return read_response(s)


def wait_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[bool, bytes]:
    """Reads until the peer closes the connection or `timeout` passes.
    Returns (closed, bytes received before the close)."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, bytes(got)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, bytes(got)
        except (ConnectionResetError, BrokenPipeError):
            return True, bytes(got)
        if not chunk:
            return True, bytes(got)
        got += chunk


# --- consumer-group offsets ---------------------------------------------------------------

API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
ERROR_COORDINATOR_NOT_AVAILABLE = 15
ERROR_UNSTABLE_OFFSET_COMMIT = 88


def find_coordinator_v1_request(correlation_id: int, group: str) -> bytes:
    body = string(group) + i8(0)  # key type 0: consumer group
    return frame(request_header_v1(API_FIND_COORDINATOR, 1, correlation_id) + body)


def parse_find_coordinator_v1_response(payload: bytes) -> tuple[int, int]:
    """(error code, coordinator node id)."""
    r = Reader(payload)
    r.take("i")  # correlation id
    r.take("i")  # throttle time
    error = r.take("h")
    r.string()  # error message
    return error, r.take("i")


def offset_commit_v2_request(correlation_id: int, group: str, topic: str, partition: int, offset: int) -> bytes:
    """A commit from outside group management (generation -1, no member id)."""
    body = string(group) + i32(-1) + string("") + i64(-1)  # retention time: the broker's
    body += i32(1) + string(topic) + i32(1) + i32(partition) + i64(offset) + string(None)
    return frame(request_header_v1(API_OFFSET_COMMIT, 2, correlation_id) + body)


def parse_offset_commit_v2_response(payload: bytes) -> int:
    """The error code of the one committed partition."""
    r = Reader(payload)
    r.take("i")  # correlation id
    assert r.take("i") == 1 and r.string() is not None and r.take("i") == 1
    r.take("i")  # partition
    return r.take("h")


def offset_fetch_v7_request(correlation_id: int, group: str, topic: str, partition: int, require_stable: bool) -> bytes:
    """OffsetFetch v7 (flexible, header v2) of one partition."""
    header = request_header_v1(API_OFFSET_FETCH, 7, correlation_id) + uvarint(0)
    body = compact_string(group)
    body += uvarint(2) + compact_string(topic) + uvarint(2) + i32(partition) + uvarint(0)
    body += i8(1 if require_stable else 0) + uvarint(0)
    return frame(header + body)


def parse_offset_fetch_v7_response(payload: bytes) -> tuple[int, int, int]:
    """(group error code, partition error code, committed offset) of the one partition."""
    r = Reader(payload)
    r.take("i")  # correlation id
    r.skip_tags()
    r.take("i")  # throttle time
    assert r.uvarint() - 1 == 1, "one topic"
    r.compact_string()
    assert r.uvarint() - 1 == 1, "one partition"
    r.take("i")  # partition
    offset = r.take("q")
    r.take("i")  # leader epoch
    r.compact_string()  # metadata
    partition_error = r.take("h")
    r.skip_tags()
    r.skip_tags()
    group_error = r.take("h")
    r.skip_tags()
    assert r.done(), f"{len(payload) - r.pos} unexpected trailing bytes in OffsetFetch v7 response"
    return group_error, partition_error, offset


# --- idempotent producer ------------------------------------------------------------------

API_INIT_PRODUCER_ID = 22


def init_producer_id_v0_request(correlation_id: int, transactional_id: str | None = None, transaction_timeout_ms: int = 60_000) -> bytes:
    body = string(transactional_id) + i32(transaction_timeout_ms)
    return frame(request_header_v1(API_INIT_PRODUCER_ID, 0, correlation_id) + body)


@dataclass
class InitProducerIdV0:
    correlation_id: int
    throttle_time_ms: int
    error_code: int
    producer_id: int
    producer_epoch: int


def parse_init_producer_id_v0_response(payload: bytes) -> InitProducerIdV0:
    r = Reader(payload)
    out = InitProducerIdV0(r.take("i"), r.take("i"), r.take("h"), r.take("q"), r.take("h"))
    assert r.done(), f"{len(payload) - r.pos} unexpected trailing bytes in InitProducerId v0 response"
    return out


def idempotent_record_batch(
    records: list[Record],
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    base_timestamp: int | None = None,
) -> bytes:
    """Like record_batch, with the producer id, epoch and base sequence of an idempotent
    producer."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    after_crc = bytearray()
    after_crc += i16(0)
    after_crc += i32(len(records) - 1)
    after_crc += i64(base_timestamp)
    after_crc += i64(max_ts)
    after_crc += i64(producer_id)
    after_crc += i16(producer_epoch)
    after_crc += i32(base_sequence)
    after_crc += i32(len(records))
    for i, rec in enumerate(records):
        after_crc += encode_record(i, rec)
    after_length = i32(-1) + i8(2) + u32(crc32c(bytes(after_crc))) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


def list_offsets_request(correlation_id: int, version: int, topic: str, partition: int, timestamp: int) -> bytes:
    """ListOffsets v2-v5 (v4 adds current_leader_epoch, sent as -1: unchecked)."""
    assert 2 <= version <= 5, version
    part = i32(partition) + (i32(-1) if version >= 4 else b"") + i64(timestamp)
    body = i32(-1) + i8(0) + i32(1) + string(topic) + i32(1) + part
    return frame(request_header_v1(API_LIST_OFFSETS, version, correlation_id) + body)


def parse_list_offsets_response(payload: bytes, version: int) -> tuple[int, int, int]:
    """(error code, timestamp, offset) of the one partition of a ListOffsets v2-v5 response."""
    pos = 4 + 4  # correlation id, throttle time
    (n_topics,) = struct.unpack_from(">i", payload, pos)
    assert n_topics == 1, n_topics
    (name_len,) = struct.unpack_from(">h", payload, pos + 4)
    pos += 4 + 2 + name_len
    (n_parts,) = struct.unpack_from(">i", payload, pos)
    assert n_parts == 1, n_parts
    _, error, timestamp, offset = struct.unpack_from(">ihqq", payload, pos + 4)
    return error, timestamp, offset

