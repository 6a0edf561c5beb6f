"""Anomaly likelihood: a raw score turned into a calibrated one against the device's own history.

After Ahmad, Lavin, Purdy and Agha, "Unsupervised real-time anomaly detection for streaming
data" (Neurocomputing, 2017): the mean of the raw score over a short recent window is
compared with a Gaussian fitted to the long history of that mean, and its upper tail
probability is the evidence. A thermometer whose forecast errors are always large and a CPU
gauge whose errors are always small both give a tail probability near 0.5 on an ordinary
reading, so one threshold means the same on both.

The score FLEAD reports is ``1 − Q^(1/10)`` for the tail probability ``Q``: 0.5 is a
1-in-1,000 reading (``Q = 0.5¹⁰``), 0.68 about 1 in 100,000, 0.9 one in 10¹⁰. It is 0 only
for ``Q = 1``; in double precision it reaches 1 only below ``Q = 10⁻¹⁶⁰`` (a recent mean some
27 spreads above its history).
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from operators.normal_model import Moments

RECENT = 10
"""Raw scores in the short window whose mean is judged."""
HISTORY = 4000
"""The history's mean and variance are exponentially weighted over about this many readings."""
WARMUP = 300
"""Readings of history (own, plus a prior's weight) before the tail probability counts."""
PRIOR_FADE = 1500
"""A prior's weight fades linearly to nothing over a device's first this many readings: a
device with a long history is judged against itself alone (fleets mix devices whose ordinary
evidence differs, and their pooled moments would blur a long-lived device's own)."""
SPREAD_FLOOR = 0.01
"""The history's standard deviation is at least this (raw scores are in units of spread):
a raw score that never moved does not make the next tiny move infinitely unlikely."""
SCORE_ROOT = 10.0

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)


def log_tail(z: float) -> float:
    """``log P(Z > z)`` for a standard normal ``Z``, accurate far into the tail.

    >>> round(log_tail(0.0), 6) == round(math.log(0.5), 6), round(math.exp(log_tail(3.0)), 5)
    (True, 0.00135)
    >>> round(log_tail(40.0), 1)
    -804.6
    """
    if z < 20.0:
        return math.log(0.5 * math.erfc(z * _SQRT_HALF))
    z2 = z * z
    return -0.5 * z2 - math.log(z) - _LOG_SQRT_2PI + math.log1p(-1.0 / z2 + 3.0 / (z2 * z2))


def score_of(log_tail_probability: float) -> float:
    """The reported score of a tail probability given as its log: ``1 − Q^(1/10)``.

    >>> score_of(math.log(0.5 ** 10)), round(score_of(math.log(1e-5)), 3), score_of(0.0)
    (0.5, 0.684, 0.0)
    """
    return 0.0 - math.expm1(log_tail_probability / SCORE_ROOT)  # 0.0 - … : never −0.0


def rarest(log_tail_probability: float, k: int) -> float:
    """``log Q`` of the rarest of ``k`` pieces of evidence, Šidák-corrected: the chance that at
    least one of ``k`` independent ordinary ones is as rare as ``Q_min``, ``1 − (1 − Q_min)^k``.

    >>> round(math.exp(rarest(math.log(0.5), 2)), 4)
    0.75
    >>> round(rarest(-800.0, 2) + 800.0, 4) == round(math.log(2), 4)
    True
    """
    if log_tail_probability < -30.0:  # (1 − Q)^k ≈ 1 − k·Q to double precision
        return log_tail_probability + math.log(k)
    return math.log(-math.expm1(k * math.log1p(-math.exp(log_tail_probability))))


def log_tail_many(z: np.ndarray) -> np.ndarray:
    """:func:`log_tail` of each of ``z``, by the same formulas, ``math.erfc`` included.

    numpy has no ``erfc``, and SciPy's costs every process 27 MB and 0.2 s to import; mapping
    ``math.erfc`` over a step of 500 readings costs about 20 µs more than SciPy's.

    >>> z = [0.0, 3.0, 19.9, 40.0]
    >>> bool(np.allclose(log_tail_many(np.array(z)), [log_tail(x) for x in z], rtol=1e-15, atol=0))
    True
    >>> log_tail_many(np.array([z, z])).shape
    (2, 4)
    """
    scaled = (z * _SQRT_HALF).ravel()
    halves = np.fromiter(map(math.erfc, scaled.tolist()), np.float64, scaled.size).reshape(np.shape(z))
    with np.errstate(divide="ignore", invalid="ignore"):  # each formula where the other one is used
        near = np.log(0.5 * halves)
        z2 = z * z
        far = -0.5 * z2 - np.log(z) - _LOG_SQRT_2PI + np.log1p(-1.0 / z2 + 3.0 / (z2 * z2))
    return np.where(z < 20.0, near, far)


