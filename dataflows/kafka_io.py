"""Kafka inputs: telemetry through Bytewax's connector, global models back to every shard.

Bytewax's ``KafkaSource`` lists partitions with no timeout, so :func:`check_brokers` runs
first and fails start-up within seconds when the brokers cannot be reached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import bytewax.connectors.kafka.operators as kop
import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from dataflows.config import KafkaSettings, redacted
from operators.fedavg import GlobalModel
from operators.messages import MessageLimits, Rejection, Telemetry, decode_message, excerpt
from operators.run_totals import SourceProgress

log = logging.getLogger("flead.kafka")

T = TypeVar("T")


class BrokersUnreachable(RuntimeError):
    """Start-up stops: the Kafka brokers did not answer in time."""


def check_brokers(kafka: KafkaSettings) -> set[str]:
    """Ask the brokers for their topics within ``connect_seconds``; returns the topic names."""
    config = kafka.client_config()
    log.info("Kafka brokers %s, client settings %s", ",".join(kafka.brokers), redacted(kafka.config))
    client = AdminClient(config)
    try:
        metadata = client.list_topics(timeout=kafka.connect_seconds)
    except KafkaException as exc:
        raise BrokersUnreachable(
            f"cannot reach the Kafka brokers {','.join(kafka.brokers)} within {kafka.connect_seconds:g} s"
            f" (FLEAD_KAFKA_BROKERS, FLEAD_KAFKA_CONNECT_SECONDS): {exc.args[0].str() if exc.args else exc}"
        ) from None
    return set(metadata.topics)


def ensure_topics(kafka: KafkaSettings, existing: set[str]) -> None:
    """Create the topics FLEAD uses that do not exist yet (one partition, replication up to 3).

    A topic created ahead with more partitions is used as it is: partitions of the telemetry
    topic are what several workers and processes read in parallel.
    """
    wanted = [
        kafka.telemetry_topic,
        kafka.anomalies_topic,
        kafka.local_updates_topic,
        kafka.global_models_topic,
        kafka.dead_letters_topic,
    ]
    missing = [topic for topic in dict.fromkeys(wanted) if topic not in existing]
    if not missing:
        return
    client = AdminClient(kafka.client_config())
    brokers = len(client.list_topics(timeout=kafka.connect_seconds).brokers)
    futures = client.create_topics([NewTopic(topic, 1, min(3, brokers)) for topic in missing])
    for topic, future in futures.items():
        try:
            future.result(timeout=kafka.connect_seconds * 2)
            log.info("created Kafka topic %s", topic)
        except KafkaException as exc:
            if exc.args[0].code() != ConfluentKafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokersUnreachable(f"cannot create Kafka topic {topic}: {exc.args[0].str()}") from None


def newest_global_model(kafka: KafkaSettings) -> GlobalModel | None:
    """The newest global model on ``FLEAD_TOPIC_GLOBAL_MODELS`` (``None`` on an empty topic).

    A dataflow that starts without recovery state continues the federation from it. From
    version 0 its versions would repeat ones already on the topic and in the tables (where the
    first copy of a version is kept), and every shard would ignore them as old until they
    passed the newest. Within a partition versions only grow, so the newest is the largest
    of the partitions' last messages.
    """
    topic = kafka.global_models_topic
    config = {**kafka.client_config(), "group.id": "flead-newest-global-model", "enable.auto.commit": "false"}
    consumer = Consumer(config)
    try:
        newest = retry_until_partitions_ready(lambda: _newest_global_model(consumer, kafka), kafka.connect_seconds)
    except KafkaException as exc:
        raise BrokersUnreachable(f"cannot read the newest global model from {topic}: {exc.args[0].str()}") from None
    finally:
        consumer.close()
    if newest is not None:
        log.info("continuing the federation after global version %d, the newest on %s", newest.version, topic)
    return newest


def _newest_global_model(consumer: Consumer, kafka: KafkaSettings) -> GlobalModel | None:
    topic = kafka.global_models_topic
    newest = None
    partitions = consumer.list_topics(topic, timeout=kafka.connect_seconds).topics[topic].partitions or {}
    for index in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, index), timeout=kafka.connect_seconds)
        if high <= low:
            continue
        consumer.assign([TopicPartition(topic, index, high - 1)])
        message = consumer.poll(kafka.connect_seconds)
        if message is None:
            raise BrokersUnreachable(f"no answer reading the newest global model from {topic} partition {index}")
        if message.error() is not None:
            raise KafkaException(message.error())
        model = _global_model(message)
        if model is not None and (newest is None or model.version > newest.version):
            newest = model
    return newest


PARTITION_NOT_READY = frozenset(
    {
        ConfluentKafkaError.NOT_LEADER_FOR_PARTITION,
        ConfluentKafkaError.LEADER_NOT_AVAILABLE,
        ConfluentKafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)
"""Errors of a partition whose leader is still being chosen: a topic created a moment ago
(by this start-up, or by another process of the same dataflow), or a broker that failed over."""


def retry_until_partitions_ready(read: Callable[[], T], seconds: float, pause: float = 0.1) -> T:
    """``read()``, again while it fails with :data:`PARTITION_NOT_READY` for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except KafkaException as exc:
            if exc.args[0].code() not in PARTITION_NOT_READY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)


