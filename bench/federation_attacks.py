"""Attacks on the federation, measured: a clean replay of a generated fleet against attacked ones.

    .venv/bin/python -m bench.federation_attacks --devices 200 --rows-per-device 500
    .venv/bin/python -m bench.federation_attacks --set FLEAD_ROUND_ROWS=20   # every replay with a setting

The fleet is ``bench.fleet``'s (labels visible, so the devices' logistic models learn from
them). Two attacks, each on the same data as the clean run:

- *flood*: one more device sends 50 times as often as any other (every 0.2 s against 10 s),
  crafted readings: a calm level broken by swings of a thousand times its size, every one
  labelled normal, to teach the logistic model that a huge deviation is normal and to widen
  the fleet's normal model;
- *flipped labels*: 5 % of the devices have every label flipped (0 ↔ 1).

For each aggregation (plain FedAvg without bounds; FedAvg with the weight cap alone, with the
default bounds, and with a looser clip; trimmed mean and median with the default bounds) it
replays the clean and the attacked files and prints: the relative L2 distance of the final
global weights and intercept from the clean run's with the same aggregation, and the ROC AUC
(``bench.detection_quality.roc_auc``) of the calibrated score and of the logistic model's
probability on the clean devices after their first 100 readings.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench.detection_quality import after_warmup, fleet_labels, roc_auc
from bench.fleet import START, generate_fleet
from bench.run import flead_env
from bench.settings import add_set_option
from operators.messages import iso_timestamp, parse_timestamp

REPO = Path(__file__).resolve().parents[1]
FLOOD_FACTOR = 50
FLIPPED_SHARE = 0.05
AGGREGATIONS = {
    "FedAvg, no bounds": {"FLEAD_AGGREGATION": "fedavg", "FLEAD_WEIGHT_CAP": "0", "FLEAD_CLIP_MULTIPLE": "0"},
    "FedAvg, weight cap 3, no clip": {"FLEAD_AGGREGATION": "fedavg", "FLEAD_CLIP_MULTIPLE": "0"},
    "FedAvg, default bounds (weight cap 3, clip 1× median norm)": {"FLEAD_AGGREGATION": "fedavg"},
    "FedAvg, weight cap 3 + clip 3× median norm": {"FLEAD_AGGREGATION": "fedavg", "FLEAD_CLIP_MULTIPLE": "3"},
    "trimmed mean (0.1), default bounds": {"FLEAD_AGGREGATION": "trimmed_mean"},
    "median, default bounds": {"FLEAD_AGGREGATION": "median"},
}


def flooded(source: Path, target: Path, interval: float, steps: int, seed: int) -> str:
    """``source`` with one device sending every ``interval / FLOOD_FACTOR`` seconds; its id."""
    rng = np.random.default_rng(seed)
    device = "attacker_flood"
    n = steps * FLOOD_FACTOR
    values = 50.0 + rng.normal(0.0, 0.5, n)
    swings = rng.random(n) < 0.2
    values[swings] += rng.choice([-1.0, 1.0], swings.sum()) * 50_000.0
    start = START.astype("datetime64[ms]").astype(np.int64) / 1000.0
    attack = [
        (
            float(start) + i * interval / FLOOD_FACTOR + 0.0005,
            {"device_id": device, "data": {"temperature": round(float(v), 2)}},
        )
        for i, v in enumerate(values)
    ]
    rows = []
    for line in source.read_bytes().splitlines():
        record = orjson.loads(line)
        rows.append((parse_timestamp(record["timestamp"]), record))
    for moment, record in attack:
        record["timestamp"] = iso_timestamp(moment)
        record["label"] = 0
        rows.append((moment, record))
    rows.sort(key=lambda pair: pair[0])
    target.write_bytes(b"\n".join(orjson.dumps(record) for _, record in rows) + b"\n")
    return device


def flipped(source: Path, target: Path, seed: int) -> set[str]:
    """``source`` with every label of :data:`FLIPPED_SHARE` of the devices flipped; their ids."""
    records = [orjson.loads(line) for line in source.read_bytes().splitlines()]
    devices = sorted({record["device_id"] for record in records})
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(devices, size=max(1, round(FLIPPED_SHARE * len(devices))), replace=False).tolist())
    for record in records:
        if record["device_id"] in chosen:
            record["label"] = 1 - int(record["label"])
    target.write_bytes(b"\n".join(orjson.dumps(record) for record in records) + b"\n")
    return chosen


def replay(source: Path, settings: dict[str, str], base: dict[str, str]) -> tuple[list[dict], dict, dict, float]:
    """The score rows, the last global model, the summary and the wall time of a replay of
    ``source`` with ``base`` (``--set``) and ``settings``, which come first."""
    with tempfile.TemporaryDirectory() as out:
        env = flead_env(source, Path(out), base, FLEAD_SCORES="1", FLEAD_REPORT_POINTS="0", **settings)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bytewax.run", "dataflows.flead"], cwd=REPO, env=env, check=True, capture_output=True
        )
        seconds = time.perf_counter() - started
        rows = [orjson.loads(line) for line in (Path(out) / "scores.jsonl").read_bytes().splitlines()]
        models = (Path(out) / "federated_models.jsonl").read_bytes().splitlines()
        summary = orjson.loads((Path(out) / "summary.json").read_bytes())
        return rows, orjson.loads(models[-1]), summary, seconds


def global_vector(model: dict) -> np.ndarray:
    return np.array([*(model["weights"][name] for name in sorted(model["weights"])), model["intercept"]])


def relative_distance(model: dict, clean: dict) -> float:
    reference = global_vector(clean)
    return float(np.linalg.norm(global_vector(model) - reference) / np.linalg.norm(reference))


def clean_aucs(rows: list[dict], truth: dict, attacked: set[str]) -> tuple[float, float]:
    kept = [row for row in after_warmup(rows, 100) if row["device_id"] not in attacked]
    labels = [truth[(row["device_id"], row["timestamp"])] for row in kept]
    return (
        roc_auc([(row["score"], label) for row, label in zip(kept, labels, strict=True)]),
        roc_auc([(row["model_score"], label) for row, label in zip(kept, labels, strict=True)]),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rows-per-device", type=int, default=500)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--anomaly-rate", type=float, default=0.002)
    add_set_option(parser)
    args = parser.parse_args(argv)
    lines = [
        "| aggregation | run | weights moved (relative L2) | ROC AUC, calibrated score | ROC AUC, logistic model "
        "| updates capped | updates clipped | replay seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as folder:
        clean = Path(folder) / "clean.jsonl"
        generate_fleet(
            clean,
            devices=args.devices,
            rows_per_device=args.rows_per_device,
            seed=args.seed,
            anomaly_rate=args.anomaly_rate,
        )
        truth = fleet_labels(clean)
        flood_file, flip_file = Path(folder) / "flood.jsonl", Path(folder) / "flip.jsonl"
        attacks = {
            "clean": (clean, set()),
            "flood: 1 device at 50×": (flood_file, {flooded(clean, flood_file, 10.0, args.rows_per_device, args.seed)}),
            "flipped labels: 5 % of devices": (flip_file, flipped(clean, flip_file, args.seed)),
        }
        for name, settings in AGGREGATIONS.items():
            reference = None
            for run, (path, attacked) in attacks.items():
                rows, model, summary, seconds = replay(path, settings, dict(args.set))
                reference = reference or model
                moved = relative_distance(model, reference)
                score_auc, model_auc = clean_aucs(rows, truth, attacked)
                line = (
                    f"| {name} | {run} | {moved:.1%} | {score_auc:.4f} | {model_auc:.4f} "
                    f"| {summary['updates_capped']:,} | {summary['updates_clipped']:,} | {seconds:.0f} |"
                )
                print(line, flush=True)
                lines.append(line)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
