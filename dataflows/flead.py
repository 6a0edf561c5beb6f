"""FLEAD: per-device detection, local training, FedAvg and live evaluation in one dataflow.

    python -m bytewax.run dataflows.flead

    telemetry: replay files | Kafka FLEAD_TOPIC_TELEMETRY
      │  parse + validate ──rejected──► dead letters (file, topic, table)
      ▼  key: crc32(device_id) % FLEAD_SHARDS     (Kafka, or one JSON Lines file: only the device id
    devices    per shard, per device:              is read here; messages are parsed and validated
               evidence, calibrated score,         in the shards, whose rejections join the dead
               incidents; local River model;       letters)
               live evaluation
      ├─► anomalies, scores                               (files, topic, table)
      │     └─► critical ─► cooldown, rate limit ─► alerts (FLEAD_ALERT_WEBHOOK_URL)
      ├─► local updates ─► fedavg ─► global models        (files, topics, tables)
      │     edge clients' updates (FLEAD_EDGE_UPDATES) ─┘ checked ──rejected──► dead letters
      │                                 └─► loopback file | FLEAD_TOPIC_GLOBAL_MODELS ─► every shard
      ├─► closed evaluations (per global version) ─► evaluation ─► model evaluations
      ▼
    summary    totals, Prometheus counters, progress lines, summary.json, report.html (replay)

Settings come from ``FLEAD_*`` environment variables (see docs/operations.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows import allocator, garbage_collection, stopping
from dataflows.config import AlertSettings, KafkaSettings, Settings, start_or_exit
from dataflows.initial_model import InitialModelSource, starting_model
from dataflows.loopback import loopback_path
from dataflows.sources import ReplaySource
from dataflows.steps import AlertLogic, EvaluationLogic, FedAvgLogic, ShardLogic, SummaryLogic
from dataflows.worker_layout import ShardsPerWorker
from operators.compact_json import dumps
from operators.device import Detection
from operators.fedavg import GlobalModel, LocalUpdate
from operators.messages import Rejection
from operators.model_file import read_model_file
from operators.replay_lockstep import ShardUpdates
from operators.run_totals import SourceProgress
from operators.shard import ShardResult, combined_counters
from operators.sharding import ShardBatch, newest_to_every_shard, route_by_shard, shard_keys
from sinks.console import ReportSink
from sinks.jsonl import JsonLinesSink, Row, json_lines, reset_outputs
from sinks.loopback import LoopbackSink

if TYPE_CHECKING:
    from sinks.kafka import KafkaRecord

OUTPUT_FILES = [
    "anomalies.jsonl",
    "local_models.jsonl",
    "federated_models.jsonl",
    "model_evaluations.jsonl",
    "dead_letters.jsonl",
    "scores.jsonl",
]


def of_type(step_id: str, stream: Stream[Any], kind: type) -> Stream[Any]:
    return op.filter(step_id, stream, lambda item: isinstance(item, kind))


def build_flow(
    settings: Settings, continue_from: GlobalModel | None = None, initial_model: GlobalModel | None = None
) -> Dataflow:
    """The dataflow; ``continue_from`` is the newest global model made before this run, if any;
    ``initial_model`` one to publish as this run's first version and go on from (``FLEAD_INITIAL_MODEL``)."""
    flow = Dataflow("flead")
    keys = shard_keys(settings.shards)
    report_points = 0 if settings.reads_kafka else settings.report_points
    source = inputs(flow, settings, keys)
    # Receives nothing: built on every worker as the run starts, it warns when the workers
    # outnumber the shards.
    nothing = op.filter("nothing", source.read_progress, lambda _: False)
    op.output("shards_per_worker", nothing, ShardsPerWorker(settings.shards))

    # Device stage, keyed by shard; a global model goes to every shard (in a replay, inside
    # the batches).
    device_input = op.key_on("shard", source.shard_batches, lambda batch: batch.key)
    if source.returned_models is not None:
        keyed_models = op.flat_map_batch(
            "to_every_shard", source.returned_models, lambda models: newest_to_every_shard(models, keys)
        )
        device_input = op.merge("device_input", device_input, keyed_models)
    idle_seconds = settings.detection.round_seconds if settings.reads_kafka else None
    shard_logic = ShardLogic.builder(
        settings.detection,
        settings.scores,
        settings.limits,
        idle_seconds or None,
        report_points // settings.shards,
        settings.device_limits,
        initial_model,
    )
    keyed_results = op.stateful_batch("devices", device_input, shard_logic)
    results = op.key_rm("shard_results", keyed_results)
    # One item per worker and batch towards the single-key steps, rather than one per shard.
    shard_counters = op.flat_map_batch(
        "shard_counters", results, lambda batch: [combined_counters(result.counters for result in batch)]
    )
    rejected = op.merge(
        "rejected", source.rejected, op.flat_map("rejected_in_shards", results, lambda result: result.rejections)
    )
    if settings.reads_kafka:
        federated_updates = op.flat_map_batch(
            "local_updates",
            results,
            lambda batch: [updates] if (updates := [u for r in batch for u in r.updates]) else [],
        )
    else:  # a replay's shards report every numbered batch, updates or none
        federated_updates = op.flat_map_batch("shard_updates", keyed_results, shard_updates)
    if settings.edge_updates:  # edge clients' updates (Kafka input only), checked, beside the shards' own
        from dataflows.edge_updates import edge_updates

        edge = edge_updates(flow, settings, source.returned_models, initial_model or continue_from)
        federated_updates = op.merge("federated_updates", federated_updates, edge.updates)
        rejected = op.merge("rejected_with_edge_updates", rejected, edge.rejected)

    # FedAvg: one key, so one worker holds the federation's state.
    fedavg = FedAvgLogic.builder(
        settings.fedavg_updates,
        settings.fedavg_seconds,
        settings.detection,
        keys,
        initial_model or continue_from,
        settings.federation,
    )
    fedavg_out = op.key_rm(
        "fedavg_out",
        op.stateful_batch("fedavg", op.key_on("federation", federated_updates, lambda _: "federation"), fedavg),
    )
    if initial_model is not None:
        published = op.input("initial_model", flow, InitialModelSource(initial_model))
        fedavg_out = op.merge("global_models_published", published, fedavg_out)
    if not settings.reads_kafka:  # models and batch marks in the order FedAvg made them
        op.output("loopback", fedavg_out, LoopbackSink(loopback_path(settings.out_dir)))
    global_models = op.filter("global_models", fedavg_out, lambda item: type(item) is GlobalModel)

    # Live evaluation of each global version on the labelled stream.
    moves = op.filter("global_moves", shard_counters, lambda counters: bool(counters.moves))
    evaluations = op.key_rm(
        "evaluations",
        op.stateful_batch(
            "evaluation",
            op.key_on("evaluation_key", moves, lambda _: "evaluation"),
            EvaluationLogic.builder(settings.shards),
        ),
    )

    # Results as (table, rows) to the JSON Lines files, the database and the Kafka topics.
    table_rows = [
        op.map("anomaly_rows", op.filter_map("anomalies", results, lambda r: r.anomalies or None), anomaly_rows),
        op.flat_map_batch(
            "local_model_rows",
            results,
            lambda batch: [("local_models", rows)] if (rows := [row for r in batch for row in r.update_rows]) else [],
        ),
        op.map("federated_model_rows", global_models, lambda m: ("federated_models", [m.as_row()])),
        op.map("evaluation_rows", evaluations, lambda row: ("model_evaluations", [row])),
        op.map("dead_letter_rows", rejected, lambda r: ("dead_letters", [r.as_row()])),
    ]
    if settings.scores:
        table_rows.append(op.map("score_rows", results, score_rows))
    outputs(settings, op.merge("all_rows", *table_rows))

    # Totals, Prometheus counters, progress lines, summary.json and the run report.
    summary_input = [source.read_progress, rejected, shard_counters, global_models]
    if report_points:
        summary_input += [op.filter_map("report_readings", results, lambda r: r.report or None), evaluations]
    reports = op.key_rm(
        "reports",
        op.stateful_batch(
            "summary",
            op.key_on("summary_key", op.merge("summary_input", *summary_input), lambda _: "summary"),
            SummaryLogic.builder(settings.progress_seconds, report_points),
        ),
    )
    op.output("console", reports, ReportSink(settings.out_dir / "summary.json"))
    return flow


