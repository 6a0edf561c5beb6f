"""What one array step of the device stage costs: a fixed part per step, and a part per reading.

    .venv/bin/python -m bench.step_cost              # about 1 minute
    .venv/bin/python -m bench.step_cost --runs 7

A shard scores the readings it gets in a batch as array steps (``ShardState.process``), one
reading of each device per step. Each step makes a few hundred numpy calls whatever its size,
so a step of few readings costs far more per reading than a full one. This measures that on
the benchmark fleet (``bench/fleet.py``, default settings): one shard warmed on the first
50,000 readings, then the next 50,000 given to it in steps of 10, 100 and 1,000 readings (one
``process`` call each, as a batch of that size would be, decoded beforehand), with the
dataflow's garbage-collector setting. The median over ``--runs`` runs of each size, in turn.
Prints a markdown table: milliseconds per step and microseconds per reading.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import platform
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from bench.fleet import generate_fleet
from dataflows.config import load_settings
from dataflows.garbage_collection import collect_less_often
from operators.messages import Telemetry, decode_message
from operators.shard import ShardState

WARM = 50_000
TIMED = 50_000
SIZES = (10, 100, 1000)


def warm_shard(path: Path) -> tuple[bytes, list[Telemetry]]:
    """A shard that has scored the fleet's first readings (pickled, to start each run from it),
    and the readings that follow."""
    settings = load_settings({"FLEAD_INPUT": str(path)})
    shard = ShardState(settings.detection, emit_scores=False, limits=settings.limits)
    with open(path, "rb") as lines:
        readings = [decode_message(line, str(path), settings.limits) for line in islice(lines, WARM + TIMED)]
    if not all(type(reading) is Telemetry for reading in readings):
        raise SystemExit("the fleet has lines that are not valid readings")
    for start in range(0, WARM, 1000):
        shard.process(readings[start : start + 1000])
    return pickle.dumps(shard), readings[WARM:]


def seconds_per_step(state: bytes, readings: list[Telemetry], size: int) -> float:
    shard = pickle.loads(state)
    steps = [readings[start : start + size] for start in range(0, len(readings), size)]
    started = time.perf_counter()
    for step in steps:
        shard.process(step)
    return (time.perf_counter() - started) / len(steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        fleet = Path(folder) / "fleet.jsonl"
        generate_fleet(fleet)
        state, readings = warm_shard(fleet)
    gc.collect()
    gc.freeze()  # the readings and the warm state are old objects, as a running dataflow's are
    collect_less_often()
    timings: dict[int, list[float]] = {size: [] for size in SIZES}
    for _ in range(args.runs):
        for size in SIZES:
            timings[size].append(seconds_per_step(state, readings, size))
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}; median of {args.runs} runs.\n")
    print("| readings per step | ms per step | µs per reading |")
    print("| ---: | ---: | ---: |")
    for size in SIZES:
        seconds = statistics.median(timings[size])
        print(f"| {size:,} | {seconds * 1e3:.3f} | {seconds / size * 1e6:.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
