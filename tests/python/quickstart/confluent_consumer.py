"""Kafka quick start, confluent-kafka: consume a topic in a consumer group from the earliest
offset, committing synchronously after processing each record.

Usage: python confluent_consumer.py BOOTSTRAP TOPIC COUNT
Prints one JSON line per record and stops after COUNT records (or 20 s without any).
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": "my-group",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
)
consumer.subscribe([topic])
seen = 0
idle_since = time.monotonic()
try:
    while seen < count and time.monotonic() - idle_since < 20:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            sys.exit(f"consumer error: {msg.error()}")
        value = json.loads(msg.value().decode("utf-8"))
        print(json.dumps({"partition": msg.partition(), "offset": msg.offset(), "value": value}), flush=True)
        consumer.commit(asynchronous=False)
        seen += 1
        idle_since = time.monotonic()
finally:
    consumer.close()