def rarest_many(log_tail_probability: np.ndarray, k: int) -> np.ndarray:
    """:func:`rarest` of each of ``log_tail_probability``."""
    with np.errstate(divide="ignore"):  # log1p(-1) for Q = 1, which gives log Q = 0 as in rarest
        exact = np.log(-np.expm1(k * np.log1p(-np.exp(log_tail_probability))))
    return np.where(log_tail_probability < -30.0, log_tail_probability + math.log(k), exact)


def score_many(log_tail_probability: np.ndarray) -> np.ndarray:
    """:func:`score_of` of each of ``log_tail_probability``."""
    return 0.0 - np.expm1(log_tail_probability / SCORE_ROOT)


def threshold_of(false_alarm_rate: float) -> float:
    """The score a reading with tail probability ``false_alarm_rate`` gets.

    >>> threshold_of(0.5 ** 10)
    0.5
    """
    return score_of(math.log(false_alarm_rate))


class AnomalyLikelihood:
    """How unusual the recent mean of one raw score is against its own long history.

    :meth:`update` returns ``z``, the recent mean's distance above the history's mean in its
    standard deviations (0 until the history is warm): ``log_tail(z)`` is ``log Q``, the log of
    its upper tail probability under a Gaussian fitted to the history.
    A ``prior`` (the fleet's idea of this raw score, from the federated normal model) stands
    in for ``prior_weight`` readings of history, fading out over the device's first
    :data:`PRIOR_FADE` readings: a device that joined a minute ago is judged
    against the fleet, one with a long history against itself alone.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> likelihood = AnomalyLikelihood()
    >>> for _ in range(400):
    ...     _ = likelihood.update(abs(rng.gauss(0.0, 1.0)))
    >>> round(log_tail(likelihood.update(1.0)[0]), 2), round(log_tail(likelihood.update(9.0)[0]), 1)
    (-1.58, -9.5)
    """

    __slots__ = ("_mean", "_position", "_recent", "_recent_sum", "_variance", "count")

    def __init__(self) -> None:
        self._recent = array("d", bytes(8 * RECENT))
        self._position = 0
        self._recent_sum = 0.0
        self.count = 0
        self._mean = 0.0
        self._variance = 0.0

    def update(self, raw: float, prior: Moments | None = None, prior_weight: float = 0.0) -> tuple[float, float]:
        """``(z, the recent mean)`` after adding ``raw``: how many of the history's standard
        deviations the recent mean lies above the history's mean (0 until the history is warm;
        ``log_tail(z)`` is ``log Q``). The history then learns the recent mean."""
        position = self._position
        self._recent_sum += raw - self._recent[position]
        self._recent[position] = raw
        self._position = (position + 1) % RECENT
        count = self.count
        average = self._recent_sum / (count + 1 if count < RECENT else RECENT)
        own = count if count < HISTORY else HISTORY
        mean, variance = self._mean, self._variance
        if own < PRIOR_FADE and prior is not None and prior_weight > 0.0 and prior.samples:
            prior_weight *= 1.0 - own / PRIOR_FADE
            share = own / (own + prior_weight)
            second = share * (variance + mean * mean) + (1.0 - share) * prior.second
            mean = share * mean + (1.0 - share) * prior.mean
            variance = second - mean * mean
            own += prior_weight
        if own >= WARMUP:
            spread = math.sqrt(variance) if variance > 0.0 else 0.0
            z = (average - mean) / (spread if spread > SPREAD_FLOOR else SPREAD_FLOOR)
        else:
            z = 0.0
        self.count = count = count + 1
        rate = 1.0 / (count if count < HISTORY else HISTORY)
        deviation = average - self._mean
        self._mean += rate * deviation
        self._variance = (1.0 - rate) * (self._variance + rate * deviation * deviation)
        return z, average

    def __getstate__(self) -> tuple:
        return self._recent, self._position, self._recent_sum, self.count, self._mean, self._variance

    def __setstate__(self, state: tuple) -> None:
        self._recent, self._position, self._recent_sum, self.count, self._mean, self._variance = state
