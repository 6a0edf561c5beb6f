"""What the replay's batch size trades: speed in one and two processes, against how soon the
devices get the fleet's model.

    .venv/bin/python -m bench.batch_size                          # about 5 minutes
    .venv/bin/python -m bench.batch_size --sizes 1000 4000 --pairs 3

A replay keeps its source in step with FedAvg (``operators/replay_lockstep.py``): a global
model made from batch ``n``'s updates meets the readings of batch ``n + 2`` on. A larger
``FLEAD_BATCH_SIZE`` means fewer of those rounds and fuller array steps in the shards, and a
fleet's model (its normal model and threshold) that reaches each device more readings later.

For each size, in turn and ``--pairs`` times over: a one-process and a two-process replay of
the benchmark fleet (``bench.run``'s: 2,407 devices, 300,000 records). Then, once each, the
label-free quality: ``is_anomaly`` on a labelled fleet of 200 devices with 1,000 readings
each (``bench.detection_quality --fleet``'s numbers, after each device's first 100), and
NAB's standard score of the alerts on the bundled series (``bench.detection_quality``'s first
row). Prints a markdown table of medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

from bench import nab_score
from bench.detection_quality import (
    FLEET_DECIDERS,
    HIDDEN,
    NAB,
    Truth,
    after_warmup,
    alert_score,
    confusion,
    fleet_labels,
    nab_corpus,
    nab_windows,
    scores,
)
from bench.fleet import generate_fleet
from bench.run import flead_replay, progress

IS_ANOMALY, _ = FLEET_DECIDERS["FLEAD `is_anomaly` (calibrated score, incidents)"]


def speed(fleet: Path, sizes: list[int], pairs: int) -> dict[int, list[tuple[float, float]]]:
    """Records/s of one and of two processes for each size, ``pairs`` times, the sizes in turn
    so that the machine's drift falls on each alike."""
    found: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
    for n in range(pairs):
        for size in sizes:
            progress(f"pair {n + 1} of {pairs}, FLEAD_BATCH_SIZE={size}")
            settings = {"FLEAD_BATCH_SIZE": str(size)}
            one = flead_replay(fleet, 1, settings)["records_per_second"]
            two = flead_replay(fleet, 2, settings)["records_per_second"]
            found[size].append((one, two))
    return found


def quality(labelled: Path, truth: Truth, size: int) -> tuple[dict[str, float], float]:
    """``is_anomaly``'s confusion on the labelled fleet (``truth``: its labels), and NAB's
    standard score of the alerts."""
    setting = {"FLEAD_BATCH_SIZE": str(size)}
    fleet_rows = after_warmup(scores(labelled, setting, **HIDDEN), warmup=100)
    fleet = confusion(fleet_rows, truth, IS_ANOMALY)
    corpus = nab_corpus(scores(NAB, setting, FLEAD_FIELDS="value", **HIDDEN), alert_score, nab_windows())
    return fleet, nab_score.best(corpus, nab_score.PROFILES["standard"]).score


def markdown(found: dict[int, list[tuple[float, float]]], quality_by_size: dict[int, tuple[dict, float]]) -> str:
    lines = [
        "| `FLEAD_BATCH_SIZE` | 1 process, records/s | 2 processes, records/s | 2 ÷ 1 (each pair) "
        "| `is_anomaly` F1 | false-alarm rate | NAB standard |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, runs in found.items():
        ratios = [two / one for one, two in runs]
        fleet, nab = quality_by_size[size]
        lines.append(
            f"| {size:,} | {statistics.median(one for one, _ in runs):,.0f} "
            f"| {statistics.median(two for _, two in runs):,.0f} "
            f"| {statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)}) "
            f"| {fleet['f1']:.3f} | {fleet['false_alarm_rate']:.2%} | {nab:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flead-batch-size-") as work_dir:
        fleet, labelled = Path(work_dir) / "fleet.jsonl", Path(work_dir) / "labelled.jsonl"
        progress("generating the fleets")
        generate_fleet(fleet)
        generate_fleet(labelled, devices=200, rows_per_device=1000, seed=11, anomaly_rate=0.002)
        found = speed(fleet, args.sizes, args.pairs)
        truth = fleet_labels(labelled)
        quality_by_size = {}
        for size in args.sizes:
            progress(f"quality, FLEAD_BATCH_SIZE={size}")
            quality_by_size[size] = quality(labelled, truth, size)
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}; medians of {args.pairs} pairs.\n")
    print(markdown(found, quality_by_size))


if __name__ == "__main__":
    main()
