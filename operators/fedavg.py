"""Federated averaging: the arithmetic, and the rule for when a new global model is made."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np

from operators.aggregation import AGGREGATION_RULES, coordinate_median, fedavg, trimmed_mean
from operators.local_model import ModelParameters
from operators.messages import iso_timestamp, parse_timestamp
from operators.normal_model import Moments, NormalModel, next_normal_model, pooled
from operators.threshold import threshold_for_rate


@dataclass(slots=True)
class LocalUpdate:
    """What a device sends at the end of a local round: its model, never its readings."""

    device_id: str
    model_version: int
    global_version: int
    parameters: ModelParameters
    base: ModelParameters
    """What the round started from: the global model it adopted, else the device's previous round's end."""
    samples: int
    labelled: int
    """Labels that reached the device in this round (the logistic model learned from them)."""
    accuracy: float | None
    """The logistic model's accuracy on those labels, before learning each (``None``: no label)."""
    loss: float | None
    timestamp: float
    normal: NormalModel = field(default_factory=NormalModel)
    """The moments of the round's evidence, for the fleet's normal model."""
    threshold_counts: tuple[int, list[int]] | None = None
    """With a target false-alarm rate: the round's readings, and how many reached each grid threshold."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """An update as builtins, for pickle: updates cross to FedAvg's worker, and pickle's
        default for a slotted dataclass, applied to each one nested here, made an update cost
        24.2 µs to dump and load (with the dataflow's garbage-collector setting), 12.1 this way."""
        parameters, base = self.parameters, self.base
        return _local_update, (
            self.device_id,
            self.model_version,
            self.global_version,
            parameters.weights,
            parameters.intercept,
            base.weights,
            base.intercept,
            self.samples,
            self.labelled,
            self.accuracy,
            self.loss,
            self.timestamp,
            tuple((m.samples, m.mean, m.second) for m in self.normal.evidence),
            self.threshold_counts,
        )

    def as_row(self) -> dict[str, Any]:
        row = {
            "device_id": self.device_id,
            "model_version": self.model_version,
            "global_version": self.global_version,
            "weights": self.parameters.weights,
            "intercept": self.parameters.intercept,
            "samples_processed": self.samples,
            "labelled": self.labelled,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "normal_model": self.normal.as_row(),
            "created_at": iso_timestamp(self.timestamp),
        }
        if self.threshold_counts is not None:
            row["threshold_counts"] = {"samples": self.threshold_counts[0], "reached": self.threshold_counts[1]}
        return row


def _local_update(
    device_id: str,
    model_version: int,
    global_version: int,
    weights: dict[str, float],
    intercept: float,
    base_weights: dict[str, float],
    base_intercept: float,
    samples: int,
    labelled: int,
    accuracy: float | None,
    loss: float | None,
    timestamp: float,
    moments: tuple[tuple[int, float, float], ...],
    threshold_counts: tuple[int, list[int]] | None,
) -> LocalUpdate:
    return LocalUpdate(
        device_id,
        model_version,
        global_version,
        ModelParameters(weights, intercept),
        ModelParameters(base_weights, base_intercept),
        samples,
        labelled,
        accuracy,
        loss,
        timestamp,
        NormalModel(tuple(Moments(*m) for m in moments)),
        threshold_counts,
    )


@dataclass(slots=True)
class GlobalModel:
    """One version of the federated model."""

    version: int
    parameters: ModelParameters
    accuracy: float | None
    """The devices' logistic models' accuracy on the labels of the rounds behind it (``None``: no label)."""
    num_devices: int
    num_updates: int
    samples: int
    timestamp: float
    normal: NormalModel = field(default_factory=NormalModel)
    """The fleet's normal model: what the evidence looks like when nothing is wrong."""
    threshold: float | None = None
    """The score threshold in force with this version."""
    capped_devices: int = 0
    """Devices whose weight in this version was cut to the cap (a multiple of the median samples)."""
    clipped_devices: int = 0
    """Devices whose change was scaled down to the clipping bound."""
    dp_epsilon: float | None = None
    """With differential privacy: the ε spent by every version up to this one (at the aggregator's δ)."""

    def as_row(self) -> dict[str, Any]:
        return {
            "global_version": self.version,
            "aggregation_round": self.version,
            "weights": self.parameters.weights,
            "intercept": self.parameters.intercept,
            "accuracy": self.accuracy,
            "num_devices": self.num_devices,
            "num_updates": self.num_updates,
            "samples": self.samples,
            "threshold": self.threshold,
            "normal_model": self.normal.as_row(),
            "capped_devices": self.capped_devices,
            "clipped_devices": self.clipped_devices,
            "dp_epsilon": self.dp_epsilon,
            "created_at": iso_timestamp(self.timestamp),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> GlobalModel:
        """The inverse of :meth:`as_row`, for models that come back over a loopback or a topic."""
        return cls(
            version=int(row["global_version"]),
            parameters=ModelParameters(dict(row["weights"]), float(row["intercept"])),
            accuracy=None if row["accuracy"] is None else float(row["accuracy"]),
            num_devices=int(row["num_devices"]),
            num_updates=int(row["num_updates"]),
            samples=int(row["samples"]),
            timestamp=parse_timestamp(row["created_at"]),
            normal=NormalModel.from_row(row.get("normal_model")),
            threshold=None if row.get("threshold") is None else float(row["threshold"]),
            capped_devices=int(row.get("capped_devices") or 0),
            clipped_devices=int(row.get("clipped_devices") or 0),
            dp_epsilon=None if row.get("dp_epsilon") is None else float(row["dp_epsilon"]),
        )


@dataclass(slots=True)
class _DeviceContribution:
    """A device's weighted changes since the last version, added up, and the samples behind them."""

    weights: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0
    samples: int = 0
    labelled: int = 0
    correct: float = 0.0

    def add_change(self, parameters: ModelParameters, base: ModelParameters, factor: float) -> None:
        """Add ``factor`` times the change from ``base`` to ``parameters`` (a missing weight is 0)."""
        weights, base_weights = self.weights, base.weights
        for name, w in parameters.weights.items():
            weights[name] = weights.get(name, 0.0) + factor * (w - base_weights.get(name, 0.0))
        for name in base_weights.keys() - parameters.weights.keys():
            weights[name] = weights.get(name, 0.0) - factor * base_weights[name]
        self.intercept += factor * (parameters.intercept - base.intercept)


@dataclass(frozen=True, slots=True)
class FederationRules:
    """How the aggregator combines the devices' changes (see :class:`FedAvgAggregator`); the
    defaults are plain FedAvg without bounds or privacy."""

    rule: str = "fedavg"
    trim_fraction: float = 0.1
    cap_multiple: float = 0.0
    """0: no cap."""
    clip_norm: float = 0.0
    """0: no fixed bound (``clip_multiple`` decides)."""
    clip_multiple: float = 0.0
    """0 (and no ``clip_norm``): no clipping."""
    dp_noise_multiplier: float = 0.0
    """0: no differential privacy."""
    dp_delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.rule not in AGGREGATION_RULES:
            raise ValueError(f"rule must be one of {', '.join(AGGREGATION_RULES)}, got {self.rule!r}")
        if not 0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be at least 0 and below 0.5, got {self.trim_fraction}")
        if min(self.cap_multiple, self.clip_norm, self.clip_multiple, self.dp_noise_multiplier) < 0:
            raise ValueError("cap_multiple, clip_norm, clip_multiple and dp_noise_multiplier must not be negative")
        if self.dp_noise_multiplier > 0:
            if self.clip_norm <= 0:
                raise ValueError("differential privacy needs a fixed clip_norm (a bound learned from the data leaks)")
            if self.rule != "fedavg":
                raise ValueError("differential privacy is DP-FedAvg: it needs rule='fedavg'")
            if not 0 < self.dp_delta < 1:
                raise ValueError(f"dp_delta must be between 0 and 1, got {self.dp_delta}")


RECENT_NORMS = 1000
"""How many devices' change norms the relative clipping bound takes its median over."""


@dataclass(slots=True)
class RecentMedian:
    """The median of the last ``size`` values, as ``statistics.median`` gives it.

    The values are also kept in order of size, so that each costs two binary searches rather
    than each median a sort: FedAvg wants the median at every version.

    >>> recent = RecentMedian(3)
    >>> for value in (5.0, 1.0, 4.0, 2.0):
    ...     recent.add(value)
    >>> recent.median()  # of 1.0, 4.0, 2.0
    2.0
    """

    size: int
    arrived: deque[float] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        if len(self.arrived) == self.size:
            del self.ordered[bisect_left(self.ordered, self.arrived.popleft())]
        self.arrived.append(value)
        insort(self.ordered, value)

    def median(self) -> float:
        ordered, middle = self.ordered, len(self.ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass
class FedAvgAggregator:
    """Adds up what the devices learned since the last version and says when to make the next one.

    A new version is made after ``every_updates`` updates, or once ``every_seconds`` of
    event time have passed since the last version (0 turns either trigger off).

    Version v+1 is version v moved by the devices' changes, weighted by their samples:
    ``w_v+1 = w_v + Σ n_k·s_k·(w_k − b_k) / Σ n_k``, where ``b_k`` is what device k's round
    started from. When every round started from version v (``s_k = 1``) this is FedAvg's
    ``Σ n_k·w_k / Σ n_k``. But a round lasts far longer than a version (60 s of event time,
    against a version every 20 updates of a whole fleet), so most rounds started from an
    older version. Averaging their weights would pull the global model back to that version,
    and it would learn no more than one round's worth per round length; adding their changes
    at full weight makes it overshoot and swing, because each change was learned on an old
    model. So a change learned from a version ``τ`` versions old counts ``s_k = 1/√(1 + τ)``
    (the staleness weight of FedBuff, Nguyen et al. 2022). A device that sent several
    updates since the last version counts once, with the sum of its weighted changes and the
    samples of all its rounds.

    The fleet's normal model is pooled rather than moved: each version's is the moments of
    the rounds since the last version pooled with the last version's (see
    :func:`operators.normal_model.next_normal_model`); a change in the evidence's moments is
    no gradient step, and a stale round's moments are as true as a fresh one's.

    Every version carries the score threshold in force: ``score_threshold``, or, with a
    ``target_false_alarm_rate``, the lowest grid threshold that the fleet's scores so far
    reach at most that often.

    The bounds, the rule and the privacy are ``rules`` (:class:`FederationRules`).
    *One device's bounds* (before the rule): with ``cap_multiple``, a device's weight in a
    version is at most that multiple of the median samples of the version's devices; with
    ``clip_norm`` (a fixed bound) or else ``clip_multiple`` (that multiple of the median L2
    norm of the last :data:`RECENT_NORMS` devices' changes, this version's included), a
    device's change is scaled down to that norm. *The rule* (``rule``, one of
    :data:`operators.aggregation.AGGREGATION_RULES`) combines the changes: FedAvg weighted by
    the capped samples, or the unweighted coordinate-wise trimmed mean (``trim_fraction``)
    or median. The normal model gets the same treatment where it means something: each
    device's rounds since the last version are pooled into one set of moments, whose weight
    is capped like its change's, and the robust rules combine the devices' means and mean
    squares coordinate by coordinate (a change norm has no meaning for moments: no clip).

    *Differential privacy* (``dp_noise_multiplier`` > 0, DP-FedAvg of McMahan et al. 2018):
    every device counts once (an unweighted mean of changes clipped to ``clip_norm``, so one
    device moves it by at most ``clip_norm / n``), and Gaussian noise of standard deviation
    ``dp_noise_multiplier · clip_norm / n`` is added to it, drawn from a generator seeded with
    the version number (a replay draws the same noise). The ε spent so far at ``dp_delta`` is
    composed by ``dp_accounting``'s RDP accountant, one Gaussian mechanism per version
    without amplification by sampling (devices are not sampled at random: they send when
    their rounds close). It protects the global models against inferences about one device's
    readings, not the local updates on their way to the aggregator.
    """

    every_updates: int
    every_seconds: float = 0.0
    score_threshold: float = 0.5
    target_false_alarm_rate: float = 0.0
    version: int = 0
    pending_updates: int = 0
    last_version_time: float | None = None
    parameters: ModelParameters = field(default_factory=ModelParameters)
    """The newest global model's (all zeros, as a new device's model, before the first version)."""
    contributions: dict[str, _DeviceContribution] = field(default_factory=dict)
    normal: NormalModel = field(default_factory=NormalModel)
    pending_normal: list[NormalModel] = field(default_factory=list)
    threshold_totals: tuple[int, list[int]] | None = None
    """The fleet's scores so far: how many, and how many reached each grid threshold."""
    rules: FederationRules = field(default_factory=FederationRules)
    pending_device_normal: dict[str, NormalModel] = field(default_factory=dict)
    """Each device's rounds since the last version, pooled (for the normal model's bounds)."""
    recent_norms: RecentMedian = field(default_factory=lambda: RecentMedian(RECENT_NORMS))
    privacy_accountant: Any = None
    """``dp_accounting``'s RDP accountant with every version's Gaussian mechanism (with DP only)."""

    def __post_init__(self) -> None:
        if self.every_updates < 0 or self.every_seconds < 0:
            raise ValueError("every_updates and every_seconds must not be negative")
        if self.every_updates == 0 and self.every_seconds == 0:
            raise ValueError("at least one of every_updates and every_seconds must be set")

    def add(self, update: LocalUpdate) -> GlobalModel | None:
        """Take one local update; returns the next global model when one is due."""
        staleness = max(0, self.version - update.global_version)
        contribution = self.contributions.get(update.device_id)
        if contribution is None:
            contribution = self.contributions[update.device_id] = _DeviceContribution()
        contribution.add_change(update.parameters, update.base, factor=1.0 / math.sqrt(1 + staleness))
        contribution.samples += update.samples
        if update.accuracy is not None:
            contribution.labelled += update.labelled
            contribution.correct += update.accuracy * update.labelled
        if update.normal.samples:
            self.pending_normal.append(update.normal)
            earlier = self.pending_device_normal.get(update.device_id)
            self.pending_device_normal[update.device_id] = (
                update.normal if earlier is None else pooled([earlier, update.normal])
            )
        if update.threshold_counts is not None:
            self._count_scores(*update.threshold_counts)
        self.pending_updates += 1
        if self.last_version_time is None:
            self.last_version_time = update.timestamp
        if self._due(update.timestamp):
            return self.aggregate(update.timestamp)
        return None

    def adopt(self, model: GlobalModel) -> None:
        """Go on from ``model`` when it is newer than this aggregator's newest version.

        For a dataflow that starts without recovery state while earlier versions exist (read
        back from the global-models topic): the next version is ``model.version + 1``, moved
        from ``model``'s weights.
        """
        if model.version > self.version:
            self.version = model.version
            self.parameters = model.parameters
            self.normal = model.normal

    def _count_scores(self, samples: int, reached: list[int]) -> None:
        if self.threshold_totals is None:
            self.threshold_totals = (samples, list(reached))
            return
        total, counts = self.threshold_totals
        self.threshold_totals = (total + samples, [a + b for a, b in zip(counts, reached, strict=True)])

    def threshold(self) -> float:
        """The threshold the next version carries."""
        if self.target_false_alarm_rate > 0 and self.threshold_totals is not None and self.threshold_totals[0]:
            return threshold_for_rate(*self.threshold_totals, self.target_false_alarm_rate)
        return self.score_threshold

    def _due(self, now: float) -> bool:
        if self.every_updates and self.pending_updates >= self.every_updates:
            return True
        return bool(self.every_seconds) and now - (self.last_version_time or now) >= self.every_seconds

    def aggregate(self, timestamp: float) -> GlobalModel | None:
        """Average what is pending into the next version (``None`` when nothing is)."""
        contributions = [c for c in self.contributions.values() if c.samples > 0]
        if not contributions:
            return None
        current = self.parameters
        names = sorted({name for c in contributions for name in c.weights} | current.weights.keys())
        samples = [c.samples for c in contributions]
        vectors = [[*(c.weights.get(name, 0.0) for name in names), c.intercept] for c in contributions]
        weights, capped = self._capped(samples)
        vectors, clipped = self._clipped(vectors)
        if self.rules.dp_noise_multiplier > 0:
            *mean_change, intercept_change = self._private_mean(vectors)
        else:
            *mean_change, intercept_change = self._combine(vectors, weights)
        self.parameters = ModelParameters(
            {name: current.weights.get(name, 0.0) + change for name, change in zip(names, mean_change, strict=True)},
            current.intercept + intercept_change,
        )
        labelled = sum(c.labelled for c in contributions)
        accuracy = sum(c.correct for c in contributions) / labelled if labelled else None
        self.normal = self._next_normal()
        self.version += 1
        model = GlobalModel(
            version=self.version,
            parameters=self.parameters,
            accuracy=accuracy,
            num_devices=len(contributions),
            num_updates=self.pending_updates,
            samples=sum(samples),
            timestamp=timestamp,
            normal=self.normal,
            threshold=self.threshold(),
            capped_devices=capped,
            clipped_devices=clipped,
            dp_epsilon=self._spent_epsilon(),
        )
        self.contributions.clear()
        self.pending_normal.clear()
        self.pending_device_normal.clear()
        self.pending_updates = 0
        self.last_version_time = timestamp
        return model

    def _combine(self, vectors: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
        if self.rules.rule == "trimmed_mean":
            return trimmed_mean(vectors, [1] * len(vectors), self.rules.trim_fraction)
        if self.rules.rule == "median":
            return coordinate_median(vectors, [1] * len(vectors))
        return fedavg(vectors, weights)

    def _capped(self, samples: Sequence[int]) -> tuple[list[float], int]:
        """Each device's weight, at most ``cap_multiple`` × the median samples; how many were cut."""
        if not self.rules.cap_multiple:
            return list(samples), 0
        cap = self.rules.cap_multiple * median(samples)
        return [min(n, cap) for n in samples], sum(n > cap for n in samples)

    def _clipped(self, vectors: list[list[float]]) -> tuple[list[list[float]], int]:
        """Each change scaled down to the clipping bound (when there is one); how many were."""
        norms = [math.sqrt(sum(x * x for x in vector)) for vector in vectors]
        for norm in norms:
            self.recent_norms.add(norm)
        bound = self.rules.clip_norm or self.rules.clip_multiple * self.recent_norms.median()
        if bound <= 0:
            return vectors, 0
        found = [
            vector if norm <= bound else [x * (bound / norm) for x in vector]
            for vector, norm in zip(vectors, norms, strict=True)
        ]
        return found, sum(norm > bound for norm in norms)

    def _private_mean(self, vectors: list[list[float]]) -> list[float]:
        """DP-FedAvg: the unweighted mean of the clipped changes, plus Gaussian noise seeded by the version."""
        import dp_accounting  # only with DP: it takes a second to import
        from dp_accounting import rdp

        n = len(vectors)
        mean = fedavg(vectors, [1] * n)
        generator = np.random.default_rng(self.version + 1)
        noise = generator.normal(0.0, self.rules.dp_noise_multiplier * self.rules.clip_norm / n, len(mean))
        if self.privacy_accountant is None:
            self.privacy_accountant = rdp.RdpAccountant()
        self.privacy_accountant.compose(dp_accounting.GaussianDpEvent(self.rules.dp_noise_multiplier))
        return [float(x) for x in np.asarray(mean) + noise]

    def _spent_epsilon(self) -> float | None:
        if self.privacy_accountant is None:
            return None
        return float(self.privacy_accountant.get_epsilon(self.rules.dp_delta))

    def _next_normal(self) -> NormalModel:
        """The normal model moved by this version's devices, each one's weight capped, combined by the rule."""
        if not self.rules.cap_multiple and self.rules.rule == "fedavg":
            return next_normal_model(self.normal, self.pending_normal)
        devices = list(self.pending_device_normal.values())
        if not devices:
            return next_normal_model(self.normal, [])
        weights, _ = self._capped([device.samples for device in devices])
        vectors = [[value for m in device.evidence for value in (m.mean, m.second)] for device in devices]
        combined = self._combine(vectors, weights)
        total = max(1, round(sum(weights)))
        moments = tuple(Moments(total, combined[2 * i], combined[2 * i + 1]) for i in range(len(devices[0].evidence)))
        return next_normal_model(self.normal, [NormalModel(moments)])
