"""The Kafka inputs: telemetry, global models back to every shard, and edge clients' local updates."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError

from dataflows import stopping
from dataflows.config import KafkaSettings
from dataflows.kafka_admin import BrokersUnreachable, global_model_of, retry_until_partitions_ready, topic_parts
from instrumentation import metrics
from operators.fedavg import GlobalModel
from operators.messages import MessageLimits, RawMessage, Rejection, Telemetry, decode_message, excerpt, peek_device_id
from operators.run_totals import SourceProgress

log = logging.getLogger("flead.kafka")


TelemetryItem = RawMessage | Telemetry | Rejection | SourceProgress


class _TelemetryPartition(StatefulSourcePartition[TelemetryItem, int]):
    """One partition of the telemetry topic; its state is the offset of the next message to read."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        index: int,
        offset: int,
        batch_size: int,
        limits: MessageLimits,
        timeout: float,
    ) -> None:
        self._topic = topic
        self._index = index
        self._offset = offset
        self._batch_size = batch_size
        self._limits = limits
        self._source = f"kafka:{topic}:{index}"
        self._at_end = False
        self._lag = metrics.KAFKA_CONSUMER_LAG.labels(topic, str(index))
        self._consumer = Consumer(config | {"stats_cb": self.record_lag})
        if offset >= 0:
            self._offset = self._oldest_left(offset, timeout)
        self._consumer.assign([TopicPartition(topic, index, self._offset)])

    def next_batch(self) -> list[TelemetryItem]:
        """A message whose device id can be read plainly goes to its shard undecoded, to be
        decoded and validated there, as in a replay; any other is decoded here."""
        if self._at_end or stopping.requested():
            raise StopIteration
        items: list[TelemetryItem] = []
        read = size = 0
        now = time.time()
        for message in self._consumer.consume(self._batch_size, 0.001):
            error = message.error()
            if error is not None and error.code() == ConfluentKafkaError._PARTITION_EOF:  # FLEAD_KAFKA_TAIL=false
                self._at_end = True
                break
            read += 1
            if error is not None:
                source = f"kafka:{message.topic()}:{message.partition()}:{message.offset()}"
                items.append(Rejection("kafka_error", excerpt(message.value() or b""), source, now, str(error)[:200]))
                continue
            offset = message.offset()
            self._offset = offset + 1
            value = message.value()
            if value is None:
                items.append(Rejection("empty_message", "", f"{self._source}:{offset}", now))
                continue
            size += len(value)
            produced = message.timestamp()[1]
            ingested_at = produced / 1000.0 if produced > 0 else now
            device_id = peek_device_id(value)
            if device_id is not None:
                items.append(tuple.__new__(RawMessage, (device_id, value, self._source, offset, ingested_at)))
                continue
            record = decode_message(value, self._source, self._limits)
            if type(record) is Rejection:
                record.source = f"{self._source}:{offset}"
            else:
                record.ingested_at = ingested_at
            items.append(record)
        if read:
            items.append(SourceProgress(read, size))
        return items

    def _oldest_left(self, offset: int, timeout: float) -> int:
        """``offset``, or the oldest offset still on the partition when retention removed it
        (and the ones after it) before this dataflow read them; the gap is logged."""
        topic, index = self._topic, self._index
        try:
            low, _ = retry_until_partitions_ready(
                lambda: self._consumer.get_watermark_offsets(TopicPartition(topic, index), timeout=timeout), timeout
            )
        except KafkaException as exc:
            raise BrokersUnreachable(
                f"cannot read where {topic} partition {index} starts: {exc.args[0].str()}"
            ) from None
        if offset >= low:
            return offset
        log.warning(
            "%s partition %d: offsets %d to %d are no longer on the topic (removed before this dataflow read them);"
            " reading on from %d",
            topic,
            index,
            offset,
            low - 1,
            low,
        )
        return low

    def record_lag(self, statistics_json: str) -> None:
        """librdkafka's statistics, once a second."""
        lag = consumer_lag(orjson.loads(statistics_json), self._topic, self._index, self._offset)
        if lag is not None:
            self._lag.set(lag)

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


def consumer_lag(statistics: dict[str, Any], topic: str, index: int, next_offset: int) -> int | None:
    """Messages on a partition not read yet, from librdkafka's statistics: its last stable
    offset minus the next offset to read (``None`` before the first read or report)."""
    partition = statistics["topics"].get(topic, {}).get("partitions", {}).get(str(index))
    if partition is None or next_offset < 0:
        return None
    return max(0, partition["ls_offset"] - next_offset)


