"""Hostile input through a real Kafka topic: the messages of ``tests/hostile.py`` produced raw (1 MB
ones, embedded newlines and empty values included), read by the real command with
``FLEAD_INPUT=kafka FLEAD_KAFKA_TAIL=false``.

Every message must be read and accounted for, each dead letter (on the dead-letter topic,
keyed by its source ``kafka:TOPIC:PARTITION:OFFSET``) must carry a known reason, and each
message must get the verdict worked out for its kind, and the very verdict it gets as a JSON
line in a replay.
"""

from __future__ import annotations

import pytest

from operators.messages import REJECTION_REASONS
from tests.hostile import (
    SUITE_N,
    SUITE_SEED,
    Case,
    KafkaRun,
    disagreements,
    replayed,
    shared_cases,
    summary_problems,
    through_kafka,
)

pytestmark = pytest.mark.integration

N = SUITE_N
SEED = SUITE_SEED


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return list(shared_cases(N, SEED))


@pytest.fixture(scope="module")
def kafka_run(kafka, cases, tmp_path_factory) -> KafkaRun:
    return through_kafka(kafka, cases, tmp_path_factory.mktemp("hostile-kafka"))


def test_every_message_from_the_topic_is_read_and_accounted_for(kafka_run):
    summary, letters, found = kafka_run.summary, kafka_run.dead_letters, kafka_run.verdicts
    assert len(found) == N
    assert summary_problems(summary, found.values()) == []
    assert len(letters) == summary["rows_rejected"]
    assert {letter["reason"] for letter in letters} <= set(REJECTION_REASONS)


def test_every_message_from_the_topic_gets_the_verdict_of_its_kind(cases, kafka_run):
    wrong = disagreements(cases, kafka_run.verdicts)
    assert not wrong, f"{len(wrong)} wrong verdicts, the first: " + "\n".join(wrong[:10])


def test_a_message_gets_the_same_verdict_from_the_topic_as_from_a_json_line(cases, kafka_run):
    found = kafka_run.verdicts
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
