"""Results to Kafka topics, with every failed delivery counted (Bytewax's sink reports none)."""

from __future__ import annotations

import logging

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from instrumentation.metrics import SINK_ROWS_WRITTEN, SINK_WRITE_ERRORS, initialize_sink

log = logging.getLogger("flead.kafka")

KafkaRecord = tuple[str, bytes | None, bytes]
"""``(topic, key, value)``."""


class UndeliveredMessages(RuntimeError):
    """Messages the broker did not take, in a dataflow that must not go on without them."""


def _whole_number(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None  # librdkafka will say what is wrong with it


_SETTINGS_IDEMPOTENCE_NEEDS = {
    # a librdkafka setting and its alias: whether a value lets the producer be idempotent
    ("acks", "request.required.acks"): lambda value: value.strip().lower() in ("all", "-1"),
    ("max.in.flight", "max.in.flight.requests.per.connection"): lambda value: 1 <= (_whole_number(value) or 0) <= 5,
    ("retries", "message.send.max.retries"): lambda value: (_whole_number(value) or 0) > 0,
}


def producer_config(config: dict[str, str]) -> dict[str, str]:
    """The librdkafka settings of FLEAD's producers: ``config`` (the brokers and FLEAD_KAFKA_CONFIG)
    over FLEAD's defaults, a 2 ms linger and ``enable.idempotence=true``.

    librdkafka retries a produce request whose answer did not come (a broker that hangs, a
    connection that drops); without idempotence the retry can write the message a second time,
    and nothing reports it. An idempotent producer numbers its messages and the broker keeps
    one copy of each. Idempotence needs ``acks=all``, at most 5 requests in flight and retries
    (librdkafka sets them so; it refuses to start with other values): a FLEAD_KAFKA_CONFIG that
    asks for other values, or sets ``enable.idempotence`` itself, decides.

    >>> producer_config({"bootstrap.servers": "kafka:9092"})["enable.idempotence"]
    'true'
    >>> "enable.idempotence" in producer_config({"bootstrap.servers": "kafka:9092", "acks": "1"})
    False
    """
    settings = {"linger.ms": "2", **config}
    if "enable.idempotence" in settings:
        return settings
    for names, allows in _SETTINGS_IDEMPOTENCE_NEEDS.items():
        for name in names:
            if name in settings and not allows(str(settings[name])):
                log.info("Kafka producer without idempotence: FLEAD_KAFKA_CONFIG sets %s=%s", name, settings[name])
                return settings
    return {**settings, "enable.idempotence": "true"}


class _KafkaPartition(StatelessSinkPartition[list[KafkaRecord]]):
    def __init__(self, config: dict[str, str], flush_seconds: float, stop_on_loss: bool) -> None:
        self._producer = Producer(producer_config(config))
        self._flush_seconds = flush_seconds
        self._stop_on_loss = stop_on_loss
        self._stopping = False
        self.failed = 0
        self.first_error: KafkaError | None = None

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            SINK_ROWS_WRITTEN.labels("kafka", message.topic()).inc()
            return
        self.failed += 1
        self.first_error = self.first_error or error
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
        self._check_loss()

    def close(self) -> None:
        left = self._producer.flush(self._flush_seconds)
        if left:
            SINK_WRITE_ERRORS.labels("kafka").inc(left)
            log.error("%d Kafka messages were still undelivered at shutdown", left)
        self._check_loss(left)

    def _check_loss(self, undelivered: int = 0) -> None:
        lost = self.failed + undelivered
        if self._stop_on_loss and lost and not self._stopping:
            self._stopping = True  # once: raising again from close() while Bytewax unwinds aborts the process
            reason = self.first_error.str() if self.first_error is not None else "not delivered at shutdown"
            raise UndeliveredMessages(f"{lost:,} messages were not delivered to Kafka (first: {reason}); stopping")


class KafkaTopicsSink(DynamicSink[list[KafkaRecord]]):
    """Writes lists of ``(topic, key, value)`` records; each worker has its own producer.

    Every batch waits for its deliveries. A failed one is counted and logged; with
    ``stop_on_loss`` it also stops the dataflow (:class:`UndeliveredMessages`), for a dataflow
    whose whole job is to deliver, such as the telemetry producer, which would otherwise
    report messages as produced that the broker refused.
    """

    def __init__(self, config: dict[str, str], flush_seconds: float = 30.0, stop_on_loss: bool = False) -> None:
        self._config = config
        self._flush_seconds = flush_seconds
        self._stop_on_loss = stop_on_loss

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition:
        initialize_sink("kafka")
        return _KafkaPartition(self._config, self._flush_seconds, self._stop_on_loss)
