"""What the run report shows, as plain data: the dataflow fills it, ``report.html`` draws it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class AnomalyMark:
    """One flagged reading, as the report marks it on its device's chart."""

    time: float
    """Event time, seconds since the epoch (UTC)."""
    field: str
    """The field whose evidence was rarest."""
    value: float
    """That field's reading."""
    severity: str
    """``warning`` or ``critical``."""
    score: float
    alert: bool
    """The first anomaly of an incident."""


@dataclass(slots=True)
class DeviceTrace:
    """One device's readings as the report draws them.

    ``times``, ``scores`` and each list in ``values`` are aligned: a thinned copy of the device's
    stream (every reading of a short stream, an evenly spaced subset of a long one).
    ``readings`` and ``anomalies_by_severity`` count every reading, kept or not.
    """

    device_id: str
    readings: int = 0
    anomalies_by_severity: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    """Event time, seconds since the epoch (UTC), ascending."""
    values: dict[str, list[float | None]] = field(default_factory=dict)
    """Per field; ``None`` where a reading did not carry that field."""
    scores: list[float] = field(default_factory=list)
    anomalies: list[AnomalyMark] = field(default_factory=list)
    """The anomalies the report marks (all of them unless the device had very many)."""

    @property
    def anomaly_count(self) -> int:
        return sum(self.anomalies_by_severity.values())


@dataclass(slots=True)
class ModelVersion:
    """One global model version, for the federation's timeline."""

    version: int
    created_at: float
    """Event time of the newest reading behind it, seconds since the epoch (UTC)."""
    threshold: float | None
    accuracy: float | None
    num_devices: int
    samples: int


@dataclass
class RunReport:
    """Everything ``report.html`` shows about one run."""

    summary: dict[str, Any]
    """The run's summary, as ``summary.json`` holds it (rows read/processed/rejected,
    ``rejected_by_reason``, anomalies by severity, detection quality, ...)."""
    devices: list[DeviceTrace]
    """The devices drawn, the most anomalies first."""
    models: list[ModelVersion]
    """Global versions in order."""
    evaluations: list[dict[str, Any]]
    """Live evaluation of each global version, as rows of ``model_evaluations.jsonl``:
    ``global_version``, ``n``, ``tp``, ``fp``, ``tn``, ``fn``, ``accuracy``, ``precision``,
    ``recall``, ``f1``, ``window_start``, ``window_end`` (ISO-8601)."""
    undrawn_devices: int = 0
    """Devices seen but not drawn: the report draws at most ``FLEAD_REPORT_POINTS`` / 50 devices."""
    title: str = "FLEAD run report"