class Inputs(NamedTuple):
    shard_batches: Stream[ShardBatch]
    """Readings grouped by shard; a replay's numbered, with the global models."""
    rejected: Stream[Rejection]
    """Input that is not a valid reading, found at the source."""
    read_progress: Stream[SourceProgress]
    returned_models: Stream[GlobalModel] | None
    """Global models coming back to the device stage from their topic (``None`` in a replay,
    whose batches carry them)."""


def inputs(flow: Dataflow, settings: Settings, keys: list[str]) -> Inputs:
    """Readings from the replay files or the telemetry topic; global models back through the
    loopback file (replay) or their topic (Kafka)."""
    kafka = settings.kafka
    returned_models = None
    if settings.reads_kafka:
        from dataflows.kafka_sources import GlobalModelSource, TelemetrySource

        items = op.input("telemetry", flow, TelemetrySource(kafka, settings.limits, settings.batch_size))
        items = op.flat_map_batch("by_shard", items, lambda batch: route_by_shard(batch, keys))
        returned_models = op.input("global_models_in", flow, GlobalModelSource(kafka))
    else:
        items = op.input("telemetry", flow, replay_source(settings))
    split = op.branch("shard_batches_or_not", items, lambda item: type(item) is ShardBatch)
    others = split.falses
    return Inputs(
        split.trues,
        of_type("rejected_at_source", others, Rejection),
        of_type("read_progress", others, SourceProgress),
        returned_models,
    )


