"""A full disk: produce gets KAFKA_STORAGE_ERROR, nothing acknowledged is lost, no partial
batch is left behind, and the node serves again once space is freed."""

import os
import subprocess

import pytest

import kafkawire as kw
import util
from conftest import Node

KAFKA_STORAGE_ERROR = 56


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs to fill up (needs root; CI runs as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {r.stderr.decode().strip()} (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def produce_batch(node, topic, correlation_id, values):
    batch = kw.record_batch([kw.Record(key=None, value=v) for v in values])
    payload = kw.roundtrip(node.bootstrap, kw.produce_v3_request(correlation_id, topic, 0, batch))
    (result,) = kw.parse_produce_v3_response(payload)[1]
    return result


def test_full_disk_rejects_writes_and_recovers(small_fs, tmp_path, topic):
    node = Node(small_fs / "data", tmp_path / "node.log")
    try:
        node.start()
        # Reserve 1 MiB to give back later.
        (small_fs / "reserve").write_bytes(b"\0" * (1 << 20))
        acked = []  # values in offset order
        error = None
        for i in range(2000):
            values = [f"{i}-{j}-".encode() + b"x" * 1000 for j in range(10)]
            r = produce_batch(node, topic, i, values)
            if r.error_code != 0:
                error = r.error_code
                break
            assert r.base_offset == len(acked), "offsets must stay contiguous"
            acked += values
        assert error == KAFKA_STORAGE_ERROR, f"expected KAFKA_STORAGE_ERROR once the disk filled, got {error}"
        assert node.alive()
        assert b"No space left on device" in node.log_path.read_bytes(), "the log should say why"

        # Space comes back: the next write continues right after the last acknowledged one.
        os.remove(small_fs / "reserve")
        r = produce_batch(node, topic, 9999, [b"after"])
        assert (r.error_code, r.base_offset) == (0, len(acked))
        acked.append(b"after")

        node.kill()
        node.start()
        got = util.consume(node.bootstrap, topic, expected=len(acked), timeout=60)
        assert [c.value for c in got] == acked
        assert [c.offset for c in got] == list(range(len(acked)))
    finally:
        node.stop()
        node.kill()
