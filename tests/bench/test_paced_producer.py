"""The Kafka benchmark's load generator, against the real test broker."""

from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.fleet import generate_fleet
from bench.paced_producer import produce

pytestmark = pytest.mark.integration


def test_every_line_goes_out_as_it_is_keyed_by_its_device_and_no_faster_than_asked(kafka, tmp_path):
    fleet = tmp_path / "fleet.jsonl"
    generate_fleet(fleet, devices=20, rows=2_000)
    topic = f"paced-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)

    result = produce(str(fleet), topic, kafka.bootstrap, rate=4_000)

    assert result["sent"] == 2_000
    assert result["seconds"] >= 0.45  # 2,000 messages at 4,000/s: paced, not sent at once
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"test-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
    received = []
    while len(received) < 2_000:
        messages = consumer.consume(1_000, 10)
        assert messages, f"only {len(received)} of 2,000 messages arrived"
        received += [(m.key(), m.value()) for m in messages if m.error() is None]
    consumer.close()
    lines = [line.rstrip(b"\n") for line in fleet.read_bytes().splitlines()]
    assert sorted(value for _, value in received) == sorted(lines)
    assert all(key == orjson.loads(value)["device_id"].encode() for key, value in received)
