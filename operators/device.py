"""One device's state: per-field windows and forecasts, the calibrated score, the local model and its rounds."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from operators.correlation import FieldRelations
from operators.features import reading_features
from operators.fedavg import GlobalModel, LocalUpdate
from operators.forecast import LEVEL_WARMUP, FieldForecaster
from operators.likelihood import RECENT, AnomalyLikelihood, log_tail, rarest, score_of
from operators.local_model import LocalModel, ModelParameters, log_loss, sigmoid
from operators.messages import Telemetry, iso_timestamp
from operators.normal_model import EVIDENCE, RoundMoments
from operators.rolling_stats import RollingStats
from operators.threshold import ThresholdCounts, critical_threshold, release_threshold

DETECTORS = ("calibrated", "z_rule")
"""What ``is_anomaly`` follows: the calibrated score at or above the threshold (default), or
the reference design's rule, |z| at or above the warning level."""

MODEL_THRESHOLD = 0.5
"""The logistic models (learned from labels) flag a reading whose probability is above this."""

SPREAD_CAP = 10.0
LEVEL_CAP = 50.0

EVIDENCE_WARMUP = LEVEL_WARMUP + RECENT
"""Readings before a device's evidence means what it will mean later (the level forecaster is
ready and the recent window full): only later ones count into the fleet's normal model."""


@dataclass(frozen=True)
class DetectionSettings:
    """The knobs of the device stage (see the table of ``FLEAD_*`` settings in docs/operations.md)."""

    window: int = 100
    short_window: int = 10
    warmup: int = 10
    z_warning: float = 2.5
    z_critical: float = 3.0
    round_rows: int = 50
    round_seconds: float = 60.0
    learning_rate: float = 0.05
    positive_weight: float = 5.0
    detector: str = "calibrated"
    score_threshold: float = 0.5
    """A reading whose calibrated score is at or above this is an anomaly (``1 − Q^(1/10)``:
    0.5 is a tail probability of about 1 in 1,000)."""
    target_false_alarm_rate: float = 0.0
    """When above 0, FedAvg sets the threshold from the fleet's scores so that about this share
    of readings is flagged, and every device takes it with the global model."""
    alert_gap: int = 100
    """Readings without an anomaly after which the device's next anomaly is a new incident's
    alert; anomalies closer together belong to the same incident."""
    label_delay: int = 0
    """Readings between a reading and the arrival of its label (operator feedback is late)."""
    prior_weight: float = 300.0
    """How many readings of history the fleet's normal model counts for in a device's
    calibration (0: every device calibrates on its own readings alone)."""

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")

    def severity(self, abs_z: float) -> str | None:
        """The z-rule's severity of a reading."""
        if abs_z >= self.z_critical:
            return "critical"
        if abs_z >= self.z_warning:
            return "warning"
        return None


@dataclass(slots=True)
class Detection:
    """Everything the device stage decided about one reading."""

    reading: Telemetry
    z_score: float
    field: str
    severity: str | None
    score: float
    """The calibrated, label-free anomaly score in [0, 1]."""
    is_anomaly: bool
    alert: bool
    """The first anomaly of an incident: flagged, and no anomaly in the last ``alert_gap`` readings."""
    threshold: float
    """The score threshold in force for this reading."""
    model_score: float
    """The device's logistic model's probability (learned from labels only)."""
    global_score: float | None
    global_version: int
    explanation: list[dict[str, Any]]
    reading_index: int
    """This reading's place in its device's stream, from 1."""

    def anomaly_row(self) -> dict[str, Any]:
        return {
            "device_id": self.reading.device_id,
            "timestamp": iso_timestamp(self.reading.timestamp),
            "values": self.reading.values,
            "field": self.field,
            "z_score": round(self.z_score, 4),
            "severity": self.severity,
            "score": round(self.score, 6),
            "global_version": self.global_version,
            "explanation": self.explanation,
        }

    def score_row(self) -> dict[str, Any]:
        return {
            "device_id": self.reading.device_id,
            "timestamp": iso_timestamp(self.reading.timestamp),
            "score": round(self.score, 6),
            "is_anomaly": self.is_anomaly,
            "alert": self.alert,
            "threshold": round(self.threshold, 6),
            "label": self.reading.label,
            "severity": self.severity,
            "z_score": round(self.z_score, 4),
            "model_score": round(self.model_score, 6),
            "global_score": None if self.global_score is None else round(self.global_score, 6),
            "global_version": self.global_version,
        }


