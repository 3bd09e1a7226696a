"""Topic configs and partitions through librdkafka's AdminClient."""

from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    ResourceType,
)

import util


def describe(bootstrap, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = util.admin(bootstrap)  # keep the client alive until the future resolves
    return a.describe_configs([res])[res].result(timeout=15)


def source_of(entry):
    return entry.source if isinstance(entry.source, ConfigSource) else ConfigSource(entry.source)


def test_describe_configs_has_kafka_defaults(node, topic):
    util.create_topic(node.bootstrap, topic, 1)
    entries = describe(node.bootstrap, topic)
    for name in ("retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes", "retention.bytes"):
        assert name in entries, f"{name} missing from DescribeConfigs: {sorted(entries)}"
    assert entries["cleanup.policy"].value == "delete"
    assert entries["retention.ms"].value == "604800000"
    assert entries["retention.bytes"].value == "-1"
    assert source_of(entries["retention.ms"]) != ConfigSource.DYNAMIC_TOPIC_CONFIG


def test_create_topic_with_config_and_incremental_alter(node, topic):
    util.create_topic(node.bootstrap, topic, 1, config={"retention.ms": "86400000"})
    entries = describe(node.bootstrap, topic)
    assert entries["retention.ms"].value == "86400000"
    assert source_of(entries["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG

    a = util.admin(node.bootstrap)
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    a.incremental_alter_configs([res])[res].result(timeout=15)
    entries = describe(node.bootstrap, topic)
    assert entries["retention.ms"].value == "3600000"
    assert entries["segment.bytes"].value == "1048576"
    assert entries["cleanup.policy"].value == "delete"  # untouched

    # DELETE returns the key to its default.
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)],
    )
    a.incremental_alter_configs([res])[res].result(timeout=15)
    entries = describe(node.bootstrap, topic)
    assert entries["retention.ms"].value == "604800000"
    assert source_of(entries["retention.ms"]) != ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert entries["segment.bytes"].value == "1048576"


def test_create_partitions_grows_topic(node, topic):
    util.create_topic(node.bootstrap, topic, 2)
    a = util.admin(node.bootstrap)
    a.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=15)
    util.wait_for_partitions(node.bootstrap, topic, 5)
    assert util.partition_count(node.bootstrap, topic) == 5

    # The new partitions take records.
    delivered = util.produce_ok(node.bootstrap, topic, [(b"k", b"to-partition-4")], partition=4)
    assert [(d.partition, d.offset) for d in delivered] == [(4, 0)]
    got = util.consume(node.bootstrap, topic, partitions=[4], expected=1)
    assert [(m.partition, m.offset, m.value) for m in got] == [(4, 0, b"to-partition-4")]
