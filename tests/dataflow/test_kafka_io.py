import uuid
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException
from prometheus_client import REGISTRY

from dataflows.kafka_io import _TelemetryPartition, retry_until_partitions_ready
from operators.messages import MessageLimits


def failing(codes: list[int], result: str = "read") -> tuple[list[int], Callable[[], str]]:
    """A read that fails with each of ``codes`` in turn, then returns ``result``; and its calls."""
    calls: list[int] = []

    def read() -> str:
        calls.append(len(calls))
        if len(calls) <= len(codes):
            raise KafkaException(KafkaError(codes[len(calls) - 1]))
        return result

    return calls, read


def test_a_partition_without_a_leader_yet_is_read_again():
    calls, read = failing([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    assert retry_until_partitions_ready(read, seconds=5, pause=0.01) == "read"
    assert len(calls) == 3


def test_other_errors_are_not_retried():
    calls, read = failing([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as raised:
        retry_until_partitions_ready(read, seconds=5, pause=0.01)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert len(calls) == 1


def test_it_gives_up_after_the_time_it_is_given():
    calls, read = failing([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(KafkaException) as raised:
        retry_until_partitions_ready(read, seconds=0.2, pause=0.05)
    assert raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION
    assert 2 <= len(calls) <= 6


def lag_of(partition_offset: int, ls_offset: int) -> float | None:
    """The lag gauge after one statistics report, for a partition whose next offset to read is ``partition_offset``."""
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    config = {"bootstrap.servers": "127.0.0.1:1", "group.id": "test"}  # never connects
    partition = _TelemetryPartition(config, topic, 3, partition_offset, 10, MessageLimits())
    try:
        partition.record_lag(orjson.dumps({"topics": {topic: {"partitions": {"3": {"ls_offset": ls_offset}}}}}))
    finally:
        partition.close()
    return REGISTRY.get_sample_value("flead_kafka_consumer_lag", {"topic": topic, "partition": "3"})


def test_consumer_lag_is_the_partition_end_minus_the_next_offset_to_read():
    assert lag_of(40, 100) == 60
    assert lag_of(100, 100) == 0
    assert lag_of(OFFSET_BEGINNING, 100) == 0  # nothing read yet: no offset to measure from
