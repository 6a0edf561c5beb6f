"""The Numenta Anomaly Benchmark's scoring rule, written from its published description.

Lavin and Ahmad, "Evaluating Real-time Anomaly Detection Algorithms: the Numenta Anomaly
Benchmark" (2015), and the NAB repository's documentation:

- each series has labelled anomaly *windows*; the first 15 % of a series (at most 750 rows)
  is a probationary period whose detections are not scored;
- a *detection* is a row whose anomaly score is at or above the threshold;
- only the earliest detection inside a window counts: it earns ``A_TP`` times a scaled
  sigmoid of its position, normalised so that a detection on the window's first row earns
  exactly ``A_TP``; later detections in the window earn and cost nothing;
- a detection outside every window costs ``A_FP`` times the same sigmoid continued past the
  end of the window before it (nearly the full cost far from a window, less just after one;
  the full cost before the first window);
- a window with no detection costs ``A_FN``;
- one threshold per detector and profile for the whole corpus, the one with the best total;
- the total is normalised so that a detector that never flags scores 0 and one that flags
  every window on its first row scores 100.

The profiles' costs are NAB's ``standard``, ``reward_low_FP_rate`` and ``reward_low_FN_rate``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PROBATION_SHARE = 0.15
PROBATION_CAP_ROWS = 5000
"""The probationary period is ``min(⌊0.15·rows⌋, 0.15·5000)`` rows."""


@dataclass(frozen=True)
class Profile:
    tp: float
    fp: float
    fn: float


PROFILES = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_fp": Profile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_fn": Profile(tp=1.0, fp=0.11, fn=2.0),
}


def scaled_sigmoid(position: float) -> float:
    """``2·σ(−5·position) − 1``: about 0.987 at a window's first row (−1), 0 at its end (0),
    −0.987 one window length past it; −1 from three window lengths on.

    >>> round(scaled_sigmoid(-1.0), 5), round(scaled_sigmoid(-0.5), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.84828, 0.0, -1.0)
    """
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(rows: int) -> float:
    return min(math.floor(PROBATION_SHARE * rows), PROBATION_SHARE * PROBATION_CAP_ROWS)


@dataclass(frozen=True, slots=True)
class Row:
    """One scored row of a series as the sweep sees it."""

    score: float
    window: tuple[str, int] | None
    """``(series, window index)`` for a row inside a window, else ``None``."""
    tp_value: float
    """What the row earns as a window's earliest detection (relative to ``A_TP``)."""
    fp_value: float
    """What the row costs as a false positive (relative to ``A_FP``; 0 to −1)."""


def series_rows(name: str, scores: Sequence[float], windows: Sequence[tuple[int, int]]) -> list[Row]:
    """The scorable rows of one series; ``windows`` are ``(first row, last row)`` index pairs in order.

    Rows in the probationary period are left out: their detections neither earn nor cost.
    """
    probation = probation_rows(len(scores))
    max_tp = scaled_sigmoid(-1.0)
    rows = []
    window_at = 0
    previous_end: int | None = None
    previous_width = 0.0
    for i, score in enumerate(scores):
        while window_at < len(windows) and windows[window_at][1] < i:
            previous_end = windows[window_at][1]
            previous_width = windows[window_at][1] - windows[window_at][0] + 1.0
            window_at += 1
        inside = window_at < len(windows) and windows[window_at][0] <= i
        if inside:
            first, last = windows[window_at]
            width = last - first + 1.0
            tp_value = scaled_sigmoid(-(last - i + 1) / width) / max_tp
            fp_value = 0.0
        else:
            tp_value = 0.0
            # before the first window: the full cost; after one: less the closer to its end
            fp_value = -1.0 if previous_end is None else scaled_sigmoid(abs(previous_end - i) / (previous_width - 1.0))
        if i < probation:
            continue
        rows.append(Row(score, (name, window_at) if inside else None, tp_value, fp_value))
    return rows


@dataclass(frozen=True)
class Corpus:
    """The scorable rows of every series, and the windows the normalisation counts."""

    rows: list[Row]
    windows: int
    """Every labelled window, including any that lies wholly in a probationary period (NAB's
    perfect score counts them all)."""

    @classmethod
    def of(cls, series: dict[str, tuple[Sequence[float], Sequence[tuple[int, int]]]]) -> Corpus:
        """``{name: (scores, windows)}``, windows as ``(first row, last row)`` index pairs in order."""
        rows = [row for name, (scores, windows) in series.items() for row in series_rows(name, scores, windows)]
        return cls(rows, sum(len(windows) for _, windows in series.values()))

    @property
    def scored_windows(self) -> set[tuple[str, int]]:
        """The windows with a row past the probationary period: those a miss costs."""
        return {row.window for row in self.rows if row.window is not None}


def sweep(corpus: Corpus, profile: Profile, threshold: float = -math.inf) -> list[tuple[float, float]]:
    """``(threshold, raw score)`` for every distinct score down to ``threshold``, highest first.

    Starts above every score (nothing flagged: every window missed) and lowers the
    threshold one distinct score at a time.
    """
    best_in_window = dict.fromkeys(corpus.scored_windows, -profile.fn)
    window_total = -profile.fn * len(best_in_window)
    fp_total = 0.0
    found = [(math.inf, window_total)]
    ordered = sorted((row for row in corpus.rows if row.score >= threshold), key=lambda row: row.score, reverse=True)
    i = 0
    while i < len(ordered):
        level = ordered[i].score
        while i < len(ordered) and ordered[i].score == level:
            row = ordered[i]
            if row.window is None:
                fp_total += row.fp_value * profile.fp
            else:
                earned = row.tp_value * profile.tp
                if earned > best_in_window[row.window]:
                    window_total += earned - best_in_window[row.window]
                    best_in_window[row.window] = earned
            i += 1
        found.append((level, window_total + fp_total))
    return found


def normalised(raw: float, corpus: Corpus, profile: Profile) -> float:
    """100 for every window found on its first row, 0 for never flagging."""
    null = -profile.fn * len(corpus.scored_windows)
    perfect = profile.tp * corpus.windows
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class Result:
    threshold: float
    raw: float
    score: float


def best(corpus: Corpus, profile: Profile) -> Result:
    """The threshold with the highest total over the corpus, and its normalised score."""
    threshold, raw = max(sweep(corpus, profile), key=lambda pair: pair[1])
    return Result(threshold, raw, normalised(raw, corpus, profile))


def at_threshold(corpus: Corpus, profile: Profile, threshold: float) -> Result:
    """The normalised score of flagging every row whose score is at or above ``threshold``."""
    raw = sweep(corpus, profile, threshold)[-1][1]
    return Result(threshold, raw, normalised(raw, corpus, profile))
