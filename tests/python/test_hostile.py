"""Hostile input (issue 13): frames, batches and connection patterns meant to crash, stall or
bloat a node. In every test a normal client keeps being served by the same node process."""

import struct

import kafkawire as kw
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
