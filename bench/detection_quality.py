"""Detection quality on the bundled NAB data: the z-rule, the local models, the global model.

    .venv/bin/python -m bench.detection_quality

Runs the dataflow twice on ``data/nab`` with ``FLEAD_SCORES=1``:

1. *labelled*: the models learn from NAB's labels as they arrive (predict, then learn);
2. *label-free*: the label column is hidden from the dataflow, so the models learn only the
   z-rule's decisions; the scores are compared with the labels afterwards.

For each, precision, recall and F1 against the labels of: the z-rule alone (|z| ≥ warning),
the local models (score > threshold), the global model (its score, once one exists), and
``is_anomaly`` (the z-rule or the local model). NAB labels whole windows around each
anomaly, so point-wise scores are low for every detector that reacts to single readings.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
NAB = REPO / "data" / "nab"


def labels() -> dict[tuple[str, str], int]:
    found = {}
    for path in NAB.rglob("*.csv"):
        device = path.relative_to(NAB).with_suffix("").as_posix()
        with path.open() as handle:
            for row in csv.DictReader(handle):
                stamp = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC)
                found[(device, stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"))] = int(row["label"])
    return found


def scores(**settings: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
        env.update(FLEAD_INPUT=str(NAB), FLEAD_OUT_DIR=out, FLEAD_SCORES="1", FLEAD_PROGRESS_SECONDS="0", **settings)
        subprocess.run(
            [sys.executable, "-m", "bytewax.run", "dataflows.flead"], cwd=REPO, env=env, check=True, capture_output=True
        )
        return [orjson.loads(line) for line in (Path(out) / "scores.jsonl").read_bytes().splitlines()]


def quality(rows: list[dict], truth: dict[tuple[str, str], int], decide) -> dict[str, float]:
    tp = fp = fn = 0
    for row in rows:
        actual = truth[(row["device_id"], row["timestamp"])]
        flagged = decide(row)
        tp += flagged and actual
        fp += flagged and not actual
        fn += actual and not flagged
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": tp + fp}


DECIDERS = {
    "z-rule alone (\\|z\\| ≥ 2.5)": lambda r: r["severity"] in ("warning", "critical"),
    "local models (score > 0.5)": lambda r: r["score"] > 0.5,
    "global model (score > 0.5)": lambda r: (r["global_score"] or 0.0) > 0.5,
    "is_anomaly (z-rule or local model)": lambda r: r["is_anomaly"],
}


def main() -> None:
    truth = labels()
    runs = {
        "labelled": scores(),
        "label-free": scores(FLEAD_LABEL_COLUMN="hidden_label", FLEAD_FIELDS="value"),
    }
    print("| decision | training | precision | recall | F1 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, decide in DECIDERS.items():
        for run, rows in runs.items():
            q = quality(rows, truth, decide)
            print(f"| {name} | {run} | {q['precision']:.3f} | {q['recall']:.3f} | {q['f1']:.3f} |")


if __name__ == "__main__":
    main()
