"""Kafka quick start, kafka-python: consume a topic in a consumer group from the earliest
offset, committing after processing each record.

Usage: python kafka_python_consumer.py BOOTSTRAP TOPIC COUNT
Prints one JSON line per record and stops after COUNT records (or 20 s without any).
"""

import json
import sys

from kafka import KafkaConsumer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

consumer = KafkaConsumer(
    topic,
    group_id="my-group",
    bootstrap_servers=bootstrap,
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    value_deserializer=lambda m: json.loads(m.decode("utf-8")),
    consumer_timeout_ms=20000,
)
seen = 0
for message in consumer:
    print(json.dumps({"partition": message.partition, "offset": message.offset, "value": message.value}), flush=True)
    consumer.commit()
    seen += 1
    if seen >= count:
        break
consumer.close()
