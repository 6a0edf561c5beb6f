"""Bandwidth: bytes of readings against bytes of the local updates that stand for them.

    python -m bench.bandwidth                      # the bundled NAB data and a bench fleet
    python -m bench.bandwidth --input fleet.jsonl --round 50:0 --round 200:0

A device that trains where it is sends a local update per round instead of its readings.
Each reading is counted as the telemetry message the producer sends for it
(``dataflows/producer.py``); each update as what goes on ``FLEAD_TOPIC_LOCAL_UPDATES``: the
edge client's message (``operators/update_validation.py``, with the model its round started
from) and, for comparison, the dataflow's own ``local_models`` row (without it). Global
models, which every device receives, are not counted: they are one message per version for
the whole fleet, not per device. The device stage is the dataflow's own
(``operators/shard.py``), with FedAvg's versions fed back, so the rounds, the models and their
weights are those of a run.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.fleet import generate_fleet
from dataflows.producer import telemetry_message
from dataflows.replay_files import read_replay
from operators.device import DetectionSettings
from operators.fedavg import FedAvgAggregator, LocalUpdate
from operators.messages import MessageLimits, Telemetry
from operators.shard import ShardState
from operators.update_validation import edge_update_message

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "nab"


@dataclass
class Bandwidth:
    readings: int = 0
    reading_bytes: int = 0
    updates: int = 0
    edge_bytes: int = 0
    row_bytes: int = 0

    def add_updates(self, updates: list[LocalUpdate]) -> None:
        self.updates += len(updates)
        self.edge_bytes += sum(len(edge_update_message(u)) for u in updates)
        self.row_bytes += sum(len(orjson.dumps(u.as_row())) for u in updates)

    def share(self, sent: int) -> float:
        return 100.0 * sent / self.reading_bytes


def _batches(path: Path, size: int = 1000) -> Iterator[list[Telemetry]]:
    batch: list[Telemetry] = []
    for record in read_replay(path, MessageLimits()):
        if type(record) is Telemetry:
            batch.append(record)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def measure(path: Path, round_rows: int, round_seconds: float) -> Bandwidth:
    """Replay ``path`` through the device stage and FedAvg (default settings but the round)."""
    settings = DetectionSettings(round_rows=round_rows, round_seconds=round_seconds)
    state = ShardState(settings, False)
    federation = FedAvgAggregator(20)
    result = Bandwidth()
    for batch in _batches(path):
        result.readings += len(batch)
        result.reading_bytes += sum(len(telemetry_message(reading)) for reading in batch)
        updates = state.process(batch).updates
        result.add_updates(updates)
        models = [model for update in updates if (model := federation.add(update)) is not None]
        if models:
            state.process(models[-1:])
    result.add_updates(state.finish().updates)
    return result


def _round(text: str) -> tuple[int, float]:
    rows, _, seconds = text.partition(":")
    return int(rows), float(seconds or 60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--input", type=Path, action="append", help="replay inputs (default: bundled NAB, a fleet)")
    parser.add_argument(
        "--round",
        type=_round,
        action="append",
        help="FLEAD_ROUND_ROWS:FLEAD_ROUND_SECONDS (default: 50:60, the defaults, then 20:0, 50:0, 200:0)",
    )
    parser.add_argument("--fleet-devices", type=int, default=200)
    parser.add_argument("--fleet-rows-per-device", type=int, default=600)
    args = parser.parse_args(argv)
    rounds = args.round or [(50, 60.0), (20, 0.0), (50, 0.0), (200, 0.0)]
    with tempfile.TemporaryDirectory() as scratch:
        inputs = args.input
        if not inputs:
            fleet = Path(scratch) / "fleet.jsonl"
            generate_fleet(fleet, devices=args.fleet_devices, rows_per_device=args.fleet_rows_per_device)
            inputs = [BUNDLED, fleet]
        print(
            "| input | round | readings | updates | reading bytes | update bytes (edge) | edge: share, saved "
            "| dataflow row: share, saved |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for path in inputs:
            name = "bundled NAB" if path == BUNDLED else path.name
            for rows, seconds in rounds:
                found = measure(path, rows, seconds)
                edge, row = found.share(found.edge_bytes), found.share(found.row_bytes)
                rule = f"{rows} rows" + (f" or {seconds:g} s" if seconds else "")
                print(
                    f"| {name} | {rule} | {found.readings:,} | {found.updates:,} | {found.reading_bytes:,} | "
                    f"{found.edge_bytes:,} | {edge:.1f} %, {100 - edge:.1f} % | {row:.1f} %, {100 - row:.1f} % |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
