#!/usr/bin/env python3
"""A data team's consumer: reads a Healthplane topic with the standard confluent-kafka client,
decodes the Avro values through the Schema Registry, and prints each record as one JSON line.

    python consume.py --topic healthcare.patient.created [--key <aggregate id>] [--max-wait 30]

Nothing here is Healthplane code: only confluent-kafka's Consumer, SchemaRegistryClient and
AvroDeserializer, as a Spark, Flink or Python job would use them.
"""
import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="localhost:9092")
    parser.add_argument("--registry", default="http://localhost:8081")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--key", help="print only records with this key (and stop at the first)")
    parser.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for records")
    args = parser.parse_args()

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": args.registry}))
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"data-team-example-{uuid.uuid4()}",
        "enable.auto.commit": False,
    })
    partitions = consumer.list_topics(args.topic, timeout=10).topics[args.topic].partitions
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])

    deadline = time.monotonic() + args.max_wait
    found = 0
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            print(f"error: {message.error()}", file=sys.stderr)
            return 2
        key = message.key().decode() if message.key() else None
        if args.key and key != args.key:
            continue
        value = deserialize(message.value(), SerializationContext(args.topic, MessageField.VALUE))
        headers = {k: v.decode() for k, v in (message.headers() or [])}
        print(json.dumps({"partition": message.partition(), "offset": message.offset(), "key": key,
                          "headers": headers, "value": value}, default=str), flush=True)
        found += 1
        if args.key:
            break
    consumer.close()
    if args.key and not found:
        print(f"no record with key {args.key} on {args.topic} within {args.max_wait}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
