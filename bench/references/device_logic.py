"""FLEAD's per-device work without FLEAD, shared by the River loop and the PyFlink job.

Written from FLEAD's description, not imported from it, so that a reference measures what
the logic costs in plain Python and not FLEAD's own code. Per field a rolling window gives
the z-score of a reading against the window before it (0 until ``WARMUP`` readings);
scale-free features of the reading feed a River ``LogisticRegression`` per device, scored
then trained (on the label when there is one, else on the z-rule; labelled anomalies weigh
``POSITIVE_WEIGHT``); a round closes after ``ROUND_ROWS`` readings or ``ROUND_SECONDS`` of event
time with what the device learned since the round started, and every ``FEDAVG_EVERY`` updates
FedAvg moves the global model by the mean of those changes, weighted by the readings behind
them and by ``1/√(1 + staleness)`` (versions since the one the round started from).
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime
from typing import Any, NamedTuple

from river import linear_model, optim, utils

WINDOW, SHORT_WINDOW, WARMUP = 100, 10, 10
Z_WARNING, Z_CAP, FEATURE_CAP, LOGIT_CAP = 2.5, 1000.0, 10.0, 35.0
ROUND_ROWS, ROUND_SECONDS, FEDAVG_EVERY = 50, 60.0, 20
LEARNING_RATE, POSITIVE_WEIGHT, SCORE_THRESHOLD = 0.05, 5.0, 0.5


class Model(NamedTuple):
    """Weights as they travel: a local update's change (``samples`` readings behind it, learned from
    global ``version``) or a global model."""

    weights: dict[str, float]
    intercept: float
    samples: int
    version: int = 0

    def probability(self, features: dict[str, float]) -> float:
        logit = self.intercept + sum(self.weights.get(name, 0.0) * x for name, x in features.items())
        return sigmoid(logit)


def sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-LOGIT_CAP, min(LOGIT_CAP, logit))))


def clip(x: float) -> float:
    return max(-FEATURE_CAP, min(FEATURE_CAP, x))


class Window:
    """The last ``WINDOW`` readings of one field, with running sums over them and over the last ``SHORT_WINDOW``.

    Sums are of readings minus the field's first reading, which keeps ``E[x²] − E[x]²``
    accurate for fields such as pressure (~1e5 Pa with a spread of tens).
    """

    __slots__ = ("last_z", "readings", "shift", "short_sq", "short_sum", "sq", "sum")

    def __init__(self, first: float) -> None:
        self.readings: deque[float] = deque(maxlen=WINDOW)
        self.shift = first
        self.sum = self.sq = self.short_sum = self.short_sq = self.last_z = 0.0

    def push(self, reading: float) -> tuple[float, float]:
        """The z-score of ``reading`` against the window before it, and its change since the last one."""
        readings = self.readings
        n = len(readings)
        x = reading - self.shift
        z = 0.0
        if n >= WARMUP:
            mean = self.sum / n
            variance = self.sq / n - mean * mean
            deviation = x - mean
            if variance > 0.0:
                z = max(-Z_CAP, min(Z_CAP, deviation / math.sqrt(variance)))
            elif deviation != 0.0:
                z = math.copysign(Z_CAP, deviation)
        if n == WINDOW:
            leaving = readings[0]
            self.sum -= leaving
            self.sq -= leaving * leaving
        if n >= SHORT_WINDOW:
            leaving = readings[-SHORT_WINDOW]
            self.short_sum -= leaving
            self.short_sq -= leaving * leaving
        readings.append(x)
        self.sum += x
        self.sq += x * x
        self.short_sum += x
        self.short_sq += x * x
        change = z - self.last_z
        self.last_z = z
        return z, change

    def short_vs_long(self) -> tuple[float, float, float]:
        """``(|short mean − long mean|, short std, long std)`` of the window as it is now."""
        n = len(self.readings)
        m = min(n, SHORT_WINDOW)
        mean = self.sum / n
        short_mean = self.short_sum / m
        variance = self.sq / n - mean * mean
        short_variance = self.short_sq / m - short_mean * short_mean
        return (
            abs(short_mean - mean),
            math.sqrt(short_variance) if short_variance > 0.0 else 0.0,
            math.sqrt(variance) if variance > 0.0 else 0.0,
        )


def features(zs: list[float], changes: list[float], windows: list[Window]) -> dict[str, float]:
    """Scale-free features of one reading; a field-wise feature takes the most extreme field."""
    abs_zs = [abs(z) for z in zs]
    level_shift, spread_ratio, flat = 0.0, -FEATURE_CAP, 0.0
    for window in windows:
        gap, short_std, long_std = window.short_vs_long()
        if long_std > 0.0:
            level_shift = max(level_shift, gap / long_std)
            if short_std > 0.0:
                spread_ratio = max(spread_ratio, math.log(short_std / long_std))
        if short_std == 0.0 and len(window.readings) > 1:
            flat = 1.0
    return {
        "abs_z": clip(max(abs_zs)),
        "abs_z_mean": clip(sum(abs_zs) / len(abs_zs)),
        "z_change": clip(max(abs(c) for c in changes)),
        "level_shift": clip(level_shift),
        "spread_ratio": clip(spread_ratio) if spread_ratio > -FEATURE_CAP else 0.0,
        "flat": flat,
    }


class Outcome(NamedTuple):
    flagged: bool
    """By the z-rule, or by the device's model once a field is past its warm-up."""
    global_flagged: bool
    """By the newest global model the device has heard of (what FLEAD's live evaluation scores)."""
    update: Model | None
    """The device's weights, when this reading closed its round."""


