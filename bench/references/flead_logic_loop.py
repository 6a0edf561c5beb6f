"""FLEAD's own logic in one plain loop: what it costs without the dataflow and the outputs.

The same operators the dataflow runs, with FLEAD's default settings: every line decoded and
validated (``decode_message``), one ``ShardState`` holding every device, its local updates
into a ``FedAvgAggregator``, and each batch's newest global model handed to the shard before
the next batch, as the dataflow's loopback does. No Bytewax, no sharding, no outputs. The
cyclic garbage collector runs as often as in the dataflow's process
(``dataflows/garbage_collection.py``), and as before once the loop is done.

Beside the River loop, which does the same model work, it shows how much of the gap between
FLEAD and that loop is FLEAD's own per-reading work (validation, live evaluation, the round's
accuracy and loss, explanations) and how much is the dataflow and its outputs.

    python -m bench.references.flead_logic_loop fleet.jsonl
"""

from __future__ import annotations

import gc
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from dataflows.config import load_settings
from dataflows.garbage_collection import collect_less_often
from operators.fedavg import FedAvgAggregator, GlobalModel
from operators.messages import Telemetry, decode_message
from operators.shard import ShardState


def run(path: Path | str) -> dict[str, Any]:
    threshold = gc.get_threshold()
    collect_less_often()
    try:
        return _run(path)
    finally:
        gc.set_threshold(*threshold)


def _run(path: Path | str) -> dict[str, Any]:
    settings = load_settings({"FLEAD_INPUT": str(path)})
    shard = ShardState(settings.detection, emit_scores=False, limits=settings.limits)
    fedavg = FedAvgAggregator(
        settings.fedavg_updates,
        settings.fedavg_seconds,
        settings.detection.score_threshold,
        settings.detection.target_false_alarm_rate,
    )
    source = str(path)
    records = anomalies = rejected = updates = 0
    newest: list[GlobalModel] = []
    started = time.perf_counter()
    with open(path, "rb") as lines:
        while batch := list(islice(lines, settings.batch_size)):
            readings: list[Telemetry | GlobalModel] = list(newest)
            for line in batch:
                record = decode_message(line, source, settings.limits)
                if type(record) is Telemetry:
                    readings.append(record)
                else:
                    rejected += 1
            result = shard.process(readings)
            records += result.counters.processed
            anomalies += len(result.detections)
            updates += len(result.updates)
            models = [model for update in result.updates if (model := fedavg.add(update)) is not None]
            newest = models[-1:]
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "seconds": seconds,
        "records_per_second": records / seconds,
        "devices": len(shard.devices),
        "rejected": rejected,
        "anomalies": anomalies,
        "local_updates": updates,
        "global_versions": fedavg.version,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m bench.references.flead_logic_loop FLEET.jsonl\n{__doc__}")
    print(orjson.dumps(run(sys.argv[1])).decode())