class DeviceState:
    """One device: per field a rolling window and a forecaster, the calibration of its evidence,
    its logistic model, and the round in progress.

    Every reading gets a label-free score. Each field's forecast error, change of spread,
    change of level and (with several fields) departure from the other fields are the
    *evidence* (see :data:`operators.normal_model.EVIDENCE`); the largest of each kind goes
    through its own anomaly likelihood, calibrated against the device's history and, while
    that is short, the fleet's normal model; the rarest of the four (Šidák-corrected) is the
    score. A reading at the threshold opens an incident, which stays open while the score
    stays above the release level; its first anomaly after ``alert_gap`` quiet readings is an
    alert. A round starts from
    the newest global model, collects the moments of the evidence for the fleet's normal
    model and, when labels arrive (``label_delay`` readings late), trains the logistic
    model on them; it closes after ``round_rows`` readings or ``round_seconds`` of event time
    with a :class:`LocalUpdate`.
    """

    __slots__ = (
        "base_global_version",
        "device_id",
        "forecasters",
        "incident_open",
        "last_seen",
        "likelihoods",
        "model",
        "model_version",
        "pending_labels",
        "readings",
        "relations",
        "round_base",
        "round_correct",
        "round_labelled",
        "round_last",
        "round_loss",
        "round_moments",
        "round_rows",
        "round_start",
        "round_thresholds",
        "since_anomaly",
        "windows",
    )

    def __init__(self, device_id: str, settings: DetectionSettings) -> None:
        self.device_id = device_id
        self.windows: dict[str, RollingStats] = {}
        self.forecasters: dict[str, FieldForecaster] = {}
        self.likelihoods = tuple(AnomalyLikelihood() for _ in EVIDENCE)
        self.relations = FieldRelations()
        self.since_anomaly = settings.alert_gap
        self.incident_open = False
        self.model = LocalModel(settings.learning_rate, settings.positive_weight)
        self.readings = 0
        self.pending_labels: deque[tuple[int, dict[str, float], int]] | None = None
        """Labels not yet arrived: (the reading count at which each arrives, features, label);
        made with the first delayed label (an empty deque is 600 bytes, and most devices never
        have a label)."""
        self.model_version = 0
        self.base_global_version = 0
        self.round_base = ModelParameters()  # what River's new model holds: no weights, intercept 0
        self.round_rows = 0
        self.round_start = 0.0
        self.round_last = 0.0
        self.round_labelled = 0
        self.round_correct = 0
        self.round_loss = 0.0
        self.round_moments = RoundMoments()
        self.round_thresholds = ThresholdCounts() if settings.target_false_alarm_rate > 0 else None
        self.last_seen = 0.0  # wall time of the latest reading, to close the round of a silent device

    def observe(
        self, reading: Telemetry, settings: DetectionSettings, global_model: GlobalModel | None
    ) -> tuple[Detection, LocalUpdate | None]:
        """Score one reading, learn from it, and close the round when it is due."""
        if self.round_rows == 0:
            self._start_round(reading.timestamp, global_model)
        timestamp = reading.timestamp
        warmup = settings.warmup
        z_scores, z_changes, windows = [], [], []
        top_field, top_z = "", 0.0
        forecast, forecast_field, forecast_error = 0.0, "", 0.0
        spread, spread_field, spread_ratio = 0.0, "", 0.0
        level, level_field = 0.0, ""
        many = len(reading.values) > 1
        smoothed: list[float] = []
        for name, value in reading.values.items():
            window = self.windows.get(name)
            if window is None:
                window = self.windows[name] = RollingStats(settings.window, settings.short_window)
                forecaster = self.forecasters[name] = FieldForecaster()
            else:
                forecaster = self.forecasters[name]
            previous_z = window.last_z
            field_warmed_up = window.count >= warmup
            z = window.push(value)
            error = forecaster.push(timestamp, value)
            if not field_warmed_up:
                z = window.last_z = 0.0
            else:
                if abs(error) > forecast:
                    forecast, forecast_field, forecast_error = abs(error), name, error
                gap, short_std, long_std = window.short_vs_long()
                if long_std > 0.0:
                    shift = gap / long_std
                    if shift > level:
                        level, level_field = shift, name
                    if short_std > 0.0:
                        ratio = math.log(short_std / long_std)
                        ratio = SPREAD_CAP if ratio > SPREAD_CAP else -SPREAD_CAP if ratio < -SPREAD_CAP else ratio
                    else:
                        ratio = -SPREAD_CAP
                    if (ratio if ratio >= 0.0 else -ratio) > spread:
                        spread, spread_field, spread_ratio = abs(ratio), name, ratio
            z_scores.append(z)
            if field_warmed_up and many:
                std = window.std
                smoothed.append((forecaster.level - window.mean) / std if std > 0.0 else 0.0)
            z_changes.append(z - previous_z)
            windows.append(window)
            if abs(z) > abs(top_z) or not top_field:
                top_field, top_z = name, z

        # The calibrated score: each kind of evidence against its own history (and the fleet's).
        if level > LEVEL_CAP:
            level = LEVEL_CAP
        priors = global_model.normal.evidence if global_model is not None else _NO_PRIORS
        prior_weight = settings.prior_weight
        if many and len(smoothed) == len(z_scores):  # every field past its warm-up
            names = list(reading.values)
            relation, relation_index = self.relations.update(names, smoothed)
            relation_field = names[relation_index] if relation_index >= 0 else ""
        else:
            relation, relation_field = 0.0, ""
        forecast_likelihood, spread_likelihood, level_likelihood, relation_likelihood = self.likelihoods
        forecast_z, forecast_mean = forecast_likelihood.update(forecast, priors[0], prior_weight)
        spread_z, spread_mean = spread_likelihood.update(spread, priors[1], prior_weight)
        level_z, level_mean = level_likelihood.update(level, priors[2], prior_weight)
        relation_z, relation_mean = relation_likelihood.update(relation, priors[3], prior_weight)
        if self.readings >= EVIDENCE_WARMUP:
            self.round_moments.add((forecast_mean, spread_mean, level_mean, relation_mean))
        # The rarest evidence is the one furthest above its history: one tail to compute.
        rarest_z = forecast_z if forecast_z > spread_z else spread_z
        if level_z > rarest_z:
            rarest_z = level_z
        if relation_z > rarest_z:
            rarest_z = relation_z
        log_q = rarest(log_tail(rarest_z), len(EVIDENCE))
        score = score_of(log_q)
        if self.round_thresholds is not None:
            self.round_thresholds.add(score)

        threshold = settings.score_threshold
        if settings.target_false_alarm_rate > 0 and global_model is not None and global_model.threshold is not None:
            threshold = global_model.threshold
        if settings.detector == "calibrated":
            # An incident opens at the threshold and stays open while the score stays above the
            # release level: a long anomaly is flagged for as long as it lasts, not only at its onset.
            is_anomaly = score >= threshold or (self.incident_open and score >= release_threshold(threshold))
            self.incident_open = is_anomaly
            severity = ("critical" if score >= critical_threshold(threshold) else "warning") if is_anomaly else None
        else:
            severity = settings.severity(abs(top_z))
            is_anomaly = severity is not None
        alert = is_anomaly and self.since_anomaly >= settings.alert_gap
        self.since_anomaly = 0 if is_anomaly else self.since_anomaly + 1

        # The logistic models learn from labels only; until a device or the fleet has learned
        # something, their scores say nothing, and the features are not built.
        global_parameters = global_model.parameters if global_model is not None else None
        uses_models = (
            reading.label is not None
            or self.model.trained
            or (global_parameters is not None and bool(global_parameters.weights))
        )
        if uses_models:
            features = reading_features(z_scores, z_changes, windows)
            logit = self.model.logit(features)
            model_score = sigmoid(logit)
            global_score = global_parameters.probability(features) if global_parameters is not None else None
        else:
            features, logit, model_score, global_score = None, 0.0, 0.5, None
        explanation = (
            _explanation(
                (forecast_z, spread_z, level_z, relation_z),
                (forecast_field, spread_field, level_field, relation_field),
                (forecast_error, spread_ratio, level, relation),
            )
            if is_anomaly
            else []
        )
        detection = Detection(
            reading,
            top_z,
            top_field,
            severity,
            score,
            is_anomaly,
            alert,
            threshold,
            model_score,
            global_score,
            global_model.version if global_model is not None else 0,
            explanation,
            self.readings + 1,
        )

        self.round_rows += 1
        if timestamp > self.round_last:  # the newest: an old reading arriving late leaves the device as recent
            self.round_last = timestamp
        self.readings += 1
        label = reading.label
        if features is not None and label is not None:
            if settings.label_delay == 0:
                # The model is unchanged since it scored the reading: the step reuses the logit.
                self._learn(features, label, logit)
            else:
                if self.pending_labels is None:
                    self.pending_labels = deque()
                self.pending_labels.append((self.readings + settings.label_delay, features, label))
        pending = self.pending_labels
        while pending and pending[0][0] <= self.readings:
            _, learned_features, label = pending.popleft()
            self._learn(learned_features, label)

        due = self.round_rows >= settings.round_rows or (
            settings.round_seconds > 0 and timestamp - self.round_start >= settings.round_seconds
        )
        return detection, self.close_round() if due else None

    def _learn(self, features: dict[str, float], label: int, logit: float | None = None) -> None:
        """The logistic model's prequential step on one label that has arrived."""
        if logit is None:
            logit = self.model.logit(features)
        probability = sigmoid(logit)
        self.round_labelled += 1
        self.round_correct += int((probability > MODEL_THRESHOLD) == bool(label))
        self.round_loss += log_loss(probability, label)
        self.model.learn(features, label, True, logit)

    def _start_round(self, timestamp: float, global_model: GlobalModel | None) -> None:
        if global_model is not None and global_model.version > self.base_global_version:
            self.model.load(global_model.parameters)
            self.base_global_version = global_model.version
            self.round_base = global_model.parameters
        self.round_start = timestamp

    def close_round(self) -> LocalUpdate | None:
        """End the round in progress (``None`` if it has no readings yet)."""
        if self.round_rows == 0:
            return None
        self.model_version += 1
        parameters = self.model.parameters
        labelled = self.round_labelled
        thresholds = self.round_thresholds
        update = LocalUpdate(
            device_id=self.device_id,
            model_version=self.model_version,
            global_version=self.base_global_version,
            parameters=parameters,
            base=self.round_base,
            samples=self.round_rows,
            labelled=labelled,
            accuracy=self.round_correct / labelled if labelled else None,
            loss=self.round_loss / labelled if labelled else None,
            timestamp=self.round_last,
            normal=self.round_moments.model(),
            threshold_counts=None if thresholds is None else (thresholds.samples, thresholds.reached),
        )
        self.round_base = parameters  # the next round goes on from here, unless a new global model comes first
        self.round_rows = 0
        self.round_labelled = 0
        self.round_correct = 0
        self.round_loss = 0.0
        self.round_moments = RoundMoments()
        if thresholds is not None:
            self.round_thresholds = ThresholdCounts()
        return update


_NO_PRIORS = (None,) * len(EVIDENCE)
_LN10 = math.log(10.0)


def _explanation(
    z_scores: tuple[float, ...], fields: tuple[str, ...], values: tuple[float, ...]
) -> list[dict[str, Any]]:
    """What moved: each kind of evidence, its field and value, and the log10 of its tail probability, rarest first."""
    found = [
        {"evidence": name, "field": field, "value": round(value, 4), "log10_tail": round(log_tail(z) / _LN10, 2)}
        for name, z, field, value in zip(EVIDENCE, z_scores, fields, values, strict=True)
        if field
    ]
    found.sort(key=lambda item: item["log10_tail"])
    return found