def _global_model(message: Message) -> GlobalModel | None:
    """A global model from its topic's message; ``None`` (logged) when it cannot be read."""
    try:
        return GlobalModel.from_row(orjson.loads(message.value()))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("ignoring an unreadable global model at %s offset %d: %s", message.topic(), message.offset(), exc)
        return None


def kafka_source_name(message: KafkaSourceMessage) -> str:
    return f"kafka:{message.topic}:{message.partition}:{message.offset}"


def decode_kafka_batch(
    messages: list[KafkaSourceMessage | KafkaError], limits: MessageLimits
) -> list[Telemetry | Rejection | SourceProgress]:
    """Decode a batch of telemetry messages; every message becomes a reading or a rejection."""
    decoded: list[Telemetry | Rejection | SourceProgress] = []
    for item in messages:
        if isinstance(item, KafkaError):
            message = item.msg
            decoded.append(
                Rejection(
                    "kafka_error",
                    excerpt(message.value or b""),
                    kafka_source_name(message),
                    time.time(),
                    str(item.err)[:200],
                )
            )
            continue
        if item.value is None:
            decoded.append(Rejection("empty_message", "", kafka_source_name(item), time.time()))
            continue
        record = decode_message(item.value, "", limits)
        if type(record) is Rejection:
            record.source = kafka_source_name(item)  # built for rejections only: ~1.5 % of a Kafka run
        elif item.timestamp[1] > 0:
            record.ingested_at = item.timestamp[1] / 1000.0  # the produce time
        decoded.append(record)
    decoded.append(SourceProgress(len(messages)))
    return decoded


def telemetry_input(flow: Dataflow, kafka: KafkaSettings, limits: MessageLimits, batch_size: int) -> Stream[Any]:
    """Telemetry from ``FLEAD_TOPIC_TELEMETRY``, decoded: readings, rejections and read counts."""
    messages = kop.input(
        "telemetry",
        flow,
        brokers=list(kafka.brokers),
        topics=[kafka.telemetry_topic],
        tail=kafka.tail,
        add_config=dict(kafka.config),
        batch_size=batch_size,
    )
    raw = op.merge("telemetry_messages", messages.oks, messages.errs)
    return op.flat_map_batch("decode", raw, lambda batch: decode_kafka_batch(batch, limits))


@dataclass
class _GlobalModelPartition(StatefulSourcePartition[GlobalModel, int]):
    consumer: Consumer
    topic: str
    offset: int
    stop_when_idle: float | None
    """Seconds at the end of the topic after which the input ends; ``None`` follows forever."""
    idle_since: float | None = None

    def next_batch(self) -> list[GlobalModel]:
        models = []
        for message in self.consumer.consume(100, 0.01):
            error = message.error()
            if error is not None:
                if error.code() == ConfluentKafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"reading {self.topic}: {error}")
            self.offset = message.offset() + 1
            if (model := _global_model(message)) is not None:
                models.append(model)
        if models or self.stop_when_idle is None:
            self.idle_since = None
            return models
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= self.stop_when_idle:
            raise StopIteration
        return models

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(milliseconds=50)

    def snapshot(self) -> int:
        return self.offset

    def close(self) -> None:
        self.consumer.close()


class GlobalModelSource(FixedPartitionedSource[GlobalModel, int]):
    """Global models from ``FLEAD_TOPIC_GLOBAL_MODELS``, the second input of the dataflow.

    It is read from the beginning: a restarted dataflow learns the newest version at once,
    and older copies are ignored by the version check in every shard.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka

    def list_parts(self) -> list[str]:
        topic = self._kafka.global_models_topic
        metadata = AdminClient(self._kafka.client_config()).list_topics(topic, timeout=self._kafka.connect_seconds)
        partitions = metadata.topics[topic].partitions or {}
        return [f"{index}-{topic}" for index in sorted(partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _GlobalModelPartition:
        index, topic = for_part.split("-", 1)
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        consumer = Consumer(
            {
                **self._kafka.client_config(),
                "group.id": "flead-global-models",
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
            }
        )
        consumer.assign([TopicPartition(topic, int(index), offset)])
        idle = None if self._kafka.tail else self._kafka.idle_seconds
        return _GlobalModelPartition(consumer, topic, offset, idle)
