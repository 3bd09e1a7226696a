"""Kafka quick start, confluent-kafka: send JSON values to a topic.

Usage: python confluent_producer.py BOOTSTRAP TOPIC COUNT
"""

import json
import sys

from confluent_kafka import Producer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

errors = []


def delivery_report(err, msg):
    if err is not None:
        errors.append(err)
        print(f"delivery failed: {err}", file=sys.stderr)


producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
for i in range(count):
    producer.poll(0)
    value = json.dumps({"n": i, "msg": f"hello {i}"}).encode("utf-8")
    producer.produce(topic, value, key=str(i).encode("utf-8"), callback=delivery_report)
left = producer.flush(30)
if left or errors:
    sys.exit(f"{left} records undelivered, {len(errors)} delivery errors")
print(f"sent {count} records to {topic}")
