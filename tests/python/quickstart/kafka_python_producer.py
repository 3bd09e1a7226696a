"""Kafka quick start, kafka-python: send JSON values to a topic.

Usage: python kafka_python_producer.py BOOTSTRAP TOPIC COUNT
"""

import json
import sys

from kafka import KafkaProducer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    value_serializer=lambda v: json.dumps(v).encode("utf-8"),
    acks="all",
    enable_idempotence=True,
)
for i in range(count):
    future = producer.send(topic, key=str(i).encode("utf-8"), value={"n": i, "msg": f"hello {i}"})
    if i == 0:
        metadata = future.get(timeout=30)  # fail fast if the broker refuses
producer.flush(timeout=30)
producer.close()
print(f"sent {count} records to {topic}")