def outputs(settings: Settings, rows: Stream[tuple[str, list[Row]]]) -> None:
    """``(table, rows)`` to the JSON Lines files (replay), the database and the Kafka topics, as set."""
    if not settings.reads_kafka:
        file_rows = op.map("file_rows", rows, lambda item: (f"{item[0]}.jsonl", json_lines(item[1])))
        op.output("jsonl", file_rows, JsonLinesSink(settings.out_dir, output_files(settings)))
    if settings.database is not None:
        from sinks.timescale import TimescaleSink

        database = settings.database
        db_rows = op.filter("db_rows", rows, lambda item: item[0] != "scores")
        sink = TimescaleSink(
            database.url,
            max_buffered_rows=database.buffer_rows,
            compress_after=database.compress_after,
            retain_for=database.retain_for,
        )
        op.output("database", db_rows, sink)
    if settings.kafka is not None:
        from sinks.kafka import KafkaTopicsSink

        records = op.filter_map("kafka_records", rows, topic_records(settings.kafka))
        op.output("kafka", records, KafkaTopicsSink(settings.kafka.client_config()))
    if settings.alerts is not None:
        alert_outputs(settings.alerts, rows)


def alert_outputs(alerts: AlertSettings, rows: Stream[tuple[str, list[Row]]]) -> None:
    """Alert-worthy anomalies to one key, where the per-device cooldown and the fleet's rate limit
    decide (``operators/alerts.py``), then to the webhook."""
    from sinks.webhook import WebhookSink

    rules = alerts.rules
    worthy = op.filter_map(
        "alert_worthy",
        rows,
        lambda item: ([row for row in item[1] if rules.worthy(row)] or None) if item[0] == "anomalies" else None,
    )
    gated = op.stateful_batch(
        "alert_gate", op.key_on("alert_key", worthy, lambda _: "alerts"), AlertLogic.builder(rules)
    )
    sink = WebhookSink(
        alerts.webhook_url,
        alerts.body_format,
        timeout=alerts.timeout_seconds,
        queue_size=alerts.queue_size,
    )
    op.output("webhook", op.key_rm("alerts", gated), sink)


