"""The score threshold: fixed, or chosen from the fleet's scores for a target false-alarm rate."""

from __future__ import annotations

from collections.abc import Sequence

from operators.likelihood import SCORE_ROOT, threshold_of

CRITICAL_RARITY = 100.0
"""A ``critical`` reading is this many times less likely than one at the threshold."""
RELEASE_COMMONNESS = 100.0
"""An open incident stays open while its device's readings are at most this many times more
likely than one at the threshold."""

GRID = tuple(threshold_of(10.0 ** (-step / 4)) for step in range(2, 49))
"""Candidate thresholds: tail probabilities from 10^-0.5 down to 10^-12 in quarter decades."""


def critical_threshold(threshold: float) -> float:
    """The score of a reading :data:`CRITICAL_RARITY` times rarer than one at ``threshold``.

    >>> round(critical_threshold(0.5), 4)
    0.6845
    """
    return 1.0 - (1.0 - threshold) * CRITICAL_RARITY ** (-1.0 / SCORE_ROOT)


def release_threshold(threshold: float) -> float:
    """The score below which an open incident closes: :data:`RELEASE_COMMONNESS` times more likely.

    >>> round(release_threshold(0.5), 4)
    0.2076
    """
    return 1.0 - (1.0 - threshold) * RELEASE_COMMONNESS ** (1.0 / SCORE_ROOT)


class ThresholdCounts:
    """How many of a device's scores in a round reached each threshold of :data:`GRID`.

    >>> counts = ThresholdCounts()
    >>> for score in (0.1, 0.3, 0.7, 0.95):
    ...     counts.add(score)
    >>> round(GRID[0], 3), round(GRID[-1], 3)
    (0.109, 0.937)
    >>> counts.samples, counts.reached[0], counts.reached[-1]
    (4, 3, 1)
    """

    __slots__ = ("reached", "samples")

    def __init__(self) -> None:
        self.samples = 0
        self.reached = [0] * len(GRID)

    def add(self, score: float) -> None:
        self.samples += 1
        if score < GRID[0]:
            return
        reached = self.reached
        for i, threshold in enumerate(GRID):
            if score < threshold:
                break
            reached[i] += 1


def threshold_for_rate(samples: int, reached: Sequence[int], rate: float) -> float:
    """The lowest grid threshold that at most ``rate`` of ``samples`` scores reached (``reached[i]``
    of them reached ``GRID[i]``); the highest one when every threshold is reached more often.

    >>> threshold_for_rate(1000, [50, 9] + [0] * (len(GRID) - 2), 0.01) == GRID[1]
    True
    """
    for threshold, n in zip(GRID, reached, strict=True):
        if n <= rate * samples:
            return threshold
    return GRID[-1]
