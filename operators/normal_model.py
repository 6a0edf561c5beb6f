"""The federated model of normal behaviour: the fleet's distribution of each kind of evidence.

Devices do not share units, but they share what their *standardised* evidence looks like
when nothing is wrong: how large a forecast error in spreads usually is, how much the
short-term spread usually wanders. Each device sends, with its local update, the count,
mean and mean square of its recent evidence over the round (never a reading); FedAvg of the
means and mean squares weighted by counts is exactly the pooled mean and mean square, so the
global model is the fleet's Gaussian of each evidence, learned without a label. A device
that has just joined calibrates against it until its own history is long enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from operators.aggregation import fedavg

EVIDENCE = ("forecast", "spread", "level", "relation")
"""- ``forecast``: the largest |error| of a field's forecast, in that forecaster's error spreads;
- ``spread``: the largest |log(short-window std / long-window std)| of a field (a noise burst,
  or a sensor that stopped moving);
- ``level``: the largest |short-window mean − long-window mean| of a field, in long-window
  stds (a level shift or a drift, for as long as the long window has not absorbed it);
- ``relation``: on a device with several fields, the largest residual of a field's z-score
  against the other fields' (a field that stopped moving with the others; see
  :class:`operators.correlation.FieldRelations`)."""

MEMORY_SAMPLES = 1_000_000
"""A new global model weighs the one before it as at most this many readings, so the fleet's
idea of normal keeps moving with the fleet."""


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, mean and mean square of one evidence's recent mean."""

    samples: int = 0
    mean: float = 0.0
    second: float = 0.0

    @property
    def variance(self) -> float:
        return max(0.0, self.second - self.mean * self.mean)


@dataclass(frozen=True, slots=True)
class NormalModel:
    """One :class:`Moments` per evidence of :data:`EVIDENCE`, in that order."""

    evidence: tuple[Moments, ...] = tuple(Moments() for _ in EVIDENCE)

    @property
    def samples(self) -> int:
        return self.evidence[0].samples

    def as_row(self) -> dict[str, list[float]]:
        return {name: [m.samples, m.mean, m.second] for name, m in zip(EVIDENCE, self.evidence, strict=True)}

    @classmethod
    def from_row(cls, row: dict[str, Sequence[float]] | None) -> NormalModel:
        if not row:
            return cls()
        return cls(tuple(Moments(int(row[name][0]), float(row[name][1]), float(row[name][2])) for name in EVIDENCE))


def pooled(models: Iterable[NormalModel]) -> NormalModel:
    """The models' moments pooled: FedAvg of means and mean squares, weighted by samples.

    >>> a = NormalModel((Moments(100, 1.0, 2.0),) * len(EVIDENCE))
    >>> b = NormalModel((Moments(300, 2.0, 5.0),) * len(EVIDENCE))
    >>> p = pooled([a, b]).evidence[0]
    >>> p.samples, p.mean, p.second, p.variance
    (400, 1.75, 4.25, 1.1875)
    """
    models = [model for model in models if model.samples > 0]
    if not models:
        return NormalModel()
    found = []
    for i in range(len(EVIDENCE)):
        parts = [model.evidence[i] for model in models]
        samples = [part.samples for part in parts]
        mean, second = fedavg([[part.mean, part.second] for part in parts], samples)
        found.append(Moments(sum(samples), mean, second))
    return NormalModel(tuple(found))


def next_normal_model(previous: NormalModel, rounds: Iterable[NormalModel]) -> NormalModel:
    """The new version's model: the rounds since the last version pooled with the last version,
    which counts as at most :data:`MEMORY_SAMPLES` readings."""
    rounds = list(rounds)
    if previous.samples > MEMORY_SAMPLES:
        share = MEMORY_SAMPLES
        previous = NormalModel(tuple(Moments(share, m.mean, m.second) for m in previous.evidence))
    return pooled([previous, *rounds])


class RoundMoments:
    """What one device's round adds to the normal model: sums of each evidence and of its square."""

    __slots__ = ("samples", "squares", "sums")

    def __init__(self) -> None:
        self.samples = 0
        self.sums = [0.0] * len(EVIDENCE)
        self.squares = [0.0] * len(EVIDENCE)

    def add(self, values: Sequence[float]) -> None:
        self.samples += 1
        sums, squares = self.sums, self.squares
        for i, value in enumerate(values):
            sums[i] += value
            squares[i] += value * value

    def model(self) -> NormalModel:
        n = self.samples
        if not n:
            return NormalModel()
        return NormalModel(tuple(Moments(n, s / n, q / n) for s, q in zip(self.sums, self.squares, strict=True)))
