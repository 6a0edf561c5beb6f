"""Detection quality against labels: the z-rule, the local models, the global model.

    .venv/bin/python -m bench.detection_quality                      # the bundled NAB data
    .venv/bin/python -m bench.detection_quality --fleet fleet.jsonl  # a synthetic fleet (bench.fleet)

Runs the dataflow twice with ``FLEAD_SCORES=1``:

1. *labelled*: the models learn from the labels as they arrive (predict, then learn);
2. *label-free*: the labels are hidden from the dataflow, so the models learn only the
   z-rule's decisions; the scores are compared with the labels afterwards.

For each, the share of readings flagged and the precision, recall and F1 against the labels
of: the z-rule alone (|z| ≥ warning), the local models (score > threshold), the global model
(its score, once one exists), and ``is_anomaly`` (the z-rule or the local model); and the
ROC AUC of the score behind each rule (|z|, the local score, the global score): how well it
ranks anomalous readings above normal ones at any threshold (0.5 is chance). Every reading
is scored by the models as they were when it arrived, so these are the numbers of a live
stream, learning included. NAB labels whole windows around each anomaly, so point-wise
scores are low for every detector that reacts to single readings.

A second table follows the global model through the run: its ROC AUC over each fifth of the
readings in event-time order, beside |z|'s, which does not learn. A federation that learns
ranks better fifth by fifth.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson

from operators.messages import iso_timestamp, parse_timestamp

REPO = Path(__file__).resolve().parents[1]
NAB = REPO / "data" / "nab"

Truth = dict[tuple[str, str], int]
"""The label of each reading, by (device id, timestamp as the dataflow writes it)."""


def nab_labels() -> Truth:
    found = {}
    for path in NAB.rglob("*.csv"):
        device = path.relative_to(NAB).with_suffix("").as_posix()
        with path.open() as handle:
            for row in csv.DictReader(handle):
                found[(device, iso_timestamp(parse_timestamp(row["timestamp"])))] = int(row["label"])
    return found


def fleet_labels(path: Path) -> Truth:
    found = {}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        found[(record["device_id"], iso_timestamp(parse_timestamp(record["timestamp"])))] = int(record["label"])
    return found


def scores(source: Path, **settings: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
        env.update(FLEAD_INPUT=str(source), FLEAD_OUT_DIR=out, FLEAD_SCORES="1", FLEAD_PROGRESS_SECONDS="0", **settings)
        subprocess.run(
            [sys.executable, "-m", "bytewax.run", "dataflows.flead"], cwd=REPO, env=env, check=True, capture_output=True
        )
        return [orjson.loads(line) for line in (Path(out) / "scores.jsonl").read_bytes().splitlines()]


def quality(rows: list[dict], truth: Truth, decide: Callable[[dict], bool]) -> dict[str, float]:
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


def roc_auc(scored: list[tuple[float, int]]) -> float | None:
    """The probability that a random anomalous reading scores above a random normal one (ties count half).

    >>> roc_auc([(0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)])
    0.75
    >>> roc_auc([(0.5, 1), (0.5, 0)])
    0.5
    """
    ordered = sorted(scored)
    rank_sum = 0.0
    start = 0
    while start < len(ordered):
        end = start
        while end < len(ordered) and ordered[end][0] == ordered[start][0]:
            end += 1
        positives = sum(label for _, label in ordered[start:end])
        rank_sum += positives * (start + end + 1) / 2  # the mean 1-based rank of the tied run
        start = end
    positives = sum(label for _, label in ordered)
    negatives = len(ordered) - positives
    if not positives or not negatives:
        return None
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def score_auc(rows: list[dict], truth: Truth, score: Callable[[dict], float | None]) -> float | None:
    """ROC AUC of ``score`` against the labels, over the rows that have one."""
    return roc_auc([(s, truth[(r["device_id"], r["timestamp"])]) for r in rows if (s := score(r)) is not None])


DECIDERS: dict[str, tuple[Callable[[dict], bool], Callable[[dict], float | None] | None]] = {
    "z-rule alone (\\|z\\| ≥ 2.5)": (lambda r: r["severity"] in ("warning", "critical"), lambda r: abs(r["z_score"])),
    "local models (score > 0.5)": (lambda r: r["score"] > 0.5, lambda r: r["score"]),
    "global model (score > 0.5)": (lambda r: (r["global_score"] or 0.0) > 0.5, lambda r: r["global_score"]),
    "is_anomaly (z-rule or local model)": (lambda r: r["is_anomaly"], None),
}
"""Each rule's decision, and the score it thresholds (``None``: a decision with no one score)."""


def table(runs: dict[str, list[dict]], truth: Truth) -> list[str]:
    lines = [
        "| decision | training | flagged | precision | recall | F1 | ROC AUC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (decide, score) in DECIDERS.items():
        for run, rows in runs.items():
            q = quality(rows, truth, decide)
            auc = None if score is None else score_auc(rows, truth, score)
            shown = "—" if auc is None else f"{auc:.3f}"
            flagged = f"{q['flagged'] / len(rows):.1%}"
            lines.append(
                f"| {name} | {run} | {flagged} | {q['precision']:.3f} | {q['recall']:.3f} | {q['f1']:.3f} | {shown} |"
            )
    return lines


def auc_by_period(
    rows: list[dict], truth: Truth, score: Callable[[dict], float | None], periods: int
) -> list[float | None]:
    """ROC AUC of ``score`` over each of ``periods`` equal runs of readings in event-time order."""
    ordered = sorted(rows, key=lambda r: r["timestamp"])  # one ISO-8601 UTC form: text order is time order
    found = []
    for period in range(periods):
        part = ordered[period * len(ordered) // periods : (period + 1) * len(ordered) // periods]
        found.append(score_auc(part, truth, score))
    return found


PERIODS = 5


def global_model_over_time(runs: dict[str, list[dict]], truth: Truth) -> list[str]:
    """Whether the federation learns: the global model's ROC AUC over each fifth of the run,
    beside |z|'s (which does not learn). Each reading is scored by the version of the moment."""
    columns = {
        f"global model, {run}": auc_by_period(rows, truth, lambda r: r["global_score"], PERIODS)
        for run, rows in runs.items()
    }
    columns["\\|z\\|"] = auc_by_period(next(iter(runs.values())), truth, lambda r: abs(r["z_score"]), PERIODS)
    lines = [
        "| ROC AUC by fifth of the run | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for period in range(PERIODS):
        cells = ["—" if (auc := column[period]) is None else f"{auc:.3f}" for column in columns.values()]
        lines.append(f"| {period + 1} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fleet", type=Path, help="a synthetic fleet (JSON Lines from bench.fleet); default: NAB")
    args = parser.parse_args(argv)
    if args.fleet is None:
        source, truth, hidden = NAB, nab_labels(), {"FLEAD_LABEL_COLUMN": "hidden_label", "FLEAD_FIELDS": "value"}
    else:
        source, truth, hidden = args.fleet, fleet_labels(args.fleet), {"FLEAD_LABEL_COLUMN": "hidden_label"}
    runs = {"labelled": scores(source), "label-free": scores(source, **hidden)}
    print("\n".join(table(runs, truth)))
    print()
    print("\n".join(global_model_over_time(runs, truth)))


if __name__ == "__main__":
    main()
