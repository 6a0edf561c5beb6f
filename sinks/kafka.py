"""Results to Kafka topics, with every failed delivery counted (Bytewax's sink reports none)."""

from __future__ import annotations

import logging

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from sinks.metrics import SINK_ROWS_WRITTEN, SINK_WRITE_ERRORS, initialize_sink

log = logging.getLogger("flead.kafka")

KafkaRecord = tuple[str, bytes | None, bytes]
"""``(topic, key, value)``."""


class _KafkaPartition(StatelessSinkPartition[list[KafkaRecord]]):
    def __init__(self, config: dict[str, str], flush_seconds: float) -> None:
        self._producer = Producer({"linger.ms": "2", **config})
        self._flush_seconds = flush_seconds
        self.failed = 0

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            SINK_ROWS_WRITTEN.labels("kafka", message.topic()).inc()
            return
        self.failed += 1
        SINK_WRITE_ERRORS.labels("kafka").inc()
        if self.failed == 1 or self.failed % 1000 == 0:
            log.error("Kafka delivery to %s failed (%d so far): %s", message.topic(), self.failed, error)

    def write_batch(self, items: list[list[KafkaRecord]]) -> None:
        produce = self._producer.produce
        for topic, key, value in (record for records in items for record in records):
            while True:
                try:
                    produce(topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    self._producer.poll(0.1)
        self._producer.poll(0)
        self._producer.flush(self._flush_seconds)

    def close(self) -> None:
        left = self._producer.flush(self._flush_seconds)
        if left:
            SINK_WRITE_ERRORS.labels("kafka").inc(left)
            log.error("%d Kafka messages were still undelivered at shutdown", left)


class KafkaTopicsSink(DynamicSink[list[KafkaRecord]]):
    """Writes lists of ``(topic, key, value)`` records; each worker has its own producer."""

    def __init__(self, config: dict[str, str], flush_seconds: float = 30.0) -> None:
        self._config = config
        self._flush_seconds = flush_seconds

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition:
        initialize_sink("kafka")
        return _KafkaPartition(self._config, self._flush_seconds)
