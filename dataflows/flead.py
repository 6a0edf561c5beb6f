"""FLEAD: per-device detection, local training, FedAvg and live evaluation in one dataflow.

    python -m bytewax.run dataflows.flead

    telemetry (replay files) ── parse + validate ──rejected──► dead_letters
      │  key: crc32(device_id) % FLEAD_SHARDS
      ▼
    devices   (per shard: rolling z-score, features, local River model, live evaluation)
      ├─► anomalies, scores
      ├─► local updates ──► fedavg ──► federated models ──► loopback ──► every shard
      ├─► evaluation partials ──► evaluation ──► model_evaluations
      ▼
    summary   (totals, progress lines, summary.json)

Settings come from ``FLEAD_*`` environment variables (see README.md).
"""

from __future__ import annotations

import sys
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows.config import ConfigError, Settings, load_settings
from dataflows.loopback import loopback_path
from dataflows.sources import ReplaySource
from dataflows.steps import EvaluationLogic, FedAvgLogic, ShardLogic, SummaryLogic
from operators.device import Detection
from operators.fedavg import GlobalModel, LocalUpdate
from operators.messages import Rejection, Telemetry
from operators.run_totals import SourceProgress
from operators.shard import EvaluationPartial, ShardCounters
from operators.sharding import shard_keys, shard_of
from sinks.console import ReportSink
from sinks.jsonl import JsonLinesSink, reset_outputs
from sinks.loopback import LoopbackSink

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


def build_flow(settings: Settings) -> Dataflow:
    flow = Dataflow("flead")
    keys = shard_keys(settings.shards)

    output_files = [name for name in OUTPUT_FILES if settings.scores or name != "scores.jsonl"]
    stale_files = ["summary.json", *(name for name in OUTPUT_FILES if name not in output_files)]

    def fresh_start() -> None:
        reset_outputs(settings.out_dir, output_files, stale_files)

    # Input: telemetry rows, already parsed and validated, and global models coming back.
    source = ReplaySource(
        settings.input_path, settings.limits, settings.batch_size, loopback_path(settings.out_dir), fresh_start
    )
    items = op.input("telemetry", flow, source)
    rejected = of_type("rejected", items, Rejection)
    readings = of_type("readings", items, Telemetry)
    returned_models = of_type("returned_models", items, GlobalModel)
    read_progress = of_type("read_progress", items, SourceProgress)

    # Device stage, keyed by shard; a global model goes to every shard.
    keyed_readings = op.key_on("shard_of_device", readings, lambda reading: shard_of(reading.device_id, keys))
    keyed_models = op.flat_map("to_every_shard", returned_models, lambda model: [(key, model) for key in keys])
    device_input = op.merge("device_input", keyed_readings, keyed_models)
    device_output = op.key_rm(
        "device_output",
        op.stateful_batch("devices", device_input, ShardLogic.builder(settings.detection, settings.scores)),
    )
    detections = of_type("detections", device_output, Detection)
    local_updates = of_type("local_updates", device_output, LocalUpdate)
    evaluation_partials = of_type("evaluation_partials", device_output, EvaluationPartial)
    shard_counters = of_type("shard_counters", device_output, ShardCounters)

    # FedAvg: one key, so one worker holds the federation's state.
    global_models = op.key_rm(
        "global_models",
        op.stateful_batch(
            "fedavg",
            op.key_on("federation", local_updates, lambda _: "federation"),
            FedAvgLogic.builder(settings.fedavg_updates, settings.fedavg_seconds),
        ),
    )
    op.output("loopback", global_models, LoopbackSink(loopback_path(settings.out_dir)))

    # Live evaluation of each global version on the labelled stream.
    evaluations = op.key_rm(
        "evaluations",
        op.stateful_batch(
            "evaluation",
            op.key_on("evaluation_key", evaluation_partials, lambda _: "evaluation"),
            EvaluationLogic.builder(settings.shards),
        ),
    )

    # Outputs as JSON Lines.
    anomalies = op.filter("is_anomaly", detections, lambda detection: detection.is_anomaly)
    rows = [
        op.map("anomaly_rows", anomalies, lambda d: ("anomalies.jsonl", d.anomaly_row())),
        op.map("local_model_rows", local_updates, lambda u: ("local_models.jsonl", u.as_row())),
        op.map("federated_model_rows", global_models, lambda m: ("federated_models.jsonl", m.as_row())),
        op.map("evaluation_rows", evaluations, lambda row: ("model_evaluations.jsonl", row)),
        op.map("dead_letter_rows", rejected, lambda r: ("dead_letters.jsonl", r.as_row())),
    ]
    if settings.scores:
        rows.append(op.map("score_rows", detections, lambda d: ("scores.jsonl", d.score_row())))
    op.output("jsonl", op.merge("all_rows", *rows), JsonLinesSink(settings.out_dir, output_files))

    # Totals, progress and summary.
    summary_input = op.merge(
        "summary_input", read_progress, rejected, shard_counters, global_models, evaluation_partials
    )
    reports = op.key_rm(
        "reports",
        op.stateful_batch(
            "summary",
            op.key_on("summary_key", summary_input, lambda _: "summary"),
            SummaryLogic.builder(settings.progress_seconds),
        ),
    )
    op.output("console", reports, ReportSink(settings.out_dir / "summary.json"))
    return flow


def __getattr__(name: str) -> Dataflow:
    """``flow`` is built on first access, so importing this module reads no settings."""
    if name != "flow":
        raise AttributeError(name)
    try:
        return build_flow(load_settings())
    except ConfigError as exc:
        sys.exit(f"flead: bad setting: {exc}")
