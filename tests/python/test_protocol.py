"""Protocol-level behaviour: pipelined requests answered in order, topic name validation,
auto-creation switched off, and DescribeCluster."""

from confluent_kafka.admin import NewTopic

import kafkawire as kw
import util

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUEST = 42


def test_pipelined_requests_are_answered_in_request_order(node, topic):
    util.produce_ok(node.bootstrap, topic, [(None, b"x")])
    # Interleave slow (long-polling fetch at the log end) and fast (ApiVersions) requests on
    # one connection: responses must still come back in request order.
    requests = []
    for i in range(40):
        if i % 10 == 0:
            requests.append(kw.fetch_v4_request(i, topic, 0, offset=1, max_wait_ms=300))
        else:
            requests.append(kw.api_versions_request(i % 4, i))
    with kw.connect(node.bootstrap, timeout=20) as s:
        s.sendall(b"".join(requests))
        order = [int.from_bytes(kw.read_response(s)[:4], "big", signed=True) for _ in requests]
    assert order == list(range(40))


def produce_raw(node, topic, correlation_id=1):
    batch = kw.record_batch([kw.Record(key=None, value=b"v")])
    payload = kw.roundtrip(node.bootstrap, kw.produce_v3_request(correlation_id, topic, 0, batch))
    return kw.parse_produce_v3_response(payload)[1]


def test_invalid_topic_names_are_rejected(node):
    for name in ["bad name", "a" * 250, "..", "ümlaut"]:
        results = produce_raw(node, name)
        assert [r.error_code for r in results] == [UNKNOWN_TOPIC_OR_PARTITION], name
    a = util.admin(node.bootstrap)
    fut = a.create_topics([NewTopic("bad name", num_partitions=1, replication_factor=1)])["bad name"]
    try:
        fut.result(timeout=10)
        raise AssertionError("creating 'bad name' succeeded")
    except Exception as e:  # KafkaException carrying INVALID_TOPIC_EXCEPTION
        assert e.args[0].code() == INVALID_TOPIC_EXCEPTION, e
    assert "bad name" not in a.list_topics(timeout=10).topics


def test_auto_create_off_leaves_missing_topics_missing(node_factory, topic):
    node = node_factory(extra_config=["auto.create.topics.enable=false"])
    results = produce_raw(node, topic)
    assert [r.error_code for r in results] == [UNKNOWN_TOPIC_OR_PARTITION]
    a = util.admin(node.bootstrap)
    md = a.list_topics(topic=topic, timeout=10)
    assert md.topics[topic].error is not None
    assert topic not in a.list_topics(timeout=10).topics


def test_describe_cluster_lists_this_broker(node):
    a = util.admin(node.bootstrap)
    desc = a.describe_cluster().result(timeout=10)
    assert [(b.id, b.host, b.port) for b in desc.nodes] == [(1, "127.0.0.1", int(node.bootstrap.rsplit(":", 1)[1]))]
    assert desc.controller.id == 1
    assert desc.cluster_id and len(desc.cluster_id) == 22


def test_transactional_producers_fail_fast_with_a_clear_error(node):
    """Transactions are a later issue: a transactional producer must fail at once with a
    message that says so, not retry until its timeout."""
    from confluent_kafka import KafkaException, Producer
    from kafka import KafkaProducer
    from kafka.errors import TransactionalIdAuthorizationFailedError

    p = Producer({"bootstrap.servers": node.bootstrap, "transactional.id": "tx-a", "log_level": 0})
    try:
        # A retriable answer would end in a non-fatal timeout after 20 s instead.
        p.init_transactions(20)
        raise AssertionError("init_transactions succeeded")
    except KafkaException as e:
        err = e.args[0]
        assert err.fatal(), err
        assert "transactions are not supported by Runnel yet" in err.str(), err.str()

    kp = KafkaProducer(bootstrap_servers=node.bootstrap, transactional_id="tx-b", max_block_ms=20000)
    try:
        kp.init_transactions()
        raise AssertionError("kafka-python init_transactions succeeded")
    except TransactionalIdAuthorizationFailedError:
        pass
    finally:
        kp.close(timeout=5)
    assert b"transactions are not supported yet" in node.log_path.read_bytes()


def test_internal_topics_are_protected(node):
    """Clients read __consumer_offsets but cannot write to, delete or repartition it."""
    from confluent_kafka.admin import NewPartitions

    results = produce_raw(node, "__consumer_offsets")
    assert [r.error_code for r in results] == [INVALID_TOPIC_EXCEPTION]
    a = util.admin(node.bootstrap)
    # Like Kafka, the first FindCoordinator creates the topic.
    a.describe_consumer_groups(["g"])["g"].result(timeout=20)
    for future in [
        a.delete_topics(["__consumer_offsets"])["__consumer_offsets"],
        a.create_partitions([NewPartitions("__consumer_offsets", 60)])["__consumer_offsets"],
    ]:
        try:
            future.result(timeout=10)
            raise AssertionError("an internal topic was changed")
        except Exception as e:  # KafkaException carrying INVALID_REQUEST
            assert e.args[0].code() == INVALID_REQUEST, e
    md = a.list_topics(timeout=10)
    assert len(md.topics["__consumer_offsets"].partitions) == 50
