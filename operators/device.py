"""One device's state: rolling windows, z-rule, local model and its training rounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from operators.features import reading_features
from operators.fedavg import GlobalModel, LocalUpdate
from operators.local_model import LocalModel, ModelParameters, log_loss, sigmoid
from operators.messages import Telemetry, iso_timestamp
from operators.rolling_stats import RollingStats


@dataclass(frozen=True)
class DetectionSettings:
    """The knobs of the device stage (see the README's table of ``FLEAD_*`` settings)."""

    window: int = 100
    short_window: int = 10
    warmup: int = 10
    z_warning: float = 2.5
    z_critical: float = 3.0
    round_rows: int = 50
    round_seconds: float = 60.0
    learning_rate: float = 0.05
    positive_weight: float = 5.0
    score_threshold: float = 0.5

    def severity(self, abs_z: float) -> str | None:
        if abs_z >= self.z_critical:
            return "critical"
        if abs_z >= self.z_warning:
            return "warning"
        return None


Z_RULE_SEVERITIES = ("warning", "critical")
MODEL_SEVERITY = "suspect"
"""The severity of a reading the model flags while its z-score stays under the warning level."""


@dataclass(slots=True)
class Detection:
    """Everything the device stage decided about one reading."""

    reading: Telemetry
    z_score: float
    field: str
    severity: str | None
    score: float
    """The device's local model's probability that the reading is anomalous."""
    is_anomaly: bool
    global_score: float | None
    global_version: int
    explanation: list[dict[str, Any]]

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
            "label": self.reading.label,
            "severity": self.severity,
            "z_score": round(self.z_score, 4),
            "global_score": None if self.global_score is None else round(self.global_score, 6),
            "global_version": self.global_version,
        }


class DeviceState:
    """Windows per telemetry field, the local model, and the round in progress.

    A round starts from the newest global model the device has received, trains the
    local model predict-then-learn (on the label when there is one, else on the
    z-rule's decision), and closes after ``round_rows`` readings or ``round_seconds``
    of event time with a :class:`LocalUpdate`.
    """

    __slots__ = (
        "base_global_version",
        "device_id",
        "last_seen",
        "model",
        "model_version",
        "round_base",
        "round_correct",
        "round_last",
        "round_loss",
        "round_rows",
        "round_start",
        "windows",
    )

    def __init__(self, device_id: str, settings: DetectionSettings) -> None:
        self.device_id = device_id
        self.windows: dict[str, RollingStats] = {}
        self.model = LocalModel(settings.learning_rate, settings.positive_weight)
        self.model_version = 0
        self.base_global_version = 0
        self.round_base = ModelParameters()  # what River's new model holds: no weights, intercept 0
        self.round_rows = 0
        self.round_start = 0.0
        self.round_last = 0.0
        self.round_correct = 0
        self.round_loss = 0.0
        self.last_seen = 0.0  # wall time of the latest reading, to close the round of a silent device

    def observe(
        self, reading: Telemetry, settings: DetectionSettings, global_model: GlobalModel | None
    ) -> tuple[Detection, LocalUpdate | None]:
        """Score one reading, learn from it, and close the round when it is due."""
        if self.round_rows == 0:
            self._start_round(reading.timestamp, global_model)
        z_scores, z_changes, windows = [], [], []
        top_field, top_z = "", 0.0
        warmed_up = False
        for name, value in reading.values.items():
            window = self.windows.get(name)
            if window is None:
                window = self.windows[name] = RollingStats(settings.window, settings.short_window)
            previous_z = window.last_z
            field_warmed_up = window.count >= settings.warmup
            warmed_up = warmed_up or field_warmed_up
            z = window.push(value)
            if not field_warmed_up:
                z = window.last_z = 0.0
            z_scores.append(z)
            z_changes.append(z - previous_z)
            windows.append(window)
            if abs(z) > abs(top_z) or not top_field:
                top_field, top_z = name, z
        features = reading_features(z_scores, z_changes, windows)
        severity = settings.severity(abs(top_z))

        # The score is the device's own model: it started this round from the newest global
        # model and has learned from this device's readings since. The global model's score
        # is what the live evaluation measures.
        logit = self.model.logit(features)
        score = sigmoid(logit)
        global_score = global_model.parameters.probability(features) if global_model is not None else None
        # Before any field has a warm window the features carry no information: no model flags.
        is_anomaly = severity is not None or (warmed_up and score > settings.score_threshold)
        if is_anomaly and severity is None:
            severity = MODEL_SEVERITY
        detection = Detection(
            reading,
            top_z,
            top_field,
            severity,
            score,
            is_anomaly,
            global_score,
            global_model.version if global_model is not None else 0,
            self.model.parameters.contributions(features) if is_anomaly else [],
        )

        labelled = reading.label is not None
        target = reading.label if labelled else int(severity in Z_RULE_SEVERITIES)
        self.round_rows += 1
        self.round_last = reading.timestamp
        self.round_correct += int((score > settings.score_threshold) == bool(target))
        self.round_loss += log_loss(score, target)
        self.model.learn(features, target, labelled, logit)

        due = self.round_rows >= settings.round_rows or (
            settings.round_seconds > 0 and reading.timestamp - self.round_start >= settings.round_seconds
        )
        return detection, self.close_round() if due else None

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
        update = LocalUpdate(
            device_id=self.device_id,
            model_version=self.model_version,
            global_version=self.base_global_version,
            parameters=parameters,
            base=self.round_base,
            samples=self.round_rows,
            accuracy=self.round_correct / self.round_rows,
            loss=self.round_loss / self.round_rows,
            timestamp=self.round_last,
        )
        self.round_base = parameters  # the next round goes on from here, unless a new global model comes first
        self.round_rows = 0
        self.round_correct = 0
        self.round_loss = 0.0
        return update