class TelemetrySource(FixedPartitionedSource[TelemetryItem, int]):
    """Telemetry from ``FLEAD_TOPIC_TELEMETRY``: each partition of the topic is an input
    partition, resumed after the last message read; a new dataflow starts at the beginning.

    It reads librdkafka's messages directly. Bytewax's ``KafkaSource`` wraps each one in a
    ``KafkaSourceMessage`` (eight fields, the headers copied) and its ``kop.input`` splits
    errors from messages item by item, work FLEAD has no use for.
    """

    def __init__(self, kafka: KafkaSettings, limits: MessageLimits, batch_size: int) -> None:
        self._kafka = kafka
        self._limits = limits
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return topic_parts(self._kafka, self._kafka.telemetry_topic)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _TelemetryPartition:
        topic, index, offset = start_of_part(for_part, resume_state)
        config = {
            "group.id": "flead-telemetry",
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",  # behind retention while running: the oldest left, not the end
            "enable.partition.eof": str(not self._kafka.tail).lower(),
            "statistics.interval.ms": 1000,
            **self._kafka.client_config(),
        }
        return _TelemetryPartition(
            config, topic, index, offset, self._batch_size, self._limits, self._kafka.connect_seconds
        )


def start_of_part(for_part: str, resume_state: int | None) -> tuple[str, int, int]:
    """Where an input partition named by :func:`topic_parts` starts reading: its topic, its
    partition index, and the offset (the beginning when there is no recovery state)."""
    index, topic = for_part.split("-", 1)
    return topic, int(index), OFFSET_BEGINNING if resume_state is None else resume_state


T = TypeVar("T")


@dataclass
class _FollowedPartition(StatefulSourcePartition[T, int], Generic[T]):
    """One partition of a topic followed from an offset; ``read`` makes each message an item
    (``None``: none)."""

    consumer: Consumer
    topic: str
    offset: int
    stop_when_idle: float | None
    """Seconds at the end of the topic after which the input ends; ``None`` follows forever."""
    read: Callable[[Message], T | None] = global_model_of
    idle_since: float | None = None

    def next_batch(self) -> list[T]:
        """What librdkafka has fetched so far, without waiting: this runs on the worker's thread,
        which processes nothing while it waits, and it is polled every 50 ms anyway."""
        if stopping.requested():
            raise StopIteration
        models = []
        for message in self.consumer.consume(100, 0):
            error = message.error()
            if error is not None:
                if error.code() == ConfluentKafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"reading {self.topic}: {error}")
            self.offset = message.offset() + 1
            if (model := self.read(message)) is not None:
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
        return topic_parts(self._kafka, self._kafka.global_models_topic)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FollowedPartition[GlobalModel]:
        return _followed(self._kafka, "flead-global-models", for_part, resume_state, global_model_of)


def _followed(
    kafka: KafkaSettings, group: str, for_part: str, resume_state: int | None, read: Callable[[Message], T | None]
) -> _FollowedPartition[T]:
    topic, index, offset = start_of_part(for_part, resume_state)
    consumer = Consumer(
        {**kafka.client_config(), "group.id": group, "enable.auto.commit": "false", "enable.partition.eof": "true"}
    )
    consumer.assign([TopicPartition(topic, index, offset)])
    idle = None if kafka.tail else kafka.idle_seconds
    return _FollowedPartition(consumer, topic, offset, idle, read)


class TopicMessage(NamedTuple):
    """A message as it was read, and where: ``kafka:{topic}:{partition}:{offset}``."""

    value: bytes
    source: str


def _topic_message(message: Message) -> TopicMessage:
    value = message.value() or b""
    return TopicMessage(value, f"kafka:{message.topic()}:{message.partition()}:{message.offset()}")


class EdgeUpdateSource(FixedPartitionedSource[TopicMessage, int]):
    """Local updates from ``FLEAD_TOPIC_LOCAL_UPDATES`` (``FLEAD_EDGE_UPDATES=true``), undecoded:
    edge clients' and the dataflow's own, which the check ignores (``operators/update_validation.py``).

    A new dataflow reads it from the beginning (updates older than the versions it goes on
    from are weighed down as stale by FedAvg); a resumed one after the last message read.
    Like the global-model input, with ``FLEAD_KAFKA_TAIL=false`` it ends after
    ``FLEAD_KAFKA_IDLE_SECONDS`` with nothing new, so it also reads what arrives while the
    telemetry is processed.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka

    def list_parts(self) -> list[str]:
        return topic_parts(self._kafka, self._kafka.local_updates_topic)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FollowedPartition[TopicMessage]:
        return _followed(self._kafka, "flead-edge-updates", for_part, resume_state, _topic_message)
