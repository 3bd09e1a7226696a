"""kcat (librdkafka) against a node: metadata, produce with keys, consume back."""

import json
import subprocess
import time


def kcat(kcat_bin, *args, input=None, timeout=30):
    return subprocess.run([kcat_bin, *args], input=input, capture_output=True, text=True, timeout=timeout)


def test_kcat_metadata_lists_broker_and_auto_created_topic(node, kcat_bin, topic):
    # Asking for a topic that does not exist auto-creates it with 1 partition; the first
    # answer may still say LEADER_NOT_AVAILABLE, so ask again for a bounded while.
    deadline = time.monotonic() + 15
    while True:
        r = kcat(kcat_bin, "-b", node.bootstrap, "-L", "-J", "-t", topic, "-X", "allow.auto.create.topics=true")
        assert r.returncode == 0, f"kcat -L failed: {r.stderr}"
        md = json.loads(r.stdout)
        topics = {t["topic"]: t for t in md["topics"]}
        t = topics.get(topic)
        ready = t is not None and "error" not in t and len(t["partitions"]) == 1 and t["partitions"][0].get("leader") == 1
        if ready or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert md["brokers"] == [{"id": 1, "name": node.bootstrap}], md
    assert t is not None, f"auto-created topic missing from metadata: {md}"
    assert "error" not in t, t
    assert [p["partition"] for p in t["partitions"]] == [0]
    p0 = t["partitions"][0]
    assert p0["leader"] == 1
    assert [r["id"] for r in p0["replicas"]] == [1]
    assert [r["id"] for r in p0["isrs"]] == [1]

    # Listing all topics shows it too.
    r = kcat(kcat_bin, "-b", node.bootstrap, "-L", "-J")
    assert r.returncode == 0, r.stderr
    assert topic in [t["topic"] for t in json.loads(r.stdout)["topics"]]


def test_kcat_produce_and_consume_with_keys(node, kcat_bin, topic):
    lines = [f"key{i % 5}:value {i}" for i in range(200)] + ["k:v:with:colons", "empty-value:", "last:done"]
    r = kcat(kcat_bin, "-b", node.bootstrap, "-P", "-t", topic, "-p", "0", "-K:", "-X", "acks=all", input="\n".join(lines) + "\n")
    assert r.returncode == 0, f"kcat -P failed ({r.returncode}): {r.stderr}"
    assert "ERROR" not in r.stderr, r.stderr

    r = kcat(kcat_bin, "-b", node.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%p|%o|%k|%s\n")
    assert r.returncode == 0, f"kcat -C failed ({r.returncode}): {r.stderr}"
    expected = []
    for i, line in enumerate(lines):
        k, v = line.split(":", 1)
        expected.append(f"0|{i}|{k}|{v}")
    assert r.stdout.splitlines() == expected
