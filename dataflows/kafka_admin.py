"""Kafka at start-up: brokers reachable, topics present, and the newest global model on its topic."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from dataflows.config import KafkaSettings
from instrumentation.masking import masked_config
from operators.fedavg import GlobalModel

log = logging.getLogger("flead.kafka")

T = TypeVar("T")


class BrokersUnreachable(RuntimeError):
    """Start-up stops: the Kafka brokers did not answer in time, or refused FLEAD's client."""


REFUSALS = frozenset(
    {
        ConfluentKafkaError._AUTHENTICATION,
        ConfluentKafkaError._SSL,
        ConfluentKafkaError.SASL_AUTHENTICATION_FAILED,
    }
)
"""Connection errors that waiting does not cure (a wrong password, a certificate the client does
not trust, a TLS handshake that fails): start-up stops at the first one instead of retrying."""

_CHECK_PAUSE = 0.25
_AFTER_STATE = re.compile(r"\s*\(after \d+ms in state \w+\)$")


def check_brokers(kafka: KafkaSettings) -> set[str]:
    """Ask the brokers for their topics within ``connect_seconds``; returns the topic names.

    Raises :class:`BrokersUnreachable` with one line that names the brokers and the cause: at
    once when they refuse the client (:data:`REFUSALS`: librdkafka would retry them for ever),
    after ``connect_seconds`` when they do not answer. librdkafka's own log lines of the
    failed connections are off for this client (unless FLEAD_KAFKA_CONFIG sets ``log_level``
    or ``debug``): the line says what they would.
    """
    brokers = ",".join(kafka.brokers)
    log.info("Kafka brokers %s, client settings %s", brokers, masked_config(kafka.config))
    errors: list[ConfluentKafkaError] = []
    client = AdminClient({"log_level": 0, **kafka.client_config(), "error_cb": errors.append})
    deadline = time.monotonic() + kafka.connect_seconds
    while True:
        try:
            return set(client.list_topics(timeout=max(0.01, min(_CHECK_PAUSE, deadline - time.monotonic()))).topics)
        except KafkaException as exc:
            failure = exc.args[0] if exc.args else exc
        client.poll(0)  # serves error_cb
        refusal = next((e for e in errors if e.code() in REFUSALS or e.fatal()), None)
        if refusal is not None:
            raise BrokersUnreachable(
                f"the Kafka brokers {brokers} refused FLEAD's client (FLEAD_KAFKA_CONFIG): {_reason(refusal)}"
            ) from None
        if time.monotonic() >= deadline:
            told = [e for e in errors if e.code() != ConfluentKafkaError._ALL_BROKERS_DOWN]
            cause = _reason(told[-1] if told else failure)
            raise BrokersUnreachable(
                f"cannot reach the Kafka brokers {brokers} within {kafka.connect_seconds:g} s"
                f" (FLEAD_KAFKA_BROKERS, FLEAD_KAFKA_CONNECT_SECONDS): {cause}"
            ) from None


def _reason(error: ConfluentKafkaError | BaseException) -> str:
    """librdkafka's text of an error, on one line, without its timing suffix."""
    text = error.str() if isinstance(error, ConfluentKafkaError) else str(error)
    return _AFTER_STATE.sub("", " ".join(text.split()))


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
        model = global_model_of(message)
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


def global_model_of(message: Message) -> GlobalModel | None:
    """A global model from its topic's message; ``None`` (logged) when it cannot be read."""
    try:
        return GlobalModel.from_row(orjson.loads(message.value()))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("ignoring an unreadable global model at %s offset %d: %s", message.topic(), message.offset(), exc)
        return None


def topic_parts(kafka: KafkaSettings, topic: str) -> list[str]:
    """A topic's partitions as input partition names, ``"{index}-{topic}"`` (Bytewax's own form,
    so recovery stores written by its ``KafkaSource`` resume)."""
    metadata = AdminClient(kafka.client_config()).list_topics(topic, timeout=kafka.connect_seconds)
    partitions = metadata.topics[topic].partitions or {}
    return [f"{index}-{topic}" for index in sorted(partitions)]
