"""The shapes of the API's answers, as its OpenAPI document shows them (``/docs``, ``/openapi.json``).

Columns are named as in the tables (``sinks/database_schema.py``) and the JSON Lines files;
times are ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """Every error: what was wrong (FastAPI's validation errors give a list of them)."""

    detail: str | list[Any]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["reachable", "unreachable"]
    newest_global_version: int | None = None
    created_at: datetime | None = Field(None, description="The newest version's event time.")
    age_seconds: float | None = Field(None, description="Seconds from that event time to now.")


class Evaluation(BaseModel):
    """A version's live evaluation: its decisions on labelled readings, and their span of event time."""

    n: int | None
    tp: int | None
    fp: int | None
    tn: int | None
    fn: int | None
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    window_start: datetime
    window_end: datetime | None


class VersionSummary(BaseModel):
    global_version: int
    aggregation_round: int | None
    created_at: datetime
    accuracy: float | None = Field(description="On the labels behind the version; null without labels.")
    num_devices: int | None
    num_updates: int | None
    samples: int | None
    threshold: float | None = Field(description="The score threshold in force with this version.")
    evaluation: Evaluation | None


class VersionPage(BaseModel):
    items: list[VersionSummary]
    next_before: int | None = Field(description="`before` for the next page; null on the last page.")


class Lineage(BaseModel):
    devices: int | None
    updates: int | None
    samples: int | None
    aggregation_round: int | None
    moved_from: int = Field(description="The version FedAvg moved into this one (0: the all-zeros start).")
    weight_change: dict[str, float] | None = Field(
        description="Each weight minus that version's; null when that version is not in the table."
    )
    intercept_change: float | None


class GlobalModel(BaseModel):
    global_version: int
    created_at: datetime
    weights: dict[str, Any] | None
    intercept: float | None
    threshold: float | None
    accuracy: float | None
    normal_model: dict[str, Any] | None = Field(description="The fleet's evidence moments: [count, mean, mean square].")
    lineage: Lineage
    evaluation: Evaluation | None


class AnomalyCounts(BaseModel):
    total: int
    by_severity: dict[str, int]


class DeviceSummary(BaseModel):
    device_id: str
    last_seen: datetime | None = Field(description="Its newest local round or anomaly, in event time.")
    rounds: int = Field(description="Local rounds (rows of local_models).")
    anomalies: AnomalyCounts


class DevicePage(BaseModel):
    items: list[DeviceSummary]
    next_after: str | None = Field(description="`after` for the next page; null on the last page.")


class LocalModel(BaseModel):
    model_version: int
    global_version: int | None
    weights: dict[str, Any] | None
    intercept: float | None
    samples_processed: int | None
    labelled: int | None
    accuracy: float | None
    loss: float | None
    normal_model: dict[str, Any] | None
    created_at: datetime


class RoundStatistics(BaseModel):
    count: int
    first_at: datetime | None
    last_at: datetime | None
    samples: int | None
    labelled: int | None
    mean_accuracy: float | None
    mean_loss: float | None


class Anomaly(BaseModel):
    device_id: str
    timestamp: datetime
    values: dict[str, Any] | None
    field: str | None
    z_score: float | None
    severity: str | None
    score: float | None
    global_version: int | None
    explanation: list[Any] | dict[str, Any] | None


class Device(DeviceSummary):
    latest_local_model: LocalModel | None
    round_statistics: RoundStatistics
    recent_anomalies: list[Anomaly] = Field(description="Its newest anomalies; `/anomalies?device_id=` has all.")


class AnomalyPage(BaseModel):
    items: list[Anomaly]
    next_after: str | None = Field(description="`after` for the next page (opaque); null on the last page.")
