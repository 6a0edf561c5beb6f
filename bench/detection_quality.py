"""Detection quality, label-free first: NAB's score on the bundled series, and a labelled fleet.

    .venv/bin/python -m bench.detection_quality                      # NAB: the 13 bundled series
    .venv/bin/python -m bench.detection_quality --fleet fleet.jsonl  # a generated fleet (bench.fleet)
    .venv/bin/python -m bench.detection_quality --set FLEAD_ROUND_ROWS=20  # every replay with a setting

Every run replays the input through the dataflow with ``FLEAD_SCORES=1`` and the labels
hidden from it (``FLEAD_LABEL_COLUMN`` names a column no row has), then scores what it wrote
against the labels.

*NAB* (``bench/nab_score.py``): the three profiles' normalised scores, each at its best
threshold over the whole corpus (NAB's rule), of FLEAD's alerts (the calibrated score, with
the flags inside an incident after its alert held below the threshold, as an operator sees
them), of the calibrated score on every reading, and of |z| mapped to |z|/(1+|z|) (a
windowed Gaussian); then the standard score at FLEAD's own threshold.

*Fleet*: the share flagged, precision, recall, F1 and the false-alarm rate (flagged normal
readings over all normal readings) of ``is_anomaly`` and of the z-rule, pooled over the
fleet after each device's first ``--warmup`` readings, with the ROC AUC and the PR AUC
(average precision) of the score behind each. A third row is the logistic model trained on
labels that reach each device ``--label-delay`` readings late (operator feedback), so that
a model that only learns "we are inside a labelled anomaly" cannot pass for a detector.

*Federation* (``--fleet F --federation``): the same stream calibrated with the fleet's normal
model (the default), by each device alone (``FLEAD_NORMAL_PRIOR_READINGS=0``), and with one
model pooled from every reading as it arrives (centralised); then cold start: a copy of the
fleet in which every fifth device joins halfway, scored over those devices' first 100
readings, each way.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson

from bench import nab_score
from bench.run import flead_env
from bench.settings import add_set_option
from operators.messages import iso_timestamp, parse_timestamp

REPO = Path(__file__).resolve().parents[1]
NAB = REPO / "data" / "nab"
HIDDEN = {"FLEAD_LABEL_COLUMN": "hidden_label"}
"""Settings that hide the labels from the dataflow: it reads a label column no row has."""

Truth = dict[tuple[str, str], int]
"""The label of each reading, by (device id, timestamp as the dataflow writes it)."""
Score = Callable[[dict], float | None]


def nab_labels() -> Truth:
    found = {}
    for path in NAB.rglob("*.csv"):
        device = path.relative_to(NAB).with_suffix("").as_posix()
        with path.open() as handle:
            for row in csv.DictReader(handle):
                found[(device, iso_timestamp(parse_timestamp(row["timestamp"])))] = int(row["label"])
    return found


def nab_windows() -> dict[str, list[tuple[str, str]]]:
    """Each series' anomaly windows, as (first, last) timestamps the way the dataflow writes them."""
    windows = json.loads((NAB / "windows.json").read_text())
    return {
        name.removesuffix(".csv"): [
            (iso_timestamp(parse_timestamp(a)), iso_timestamp(parse_timestamp(b))) for a, b in pairs
        ]
        for name, pairs in windows.items()
    }


def fleet_labels(path: Path) -> Truth:
    found = {}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        found[(record["device_id"], iso_timestamp(parse_timestamp(record["timestamp"])))] = int(record["label"])
    return found


def scores(source: Path, base: dict[str, str], **settings: str) -> list[dict]:
    """The rows of ``scores.jsonl`` from a replay of ``source`` with ``base`` (``--set``) and
    ``settings``, which come first."""
    with tempfile.TemporaryDirectory() as out:
        env = flead_env(source, Path(out), base, FLEAD_SCORES="1", **settings)
        subprocess.run(
            [sys.executable, "-m", "bytewax.run", "dataflows.flead"], cwd=REPO, env=env, check=True, capture_output=True
        )
        return [orjson.loads(line) for line in (Path(out) / "scores.jsonl").read_bytes().splitlines()]


def alert_score(row: dict) -> float:
    """The score as the alerts show it: a flag inside an incident, after its alert, is held
    just below the threshold (the device already raised the incident)."""
    if row["is_anomaly"] and not row["alert"]:
        return min(row["score"], math.nextafter(row["threshold"], 0.0))
    return row["score"]


def z_mapped(row: dict) -> float:
    z = abs(row["z_score"])
    return z / (1.0 + z)


NAB_DETECTORS: dict[str, Score] = {
    "FLEAD alerts (calibrated score, one per incident)": alert_score,
    "FLEAD calibrated score, every reading": lambda row: row["score"],
    "\\|z\\|/(1+\\|z\\|), windowed Gaussian": z_mapped,
}


