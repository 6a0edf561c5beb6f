"""Federated averaging: the arithmetic, and the rule for when a new global model is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from operators.aggregation import fedavg
from operators.local_model import ModelParameters
from operators.messages import iso_timestamp, parse_timestamp
from operators.normal_model import NormalModel, next_normal_model
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
        *mean_change, intercept_change = fedavg(vectors, samples)
        self.parameters = ModelParameters(
            {name: current.weights.get(name, 0.0) + change for name, change in zip(names, mean_change, strict=True)},
            current.intercept + intercept_change,
        )
        labelled = sum(c.labelled for c in contributions)
        accuracy = sum(c.correct for c in contributions) / labelled if labelled else None
        self.normal = next_normal_model(self.normal, self.pending_normal)
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
        )
        self.contributions.clear()
        self.pending_normal.clear()
        self.pending_updates = 0
        self.last_version_time = timestamp
        return model
