from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException

from dataflows.kafka_admin import retry_until_partitions_ready
from dataflows.kafka_sources import consumer_lag


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


def statistics(topic: str, partition: int, ls_offset: int) -> dict:
    """The part of librdkafka's statistics report the lag is read from."""
    return {"topics": {topic: {"partitions": {str(partition): {"ls_offset": ls_offset}}}}}


def test_consumer_lag_is_the_partition_end_minus_the_next_offset_to_read():
    assert consumer_lag(statistics("t", 3, 100), "t", 3, 40) == 60
    assert consumer_lag(statistics("t", 3, 100), "t", 3, 100) == 0
    assert consumer_lag(statistics("t", 3, 100), "t", 3, OFFSET_BEGINNING) is None  # nothing read yet
    assert consumer_lag(statistics("t", 3, 100), "t", 0, 40) is None  # another partition's report