def nab_corpus(rows: list[dict], score: Score, windows: dict[str, list[tuple[str, str]]]) -> nab_score.Corpus:
    """The rows of a replay of the bundled series as NAB's corpus, scored by ``score``."""
    by_series: dict[str, list[dict]] = {}
    for row in rows:
        by_series.setdefault(row["device_id"], []).append(row)
    series = {}
    for name, series_rows in by_series.items():
        series_rows.sort(key=lambda r: r["timestamp"])  # one ISO-8601 UTC form: text order is time order
        index = {r["timestamp"]: i for i, r in enumerate(series_rows)}
        series[name] = ([score(r) for r in series_rows], [(index[a], index[b]) for a, b in windows.get(name, [])])
    return nab_score.Corpus.of(series)


def nab_table(rows: list[dict]) -> list[str]:
    windows = nab_windows()
    lines = [
        "| detector | standard | reward low FP | reward low FN |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, score in NAB_DETECTORS.items():
        corpus = nab_corpus(rows, score, windows)
        cells = [f"{nab_score.best(corpus, profile).score:.1f}" for profile in nab_score.PROFILES.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    corpus = nab_corpus(rows, alert_score, windows)
    threshold = rows[0]["threshold"]
    at = nab_score.at_threshold(corpus, nab_score.PROFILES["standard"], threshold)
    lines.append("")
    lines.append(f"FLEAD's alerts at its own threshold ({threshold}), standard profile: {at.score:.1f}")
    return lines


def confusion(rows: list[dict], truth: Truth, decide: Callable[[dict], bool]) -> dict[str, float]:
    tp = fp = fn = tn = 0
    for row in rows:
        actual = truth[(row["device_id"], row["timestamp"])]
        flagged = decide(row)
        tp += flagged and actual
        fp += flagged and not actual
        fn += actual and not flagged
        tn += not actual and not flagged
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "flagged": (tp + fp) / len(rows) if rows else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": fp / (fp + tn) if fp + tn else 0.0,
    }


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


def average_precision(scored: list[tuple[float, int]]) -> float | None:
    """The area under the precision-recall curve as average precision: the mean, over the
    anomalous readings, of the precision at the threshold that first flags each (ties flagged together).

    >>> average_precision([(0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)])
    0.8333333333333333
    """
    positives = sum(label for _, label in scored)
    if not positives:
        return None
    ordered = sorted(scored, key=lambda pair: pair[0], reverse=True)
    total = flagged = found = 0
    i = 0
    while i < len(ordered):
        level = ordered[i][0]
        run_positives = 0
        while i < len(ordered) and ordered[i][0] == level:
            run_positives += ordered[i][1]
            flagged += 1
            i += 1
        found += run_positives
        total += run_positives * found / flagged
    return total / positives


def score_aucs(rows: list[dict], truth: Truth, score: Score) -> tuple[float | None, float | None]:
    scored = [(s, truth[(r["device_id"], r["timestamp"])]) for r in rows if (s := score(r)) is not None]
    return roc_auc(scored), average_precision(scored)


def after_warmup(rows: list[dict], warmup: int) -> list[dict]:
    """Each device's rows after its first ``warmup`` (the file is in time order per device)."""
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        n = seen[row["device_id"]] = seen.get(row["device_id"], 0) + 1
        if n > warmup:
            kept.append(row)
    return kept


FLEET_DECIDERS: dict[str, tuple[Callable[[dict], bool], Score]] = {
    "FLEAD `is_anomaly` (calibrated score, incidents)": (lambda r: r["is_anomaly"], lambda r: r["score"]),
    "z-rule (\\|z\\| ≥ 2.5)": (lambda r: abs(r["z_score"]) >= 2.5, lambda r: abs(r["z_score"])),
}


def false_alarms_by_device(rows: list[dict], truth: Truth) -> list[float]:
    """Each device's false-alarm rate (flagged normal readings over its normal readings)."""
    normal: dict[str, int] = {}
    flagged: dict[str, int] = {}
    for row in rows:
        if not truth[(row["device_id"], row["timestamp"])]:
            device = row["device_id"]
            normal[device] = normal.get(device, 0) + 1
            flagged[device] = flagged.get(device, 0) + row["is_anomaly"]
    return sorted(flagged[device] / n for device, n in normal.items())


def spread_line(rates: list[float]) -> str:
    """The spread of the devices' false-alarm rates: does one threshold mean the same on every device?"""
    if not rates:
        return ""
    median, p90, worst = rates[len(rates) // 2], rates[math.ceil(0.9 * len(rates)) - 1], rates[-1]  # nearest rank
    return (
        f"False-alarm rate of `is_anomaly` per device ({len(rates)} devices): "
        f"median {median:.2%}, 90th percentile {p90:.2%}, highest {worst:.2%}."
    )


def fleet_table(runs: dict[str, list[dict]], truth: Truth) -> list[str]:
    lines = [
        "| decision | labels | flagged | precision | recall | F1 | false-alarm rate | ROC AUC | PR AUC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def line(name: str, run: str, rows: list[dict], decide: Callable[[dict], bool], score: Score) -> str:
        q = confusion(rows, truth, decide)
        roc, pr = score_aucs(rows, truth, score)
        aucs = " | ".join("—" if auc is None else f"{auc:.3f}" for auc in (roc, pr))
        return (
            f"| {name} | {run} | {q['flagged']:.1%} | {q['precision']:.3f} | {q['recall']:.3f} | {q['f1']:.3f} "
            f"| {q['false_alarm_rate']:.2%} | {aucs} |"
        )

    label_free = runs["label-free"]
    for name, (decide, score) in FLEET_DECIDERS.items():
        lines.append(line(name, "none", label_free, decide, score))
    for run, rows in runs.items():
        if run != "label-free":
            lines.append(
                line(
                    "logistic model (probability > 0.5)",
                    run,
                    rows,
                    lambda r: r["model_score"] > 0.5,
                    lambda r: r["model_score"],
                )
            )
    return lines


def late_joiners(source: Path, target: Path, share: float = 0.2) -> set[str]:
    """A copy of ``source`` in which every fifth device (by id) joins halfway: its readings of the
    first half of the run's time are left out. Returns those devices' ids."""
    records = [orjson.loads(line) for line in source.read_bytes().splitlines()]
    devices = sorted({r["device_id"] for r in records})
    joiners = set(devices[:: round(1 / share)])
    stamps = sorted(r["timestamp"] for r in records)
    halfway = stamps[len(stamps) // 2]
    with target.open("wb") as out:
        for record in records:
            if record["device_id"] not in joiners or record["timestamp"] >= halfway:
                out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    return joiners


def first_readings(rows: list[dict], devices: set[str], n: int) -> list[dict]:
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        if row["device_id"] in devices:
            k = seen[row["device_id"]] = seen.get(row["device_id"], 0) + 1
            if k <= n:
                kept.append(row)
    return kept


FEDERATION = {
    "federated: the fleet's normal model (default)": {},
    "each device alone": {"FLEAD_NORMAL_PRIOR_READINGS": "0"},
    "centralised: every reading pooled at once": {"FLEAD_ROUND_ROWS": "1", "FLEAD_FEDAVG_UPDATES": "1"},
}
"""The centralised row is the same model with no rounds: every reading's evidence reaches the
pooled model as it happens, as if one server saw the whole stream."""


def federation_table(path: Path, truth: Truth, warmup: int, first: int, base: dict[str, str]) -> list[str]:
    """The same streams with and without the fleet's normal model: the whole fleet after its
    warm-up, and devices that join halfway over their first ``first`` readings."""
    lines = [
        "| calibration | readings | precision | recall | F1 | false-alarm rate | ROC AUC | PR AUC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as folder:
        joined = Path(folder) / "late.jsonl"
        joiners = late_joiners(path, joined)
        for name, settings in FEDERATION.items():
            for readings, rows in (
                (f"fleet, after {warmup} each", after_warmup(scores(path, base, **HIDDEN, **settings), warmup)),
                (
                    f"late joiners, first {first}",
                    first_readings(scores(joined, base, **HIDDEN, **settings), joiners, first),
                ),
            ):
                q = confusion(rows, truth, lambda r: r["is_anomaly"])
                aucs = " | ".join(
                    "—" if a is None else f"{a:.3f}" for a in score_aucs(rows, truth, lambda r: r["score"])
                )
                lines.append(
                    f"| {name} | {readings} | {q['precision']:.3f} | {q['recall']:.3f} | {q['f1']:.3f} "
                    f"| {q['false_alarm_rate']:.2%} | {aucs} |"
                )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fleet", type=Path, help="a generated fleet (JSON Lines from bench.fleet); default: NAB")
    parser.add_argument("--warmup", type=int, default=100, help="readings of each device left out of the fleet table")
    parser.add_argument("--label-delay", type=int, default=100, help="readings before a label reaches its device")
    parser.add_argument(
        "--federation",
        action="store_true",
        help="with --fleet: with and without the fleet's normal model, and cold start",
    )
    add_set_option(parser)
    args = parser.parse_args(argv)
    base = dict(args.set)
    if args.fleet is None:
        print("\n".join(nab_table(scores(NAB, base, FLEAD_FIELDS="value", **HIDDEN))))
        return
    truth = fleet_labels(args.fleet)
    if args.federation:
        print("\n".join(federation_table(args.fleet, truth, args.warmup, first=100, base=base)))
        return
    runs = {
        "label-free": after_warmup(scores(args.fleet, base, **HIDDEN), args.warmup),
        f"{args.label_delay} readings late": after_warmup(
            scores(args.fleet, base, FLEAD_LABEL_DELAY=str(args.label_delay)), args.warmup
        ),
    }
    print("\n".join(fleet_table(runs, truth)))
    print()
    print(spread_line(false_alarms_by_device(runs["label-free"], truth)))


if __name__ == "__main__":
    main()
