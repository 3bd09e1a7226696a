"""The `runnel` CLI (topic / produce / consume) against a node, cross-checked with librdkafka."""

import re

from confluent_kafka.admin import ConfigResource, ResourceType

import util


def run_ok(*args, input=None):
    r = util.cli(*args, input=input)
    assert r.returncode == 0, f"runnel {' '.join(args)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def lines_naming(text: str, topic: str) -> list[str]:
    return [line for line in text.splitlines() if topic in re.split(r"[\s,|:=\"']+", line)]


def topic_config(bootstrap, topic, name):
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = util.admin(bootstrap)  # keep the client alive until the future resolves
    entries = a.describe_configs([res])[res].result(timeout=15)
    return entries[name].value


def test_cli_topic_lifecycle_produce_consume(node):
    bs = ["--bootstrap-server", node.bootstrap]
    t = "cli-topic"

    run_ok("topic", "create", t, "--partitions", "3", *bs)
    assert util.partition_count(node.bootstrap, t) == 3

    listed = run_ok("topic", "list", *bs).stdout
    rows = lines_naming(listed, t)
    assert len(rows) == 1, f"`topic list` should show {t} once:\n{listed}"
    assert "3" in re.split(r"[\s,|:=]+", rows[0]), f"`topic list` should show 3 partitions for {t}: {rows[0]!r}"

    described = run_ok("topic", "describe", t, *bs).stdout
    assert t in described, described

    lines = [f"{k}:{k}{seq}" for seq in range(5) for k in ("alpha", "beta", "gamma", "delta")]
    run_ok("produce", t, "--key-separator", ":", *bs, input="\n".join(lines) + "\n")

    out = run_ok(
        "consume", t, "--from-beginning", "--max", str(len(lines)), "--format", "%k=%v\n", "--timeout-ms", "15000", *bs
    ).stdout
    got = out.splitlines()
    expected = [line.replace(":", "=", 1) for line in lines]
    assert sorted(got) == sorted(expected), out
    for k in ("alpha", "beta", "gamma", "delta"):  # per key (one partition each) order is kept
        assert [g for g in got if g.startswith(k + "=")] == [e for e in expected if e.startswith(k + "=")]

    # One partition, from an offset, with --max.
    everything = util.consume(node.bootstrap, t, partitions=[0, 1, 2], expected=len(lines))
    assert len(everything) == len(lines)
    part = max({m.partition for m in everything}, key=lambda p: sum(m.partition == p for m in everything))
    in_part = [m for m in everything if m.partition == part]
    out = run_ok(
        "consume", t, "--partition", str(part), "--offset", "1", "--max", str(len(in_part) - 1),
        "--format", "%k=%v\n", "--timeout-ms", "15000", *bs,
    ).stdout
    assert out.splitlines() == [f"{m.key.decode()}={m.value.decode()}" for m in in_part[1:]]

    run_ok("topic", "alter-config", t, "--set", "retention.ms=1000", *bs)
    assert topic_config(node.bootstrap, t, "retention.ms") == "1000"
    described = run_ok("topic", "describe", t, *bs).stdout
    assert any("retention.ms" in line and "1000" in line for line in described.splitlines()), described

    run_ok("topic", "delete", t, *bs)
    listed = run_ok("topic", "list", *bs).stdout
    assert lines_naming(listed, t) == [], f"{t} still listed after delete:\n{listed}"


def test_cli_describe_missing_topic_fails_clearly(node):
    r = util.cli("topic", "describe", "missing", "--bootstrap-server", node.bootstrap)
    assert r.returncode != 0, f"exit code 0 for a missing topic; stdout: {r.stdout}"
    assert "missing" in r.stderr, r.stderr
    assert re.search(r"not found|unknown|does not exist|no such", r.stderr, re.I), r.stderr
    # ... and did not create it.
    assert "missing" not in util.admin(node.bootstrap).list_topics(timeout=10).topics
