"""Confusion counts of binary decisions against labels, and the metrics they give."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from operators.messages import iso_timestamp


@dataclass(slots=True)
class ConfusionCounts:
    """Counts of true/false positives/negatives, with the event-time span they cover.

    >>> counts = ConfusionCounts()
    >>> for predicted, actual in [(1, 1), (1, 0), (0, 1), (0, 0), (1, 1)]:
    ...     counts.add(predicted, actual, timestamp=0.0)
    >>> counts.precision, counts.recall, round(counts.f1, 3)
    (0.6666666666666666, 0.6666666666666666, 0.667)
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None

    def add(self, predicted: int | bool, actual: int, timestamp: float | None = None) -> None:
        """Count one decision; with a ``timestamp``, also widen the event-time span."""
        if predicted:
            if actual:
                self.tp += 1
            else:
                self.fp += 1
        elif actual:
            self.fn += 1
        else:
            self.tn += 1
        if timestamp is None:
            return
        if self.first_timestamp is None or timestamp < self.first_timestamp:
            self.first_timestamp = timestamp
        if self.last_timestamp is None or timestamp > self.last_timestamp:
            self.last_timestamp = timestamp

    def add_many(self, predicted: np.ndarray, actual: np.ndarray, timestamps: np.ndarray | None = None) -> None:
        """:meth:`add` for each pair of decision and label (and timestamp, if given)."""
        if not len(actual):
            return
        predicted, actual = predicted.astype(bool), actual.astype(bool)
        self.tp += int(np.count_nonzero(predicted & actual))
        self.fp += int(np.count_nonzero(predicted & ~actual))
        self.fn += int(np.count_nonzero(~predicted & actual))
        self.tn += int(np.count_nonzero(~predicted & ~actual))
        if timestamps is not None:
            self.merge(ConfusionCounts(first_timestamp=float(timestamps.min()), last_timestamp=float(timestamps.max())))

    def merge(self, other: ConfusionCounts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        for timestamp in (other.first_timestamp, other.last_timestamp):
            if timestamp is not None:
                if self.first_timestamp is None or timestamp < self.first_timestamp:
                    self.first_timestamp = timestamp
                if self.last_timestamp is None or timestamp > self.last_timestamp:
                    self.last_timestamp = timestamp

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0

    @property
    def precision(self) -> float:
        flagged = self.tp + self.fp
        return self.tp / flagged if flagged else 0.0

    @property
    def recall(self) -> float:
        actual = self.tp + self.fn
        return self.tp / actual if actual else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def metrics(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


FINISHED = 2**62
"""The global version a shard moves to when a bounded input ends: past every real version."""


class EvaluationAggregator:
    """Sums the shards' counts per global version into one evaluation row per version.

    A version's row is complete once every shard has moved past it. The aggregator knows
    how many shards are at each version (all at 0, no model, to begin with) and moves them
    as the shards report; every version below the lowest one still held is complete. At
    the end of a bounded input, :meth:`finish` emits the versions still open. A version
    that no labelled reading was scored with has no row.
    """

    def __init__(self, shards: int) -> None:
        self.open: dict[int, ConfusionCounts] = {}
        self.shards_at: dict[int, int] = {0: shards}

    def add(
        self, closed: dict[int, ConfusionCounts], moves: dict[tuple[int, int], int]
    ) -> list[dict[str, float | int | str]]:
        """Final counts of versions that shards moved past, and those shards' moves
        (``(old, new) -> shards``); the rows of the versions every shard is now past."""
        for version, counts in closed.items():
            self.open.setdefault(version, ConfusionCounts()).merge(counts)
        shards_at = self.shards_at
        for (old, new), n in moves.items():
            shards_at[old] = shards_at.get(old, 0) - n
            shards_at[new] = shards_at.get(new, 0) + n
        for version in [version for version, n in shards_at.items() if not n]:
            del shards_at[version]
        slowest = min(shards_at, default=FINISHED)
        complete = sorted(version for version in self.open if version < slowest)
        return [evaluation_row(version, counts) for version in complete if (counts := self.open.pop(version)).n]

    def finish(self) -> list[dict[str, float | int | str]]:
        rows = [evaluation_row(version, total) for version, total in sorted(self.open.items())]
        self.open.clear()
        return [row for row in rows if row["n"]]


def evaluation_row(global_version: int, counts: ConfusionCounts) -> dict[str, float | int | str]:
    return {
        "global_version": global_version,
        **counts.metrics(),
        "window_start": iso_timestamp(counts.first_timestamp or 0.0),
        "window_end": iso_timestamp(counts.last_timestamp or 0.0),
    }