def anomaly_rows(anomalies: list[Detection]) -> tuple[str, list[Row]]:
    return "anomalies", [detection.anomaly_row() for detection in anomalies]


def shard_updates(results: list[tuple[str, ShardResult]]) -> list[ShardUpdates | list[LocalUpdate]]:
    """A replay's updates towards FedAvg: each numbered batch's as its shard's report, even none;
    the rest (the rounds closed at the end) as they come."""
    reports: list[ShardUpdates | list[LocalUpdate]] = []
    for key, result in results:
        if result.batch is not None:
            reports.append(ShardUpdates(result.batch, key, result.updates))
        elif result.updates:
            reports.append(result.updates)
    return reports


def score_rows(result: ShardResult) -> tuple[str, list[Row]]:
    return "scores", [detection.score_row() for detection in result.detections]


def topic_records(kafka: KafkaSettings) -> Callable[[tuple[str, list[Row]]], list[KafkaRecord] | None]:
    """``(table, rows)`` as ``(topic, key, JSON value)`` records, or ``None`` for a table with no topic."""
    topic_and_key = {
        "anomalies": (kafka.anomalies_topic, "device_id"),
        "local_models": (kafka.local_updates_topic, "device_id"),
        "federated_models": (kafka.global_models_topic, "global_version"),
        "dead_letters": (kafka.dead_letters_topic, "source"),
    }

    def records(item: tuple[str, list[Row]]) -> list[KafkaRecord] | None:
        table, rows = item
        if table not in topic_and_key:
            return None
        topic, key = topic_and_key[table]
        return [(topic, str(row[key]).encode(), dumps(row)) for row in rows]

    return records


def output_files(settings: Settings) -> list[str]:
    return [name for name in OUTPUT_FILES if settings.scores or name != "scores.jsonl"]


def replay_source(settings: Settings) -> ReplaySource:
    written = output_files(settings)
    stale = ["summary.json", "report.html", *(name for name in OUTPUT_FILES if name not in written)]

    def fresh_start() -> None:
        reset_outputs(settings.out_dir, written, stale)

    return ReplaySource(
        settings.input_path,
        settings.limits,
        settings.batch_size,
        loopback_path(settings.out_dir),
        fresh_start,
        shard_keys(settings.shards),
    )


def prepare(settings: Settings) -> None:
    """Start-up checks that must fail fast: brokers reachable, topics present, database schema."""
    if settings.kafka is not None:
        from dataflows.kafka_admin import check_brokers, ensure_topics

        ensure_topics(settings.kafka, check_brokers(settings.kafka))
    if settings.database is not None:
        from sinks.timescale import prepare_database

        prepare_database(settings.database.url, settings.database.compress_after, settings.database.retain_for)


def earlier_global_model(settings: Settings) -> GlobalModel | None:
    """With Kafka input, the global model FedAvg goes on from: the newest on its topic, or on a
    resume the one the recovery store's first start took (``dataflows/federation_start.py``).
    A replay starts its loopback afresh, or resumes it with its recovery state."""
    if not settings.reads_kafka:
        return None
    from dataflows.federation_start import federation_start, recovery_directory
    from dataflows.kafka_admin import newest_global_model

    return federation_start(recovery_directory(sys.argv[1:], os.environ), lambda: newest_global_model(settings.kafka))


def prepared_flow(settings: Settings) -> Dataflow:
    prepare(settings)
    newest = earlier_global_model(settings)
    initial = None
    if settings.initial_model is not None:
        initial = starting_model(read_model_file(settings.initial_model), newest)
    flow = build_flow(settings, newest, initial)
    stopping.install()
    garbage_collection.collect_less_often()
    allocator.return_large_blocks()
    return flow


def __getattr__(name: str) -> Dataflow:
    """``flow`` is built on first access, so importing this module reads no settings."""
    if name != "flow":
        raise AttributeError(name)
    return start_or_exit(prepared_flow)
