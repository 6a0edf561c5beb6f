"""Hostile input through a real Kafka topic: the messages of ``tests/hostile.py`` produced raw (1 MB
ones, embedded newlines and empty values included), read by the real command with
``FLEAD_INPUT=kafka FLEAD_KAFKA_TAIL=false``.

Every message must be read and accounted for, each dead letter (on the dead-letter topic,
keyed by its source ``kafka:TOPIC:PARTITION:OFFSET``) must carry a known reason, and each
message must get the verdict worked out for its kind, and the very verdict it gets as a JSON
line in a replay.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from operators.messages import REJECTION_REASONS
from tests.flead_runs import REPO, environment, flead_command
from tests.hostile import (
    ONE_MB,
    SUITE_N,
    SUITE_SEED,
    Case,
    disagreements,
    replayed,
    shared_cases,
    summary_problems,
    verdicts,
)

pytestmark = pytest.mark.integration

N = SUITE_N
SEED = SUITE_SEED
MAX_MESSAGE = 4 * ONE_MB
"""The telemetry topic's and the producer's limit, so that the 1 MB messages reach FLEAD."""


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, num_partitions=1, config={"max.message.bytes": str(MAX_MESSAGE)})
    admin.create_topics([topic])[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while admin.list_topics(topic=name, timeout=5).topics[name].partitions[0].leader < 0:
        assert time.monotonic() < deadline, f"{name} has no leader after 30 s"
        time.sleep(0.1)


def produce(bootstrap: str, topic: str, cases: list[Case]) -> dict[int, int]:
    """Every case's raw bytes, in order, on partition 0; returns each offset → its case's index."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "message.max.bytes": MAX_MESSAGE})
    offsets: dict[int, int] = {}
    errors: list[str] = []

    def delivered(index: int):
        def report(error, message) -> None:
            if error is not None:
                errors.append(f"#{index}: {error}")
            else:
                offsets[message.offset()] = index

        return report

    for index, made in enumerate(cases):
        while True:
            try:
                producer.produce(topic, made.raw, partition=0, on_delivery=delivered(index))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert not errors, errors[:5]
    assert len(offsets) == len(cases)
    return offsets


def consume_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list[dict]:
    """Every message on partition 0 of ``topic`` up to its end now, as JSON."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, low)])
        rows: list[dict] = []
        next_offset = low
        deadline = time.monotonic() + timeout
        while next_offset < high:
            assert time.monotonic() < deadline, f"{topic}: read up to {next_offset} of {high} in {timeout:g} s"
            for message in consumer.consume(10_000, 0.5):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    continue
                assert error is None, error
                rows.append(orjson.loads(message.value()))
                next_offset = message.offset() + 1
    finally:
        consumer.close()
    return rows


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return list(shared_cases(N, SEED))


@pytest.fixture(scope="module")
def kafka_run(kafka, cases, tmp_path_factory):
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "FLEAD_KAFKA_BROKERS": kafka.bootstrap,
        "FLEAD_TOPIC_TELEMETRY": f"hostile-{suffix}",
        "FLEAD_TOPIC_ANOMALIES": f"anomalies-{suffix}",
        "FLEAD_TOPIC_LOCAL_UPDATES": f"local-model-updates-{suffix}",
        "FLEAD_TOPIC_GLOBAL_MODELS": f"global-model-updates-{suffix}",
        "FLEAD_TOPIC_DEAD_LETTERS": f"dead-letters-{suffix}",
        "FLEAD_KAFKA_IDLE_SECONDS": "3",
    }
    create_topic(kafka.bootstrap, topics["FLEAD_TOPIC_TELEMETRY"])
    offsets = produce(kafka.bootstrap, topics["FLEAD_TOPIC_TELEMETRY"], cases)
    out = tmp_path_factory.mktemp("hostile-kafka")
    env = environment("kafka", out, FLEAD_KAFKA_TAIL="false", **topics)
    result = subprocess.run(flead_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = orjson.loads((out / "summary.json").read_bytes())
    letters = consume_all(kafka.bootstrap, topics["FLEAD_TOPIC_DEAD_LETTERS"])
    prefix = f"kafka:{topics['FLEAD_TOPIC_TELEMETRY']}:0:"
    assert all(letter["source"].startswith(prefix) for letter in letters)
    return summary, letters, verdicts(letters, offsets)


def test_every_message_from_the_topic_is_read_and_accounted_for(kafka_run):
    summary, letters, found = kafka_run
    assert len(found) == N
    assert summary_problems(summary, found.values()) == []
    assert len(letters) == summary["rows_rejected"]
    assert {letter["reason"] for letter in letters} <= set(REJECTION_REASONS)


def test_every_message_from_the_topic_gets_the_verdict_of_its_kind(cases, kafka_run):
    wrong = disagreements(cases, kafka_run[2])
    assert not wrong, f"{len(wrong)} wrong verdicts, the first: " + "\n".join(wrong[:10])


def test_a_message_gets_the_same_verdict_from_the_topic_as_from_a_json_line(cases, kafka_run):
    found = kafka_run[2]
    json_lines_verdicts = replayed(N, SEED, ("hostile.jsonl",)).verdicts["hostile.jsonl"]
    assert len(json_lines_verdicts) > N * 0.95
    differ = [
        (index, verdict, found[index], cases[index].raw[:100])
        for index, verdict in json_lines_verdicts.items()
        if found[index] != verdict
    ]
    assert not differ, f"{len(differ)} messages differ (index, as a line, from the topic, message): {differ[:5]}"
    only_on_the_topic = {found[index] for index in found.keys() - json_lines_verdicts.keys()}
    assert only_on_the_topic == {"empty_message"}