class Device:
    """One device: a window per field, its River model and the round in progress."""

    __slots__ = ("base", "global_version", "model", "round_rows", "round_start", "windows")

    def __init__(self) -> None:
        self.windows: dict[str, Window] = {}
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(LEARNING_RATE), intercept_lr=LEARNING_RATE)
        self.global_version = 0
        self.base = Model({}, 0.0, 0)  # what the round started from
        self.round_rows = 0
        self.round_start = 0.0

    def observe(self, message: dict[str, Any], global_model: Model | None) -> Outcome:
        """Score one message, then learn from it."""
        timestamp = datetime.fromisoformat(message["timestamp"]).timestamp()
        if self.round_rows == 0:
            self.round_start = timestamp
            if global_model is not None and global_model.version > self.global_version:
                self.model._weights = utils.VectorDict(dict(global_model.weights))  # River keeps them read-only
                self.model.intercept = global_model.intercept
                self.global_version = global_model.version
                self.base = global_model
        data = message["data"]
        zs, changes, windows = [], [], []
        for name, reading in data.items() if isinstance(data, dict) else (("value", data),):
            window = self.windows.get(name)
            if window is None:
                window = self.windows[name] = Window(reading)
            z, change = window.push(reading)
            zs.append(z)
            changes.append(change)
            windows.append(window)
        x = features(zs, changes, windows)
        z_flag = x["abs_z"] >= Z_WARNING
        score = self.model.predict_proba_one(x)[True]
        warmed_up = any(len(window.readings) > WARMUP for window in windows)
        flagged = z_flag or (warmed_up and score > SCORE_THRESHOLD)
        global_flagged = global_model is not None and global_model.probability(x) > SCORE_THRESHOLD
        label = message.get("label")
        target = bool(label) if label is not None else z_flag
        self.model.learn_one(x, target, w=POSITIVE_WEIGHT if target and label is not None else 1.0)
        self.round_rows += 1
        update = None
        if self.round_rows >= ROUND_ROWS or timestamp - self.round_start >= ROUND_SECONDS:
            weights, base = self.model.weights, self.base.weights
            change = {name: w - base.get(name, 0.0) for name, w in weights.items()}
            update = Model(change, self.model.intercept - self.base.intercept, self.round_rows, self.global_version)
            self.base = Model(weights, self.model.intercept, 0)
            self.round_rows = 0
        return Outcome(flagged, global_flagged, update)


class FedAvg:
    """Every ``FEDAVG_EVERY`` updates, the global model moved by the devices' staleness-weighted changes."""

    def __init__(self) -> None:
        self.changes: dict[str, Model] = {}
        self.pending = 0
        self.version = 0
        self.weights: dict[str, float] = {}
        self.intercept = 0.0

    def add(self, device_id: str, update: Model) -> Model | None:
        """Take one local update (a change); the new global model when one is due."""
        factor = 1.0 / math.sqrt(1 + self.version - update.version)
        previous = self.changes.get(device_id, Model({}, 0.0, 0))
        weights = dict(previous.weights)
        for name, change in update.weights.items():
            weights[name] = weights.get(name, 0.0) + factor * change
        intercept = previous.intercept + factor * update.intercept
        self.changes[device_id] = Model(weights, intercept, previous.samples + update.samples)
        self.pending += 1
        if self.pending < FEDAVG_EVERY:
            return None
        changes = self.changes.values()
        total = sum(c.samples for c in changes)
        for name in {name for c in changes for name in c.weights}:
            mean_change = sum(c.weights.get(name, 0.0) * c.samples for c in changes) / total
            self.weights[name] = self.weights.get(name, 0.0) + mean_change
        self.intercept += sum(c.intercept * c.samples for c in changes) / total
        self.version += 1
        self.changes, self.pending = {}, 0
        return Model(dict(self.weights), self.intercept, total, self.version)
