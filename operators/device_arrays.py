"""The devices of a shard as arrays: a step scores one reading of each of many devices at once.

:class:`operators.device.DeviceState` defines what the device stage does with one reading of
one device. :class:`DeviceArrays` keeps the same state for every device of a shard as rows
of numpy arrays (the per-field part in :class:`operators.field_arrays.FieldArrays`) and
:meth:`DeviceArrays.observe` runs ``DeviceState.observe`` for a set of distinct devices in
one pass of array operations: the same arithmetic in the same order, so the scores,
decisions, local updates and models are the per-reading code's (tests hold them to it, and
the logistic step to River's ``LogisticRegression``). A device's own readings go through
one step each, in their order; what is per reading and not arithmetic (the detections a
shard emits, the updates of closed rounds) is built in Python only for the readings that
need it.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators import likelihood
from operators.device import (
    EVIDENCE_WARMUP,
    LEVEL_CAP,
    MODEL_THRESHOLD,
    SPREAD_CAP,
    Detection,
    DetectionSettings,
    DeviceState,
    _explanation,
)
from operators.features import FEATURE_CAP, FEATURE_NAMES
from operators.fedavg import GlobalModel, LocalUpdate
from operators.field_arrays import FieldArrays
from operators.forecast import FieldForecaster
from operators.likelihood import RECENT, log_tail_many, rarest_many, score_many
from operators.local_model import LOGIT_CAP, PROBABILITY_FLOOR, ModelParameters
from operators.messages import Telemetry
from operators.normal_model import EVIDENCE, Moments, NormalModel
from operators.report_sampling import ReportPoint
from operators.rolling_stats import RollingStats
from operators.row_arrays import Column, RowArrays
from operators.threshold import GRID, critical_threshold, release_threshold

SEVERITIES = (None, "warning", "critical")
"""The severities of :attr:`Step.severity`'s codes 0, 1 and 2."""
_GRID = np.array(GRID)
_CLIP_GRADIENT = 1e12
"""River's ``LogisticRegression`` default ``clip_gradient``."""
_FEATURES = len(FEATURE_NAMES)
_KINDS = len(EVIDENCE)


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """:func:`operators.local_model.sigmoid` of each logit."""
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -LOGIT_CAP, LOGIT_CAP)))


def log_loss(probability: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`operators.local_model.log_loss` of each probability and its label."""
    p = np.minimum(1.0 - PROBABILITY_FLOOR, np.maximum(PROBABILITY_FLOOR, probability))
    return -np.log(np.where(target == 1, p, 1.0 - p))


def learn(
    weights: np.ndarray,
    intercept: np.ndarray,
    features: np.ndarray,
    target: np.ndarray,
    logit: np.ndarray,
    rate: float,
    positive_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`operators.local_model.LocalModel.learn` on labels for each row: River's
    ``LogisticRegression.learn_one`` (log loss, plain SGD, a constant rate, no regularisation)
    with the logit just computed. Returns the new weights and intercepts."""
    sign = np.where(target == 1, 1.0, -1.0)
    margin = logit * sign
    with np.errstate(over="ignore"):
        gradient = np.where(
            margin > 18.0,
            np.exp(-margin) * -sign,
            np.where(margin < -18.0, -sign, -sign / (np.exp(margin) + 1.0)),
        )
    gradient = np.where(target == 1, gradient * positive_weight, gradient)
    gradient = np.clip(gradient, -_CLIP_GRADIENT, _CLIP_GRADIENT)
    return weights - (features * gradient[:, None]) * rate, intercept - rate * gradient


def _parameters_vector(parameters: ModelParameters) -> np.ndarray:
    """The weights of :data:`FEATURE_NAMES`, in that order (0 for one a model lacks; a weight
    of another name would multiply no feature)."""
    return np.array([parameters.weights.get(name, 0.0) for name in FEATURE_NAMES])


def _logit(intercept: Any, weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``ModelParameters.logit``: the intercept plus each weighted feature, in the features' order."""
    total = intercept
    for j in range(_FEATURES):
        total = total + weights[..., j] * features[:, j]
    return total


@dataclass(slots=True)
class Step:
    """What :meth:`DeviceArrays.observe` decided about one reading of each of ``len(readings)`` devices."""

    readings: list[Telemetry]
    timestamps: np.ndarray
    labels: np.ndarray
    """-1 where a reading has no label."""
    score: np.ndarray
    is_anomaly: np.ndarray
    alert: np.ndarray
    severity: np.ndarray
    """Codes into :data:`SEVERITIES`: 0 none, 1 warning, 2 critical."""
    top_z: np.ndarray
    top_field: np.ndarray
    threshold: float
    model_score: np.ndarray
    global_score: np.ndarray
    """NaN where the reading has no global score."""
    global_version: int
    reading_index: np.ndarray
    evidence_z: np.ndarray
    evidence_field: np.ndarray
    evidence_value: np.ndarray
    updates: list[tuple[int, LocalUpdate]]
    """The local updates of the rounds these readings closed, with the reading's index here."""

    def report_points(self, chosen: list[int]) -> list[ReportPoint]:
        """The :class:`ReportPoint` of each reading of ``chosen``, built without a :class:`Detection`."""
        if not chosen:
            return []
        index = np.array(chosen)
        columns = zip(
            chosen,
            self.reading_index[index].tolist(),
            self.score[index].tolist(),
            self.is_anomaly[index].tolist(),
            self.severity[index].tolist(),
            self.top_field[index].tolist(),
            self.alert[index].tolist(),
            strict=True,
        )
        points = []
        for i, reading_index, score, is_anomaly, severity, top_field, alert in columns:
            reading = self.readings[i]
            severity_name, field = (
                (SEVERITIES[severity] or "warning", list(reading.values)[top_field]) if is_anomaly else (None, "")
            )
            points.append(
                ReportPoint(
                    reading.device_id,
                    reading_index,
                    reading.timestamp,
                    reading.values,
                    score,
                    severity_name,
                    field,
                    alert,
                )
            )
        return points

    def detections(self, chosen: list[int]) -> list[Detection]:
        """The :class:`Detection` of each reading of ``chosen`` (indexes into this step)."""
        if not chosen:
            return []
        index = np.array(chosen)
        columns = zip(
            chosen,
            self.top_z[index].tolist(),
            self.top_field[index].tolist(),
            self.severity[index].tolist(),
            self.score[index].tolist(),
            self.is_anomaly[index].tolist(),
            self.alert[index].tolist(),
            self.model_score[index].tolist(),
            self.global_score[index].tolist(),
            self.reading_index[index].tolist(),
            strict=True,
        )
        found = []
        for (
            i,
            top_z,
            top_field,
            severity,
            score,
            is_anomaly,
            alert,
            model_score,
            global_score,
            reading_index,
        ) in columns:
            reading = self.readings[i]
            names = list(reading.values)
            explanation = []
            if is_anomaly:
                fields = tuple(names[k] if k >= 0 else "" for k in self.evidence_field[i].tolist())
                explanation = _explanation(
                    tuple(self.evidence_z[i].tolist()), fields, tuple(self.evidence_value[i].tolist())
                )
            found.append(
                Detection(
                    reading,
                    top_z,
                    names[top_field],
                    SEVERITIES[severity],
                    score,
                    is_anomaly,
                    alert,
                    self.threshold,
                    model_score,
                    None if global_score != global_score else global_score,
                    self.global_version,
                    explanation,
                    reading_index,
                )
            )
        return found


class DeviceArrays(RowArrays):
    """Every device of a shard: a row of per-device arrays each, and a slot of
    :class:`FieldArrays` per field.

    Parameters
    ----------
    settings
        The device stage's settings, as ``DeviceState`` takes them.
    """

    def __init__(self, settings: DetectionSettings, capacity: int = 64) -> None:
        self.settings = settings
        self.fields = FieldArrays(settings.window, settings.short_window)
        thresholds = len(GRID) if settings.target_false_alarm_rate > 0 else 0
        f64, i64 = np.float64, np.int64
        self.columns = {
            "since_anomaly": Column((), i64, settings.alert_gap),
            "incident_open": Column((), np.bool_, False),
            "readings": Column((), i64, 0),
            "weights": Column((_FEATURES,), f64, 0.0),
            "trained": Column((), np.bool_, False),
            "intercept": Column((), f64, 0.0),
            "base_weights": Column((_FEATURES,), f64, 0.0),
            "base_trained": Column((), np.bool_, False),
            "base_intercept": Column((), f64, 0.0),
            "model_version": Column((), i64, 0),
            "base_global_version": Column((), i64, 0),
            "round_rows": Column((), i64, 0),
            "round_start": Column((), f64, 0.0),
            "round_last": Column((), f64, 0.0),
            "round_labelled": Column((), i64, 0),
            "round_correct": Column((), i64, 0),
            "round_loss": Column((), f64, 0.0),
            "moment_samples": Column((), i64, 0),
            "moment_sums": Column((_KINDS,), f64, 0.0),
            "moment_squares": Column((_KINDS,), f64, 0.0),
            "threshold_samples": Column((), i64, 0),
            "threshold_reached": Column((thresholds,), i64, 0),
            "last_seen": Column((), f64, 0.0),
            "recent": Column((_KINDS, RECENT), f64, 0.0),
            "recent_position": Column((), i64, 0),
            "recent_sum": Column((_KINDS,), f64, 0.0),
            "history_count": Column((), i64, 0),
            "history_mean": Column((_KINDS,), f64, 0.0),
            "history_variance": Column((_KINDS,), f64, 0.0),
        }
        self.ids: list[str | None] = []
        self.slots: list[dict[str, int]] = []
        """Each device's fields and their slots in :attr:`fields`."""
        self.round_base: list[ModelParameters | None] = []
        """The parameters each device's round started from, when held as an object (a global
        model's, which the devices share); ``None`` when the ``base_*`` arrays hold them, as
        after a round of the device's own: a dict of weights per device would cost more than
        the rest of its row."""
        self.pending_labels: list[deque[tuple[int, np.ndarray, int]] | None] = []
        super().__init__(capacity)

    def add(self, device_id: str) -> int:
        """A new device's row."""
        row = self.new_row()
        if row == len(self.ids):
            self.ids.append(device_id)
            self.slots.append({})
            self.round_base.append(None)
            self.pending_labels.append(None)
        else:
            self.ids[row] = device_id
        return row

    def remove(self, rows: list[int]) -> None:
        """Forget devices (their rounds closed already): their rows and slots are free again."""
        self.fields.release([slot for row in rows for slot in self.slots[row].values()])
        for row in rows:
            self.ids[row] = None
            self.slots[row] = {}
            self.round_base[row] = None
            self.pending_labels[row] = None
        self.release(rows)

    def observe(self, readings: list[Telemetry], rows: np.ndarray, global_model: GlobalModel | None) -> Step:
        """``DeviceState.observe`` for one reading of each device of ``rows`` (distinct rows)."""
        settings = self.settings
        fields = self.fields
        n = len(readings)
        everyone = np.arange(n)
        timestamps = np.fromiter((r.timestamp for r in readings), np.float64, n)
        labels = np.fromiter((-1 if r.label is None else r.label for r in readings), np.int64, n)

        starting = self.round_rows[rows] == 0
        if starting.any():
            self._start_rounds(rows[starting], timestamps[starting], global_model)

        # Each reading's fields, one after the other: their slots, values and counts.
        slot_list: list[int | None] = []
        value_list: list[float] = []
        count_list: list[int] = []
        slots = self.slots
        row_list = rows.tolist()
        for reading, row in zip(readings, row_list, strict=True):
            reading_values = reading.values
            slot_list.extend(map(slots[row].get, reading_values))
            value_list.extend(reading_values.values())
            count_list.append(len(reading_values))
        if None in slot_list:  # a device's first reading of a field: its slot now
            slot_list = self._field_slots(readings, row_list)
        counts = np.array(count_list, np.int64)
        width = max(count_list)
        present = np.arange(width) < counts[:, None]
        flat_slots = np.array(slot_list, np.int64)
        values = np.array(value_list, np.float64)
        owner = np.repeat(everyone, counts)

        # The fields' windows and forecasters (DeviceState.observe's loop over the fields).
        warmed = fields.count[flat_slots] >= settings.warmup
        z, previous_z = fields.push(flat_slots, values)
        error = fields.forecast(flat_slots, timestamps[owner], values)
        z = np.where(warmed, z, 0.0)
        fields.last_z[flat_slots] = z
        gap, short_std, long_std = fields.short_vs_long(flat_slots)
        has_long = long_std > 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(has_long, gap / long_std, 0.0)
            log_ratio = np.log(short_std / long_std)
        ratio = np.where(short_std > 0.0, log_ratio, -SPREAD_CAP)
        ratio = np.clip(ratio, -SPREAD_CAP, SPREAD_CAP)
        evidence_fields = warmed & has_long

        def by_device(flat: np.ndarray, padding: float) -> np.ndarray:
            matrix = np.full((n, width), padding)
            matrix[present] = flat
            return matrix

        def largest(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Each device's largest positive value and its field (-1 where none is positive)."""
            matrix = by_device(flat, 0.0)
            index = matrix.argmax(axis=1)
            value = matrix[everyone, index]
            return value, np.where(value > 0.0, index, -1)

        forecast, forecast_field = largest(np.where(warmed, np.abs(error), 0.0))
        forecast_error = by_device(error, 0.0)[everyone, np.maximum(forecast_field, 0)]
        spread, spread_field = largest(np.where(evidence_fields, np.abs(ratio), 0.0))
        spread_ratio = by_device(ratio, 0.0)[everyone, np.maximum(spread_field, 0)]
        level, level_field = largest(np.where(evidence_fields, shift, 0.0))
        level = np.minimum(level, LEVEL_CAP)
        z_matrix = by_device(z, 0.0)
        top_field = np.where(present, np.abs(z_matrix), -1.0).argmax(axis=1)
        top_z = z_matrix[everyone, top_field]

        # Field relations, on devices with several fields all past their warm-up.
        relation = np.zeros(n)
        relation_field = np.full(n, -1)
        if width > 1:
            related = (counts > 1) & by_device(warmed, True).all(axis=1)
            if related.any():
                with np.errstate(divide="ignore", invalid="ignore"):
                    smoothed = np.where(
                        long_std > 0.0, (fields.level[flat_slots, 0] - fields.mean(flat_slots)) / long_std, 0.0
                    )
                chosen = np.flatnonzero(related)
                relation[chosen], relation_field[chosen] = fields.relate(
                    by_device(flat_slots, -1)[chosen].astype(np.int64), by_device(smoothed, 0.0)[chosen], counts[chosen]
                )

        # The calibrated score: each kind of evidence through its anomaly likelihood.
        raw = np.stack((forecast, spread, level, relation), axis=1)
        evidence_z, averages = self._likelihoods(rows, raw, global_model)
        warm = self.readings[rows] >= EVIDENCE_WARMUP
        if warm.any():
            moment_rows = rows[warm]
            self.moment_samples[moment_rows] += 1
            self.moment_sums[moment_rows] += averages[warm]
            self.moment_squares[moment_rows] += averages[warm] * averages[warm]
        kinds = len(EVIDENCE)
        score = score_many(rarest_many(log_tail_many(evidence_z.max(axis=1)), kinds))
        if settings.target_false_alarm_rate > 0:
            self.threshold_samples[rows] += 1
            self.threshold_reached[rows] += score[:, None] >= _GRID

        threshold = settings.score_threshold
        if settings.target_false_alarm_rate > 0 and global_model is not None and global_model.threshold is not None:
            threshold = global_model.threshold
        if settings.detector == "calibrated":
            is_anomaly = (score >= threshold) | (self.incident_open[rows] & (score >= release_threshold(threshold)))
            self.incident_open[rows] = is_anomaly
            severity = np.where(is_anomaly, np.where(score >= critical_threshold(threshold), 2, 1), 0)
        else:
            abs_top = np.abs(top_z)
            severity = np.where(abs_top >= settings.z_critical, 2, np.where(abs_top >= settings.z_warning, 1, 0))
            is_anomaly = severity > 0
        since = self.since_anomaly[rows]
        alert = is_anomaly & (since >= settings.alert_gap)
        self.since_anomaly[rows] = np.where(is_anomaly, 0, since + 1)

        # The logistic models, learned from labels only.
        global_parameters = global_model.parameters if global_model is not None else None
        uses_models = (labels >= 0) | self.trained[rows]
        if global_parameters is not None and global_parameters.weights:
            uses_models[:] = True
        model_score = np.full(n, 0.5)
        global_score = np.full(n, math.nan)
        if uses_models.any():
            features = self._features(
                by_device,
                z,
                z - previous_z,
                shift,
                log_ratio,
                short_std,
                long_std,
                fields.count[flat_slots] > 1,
                counts,
            )
            logit = _logit(0.0, self.weights[rows], features) + self.intercept[rows]
            model_score = np.where(uses_models, sigmoid(logit), 0.5)
            if global_parameters is not None:
                global_logit = _logit(global_parameters.intercept, _parameters_vector(global_parameters), features)
                global_score = np.where(uses_models, sigmoid(global_logit), math.nan)

        self.round_rows[rows] += 1
        self.round_last[rows] = np.maximum(self.round_last[rows], timestamps)
        self.readings[rows] += 1
        if uses_models.any():
            labelled = uses_models & (labels >= 0)
            if settings.label_delay == 0:
                if labelled.any():
                    self._learn(rows[labelled], features[labelled], labels[labelled], logit[labelled])
            else:
                self._hold_labels(rows[labelled], features[labelled], labels[labelled])
        if settings.label_delay:
            self._learn_arrived(rows)

        due = self.round_rows[rows] >= settings.round_rows
        if settings.round_seconds > 0:
            due |= timestamps - self.round_start[rows] >= settings.round_seconds
        updates = list(zip(np.flatnonzero(due).tolist(), self.close_rounds(rows[due]), strict=True))
        return Step(
            readings,
            timestamps,
            labels,
            score,
            is_anomaly,
            alert,
            severity,
            top_z,
            top_field,
            threshold,
            model_score,
            global_score,
            global_model.version if global_model is not None else 0,
            self.readings[rows],
            evidence_z,
            np.stack((forecast_field, spread_field, level_field, relation_field), axis=1),
            np.stack((forecast_error, spread_ratio, level, relation), axis=1),
            updates,
        )

    def _field_slots(self, readings: list[Telemetry], rows: list[int]) -> list[int]:
        """Each reading's fields' slots, one after the other, a slot made for each new field."""
        return [self._slot(row, name) for reading, row in zip(readings, rows, strict=True) for name in reading.values]

    def _slot(self, row: int, name: str) -> int:
        """The slot of field ``name`` of the device in ``row``, made if the field is new."""
        slots = self.slots[row]
        slot = slots.get(name)
        if slot is None:
            slot = slots[name] = self.fields.new_row()
        return slot

    def _start_rounds(self, rows: np.ndarray, timestamps: np.ndarray, global_model: GlobalModel | None) -> None:
        """``DeviceState._start_round``: a device whose model is older than the newest global
        model starts from it."""
        self.round_start[rows] = timestamps
        if global_model is None:
            return
        older = rows[self.base_global_version[rows] < global_model.version]
        if not len(older):
            return
        parameters = global_model.parameters
        self.weights[older] = _parameters_vector(parameters)
        self.trained[older] = bool(parameters.weights)
        self.intercept[older] = parameters.intercept
        self.base_global_version[older] = global_model.version
        for row in older.tolist():
            self.round_base[row] = parameters

    def _likelihoods(
        self, rows: np.ndarray, raw: np.ndarray, global_model: GlobalModel | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``AnomalyLikelihood.update`` of each device's four kinds of evidence: their z-scores
        and recent means."""
        n = len(rows)
        position = self.recent_position[rows]
        recent = self.recent[rows]
        recent_sum = self.recent_sum[rows] + (raw - recent[np.arange(n), :, position])
        recent[np.arange(n), :, position] = raw
        self.recent[rows] = recent
        self.recent_sum[rows] = recent_sum
        self.recent_position[rows] = (position + 1) % RECENT
        count = self.history_count[rows]
        average = recent_sum / np.where(count < RECENT, count + 1, RECENT)[:, None]
        own = np.minimum(count, likelihood.HISTORY)[:, None]
        stored_mean, stored_variance = self.history_mean[rows], self.history_variance[rows]
        mean, variance, weight = stored_mean, stored_variance, own.astype(np.float64)

        prior_weight = self.settings.prior_weight
        priors = global_model.normal.evidence if global_model is not None else ()
        with_prior = np.array([prior_weight > 0.0 and bool(p.samples) for p in priors] or [False] * _KINDS)
        if with_prior.any():
            prior_mean = np.array([p.mean for p in priors])
            prior_second = np.array([p.second for p in priors])
            faded = prior_weight * (1.0 - own / likelihood.PRIOR_FADE)
            with np.errstate(divide="ignore", invalid="ignore"):  # (rows past the fade are not used)
                share = own / (own + faded)
            second = share * (variance + mean * mean) + (1.0 - share) * prior_second
            mixed_mean = share * mean + (1.0 - share) * prior_mean
            mixed = (own < likelihood.PRIOR_FADE) & with_prior
            mean = np.where(mixed, mixed_mean, mean)
            variance = np.where(mixed, second - mixed_mean * mixed_mean, variance)
            weight = np.where(mixed, own + faded, weight)
        spread = np.sqrt(np.where(variance > 0.0, variance, 0.0))
        spread = np.where(spread > likelihood.SPREAD_FLOOR, spread, likelihood.SPREAD_FLOOR)
        z = np.where(weight >= likelihood.WARMUP, (average - mean) / spread, 0.0)

        count = count + 1
        self.history_count[rows] = count
        rate = (1.0 / np.minimum(count, likelihood.HISTORY))[:, None]
        deviation = average - stored_mean
        self.history_mean[rows] = stored_mean + rate * deviation
        self.history_variance[rows] = (1.0 - rate) * (stored_variance + rate * deviation * deviation)
        return z, average

    @staticmethod
    def _features(
        by_device: Any,
        z: np.ndarray,
        z_change: np.ndarray,
        shift: np.ndarray,
        log_ratio: np.ndarray,
        short_std: np.ndarray,
        long_std: np.ndarray,
        moved_before: np.ndarray,
        counts: np.ndarray,
    ) -> np.ndarray:
        """:func:`operators.features.reading_features` of each reading, in :data:`FEATURE_NAMES` order,
        from each field's level shift and log spread ratio as the evidence computed them."""
        ratio = np.where((long_std > 0.0) & (short_std > 0.0), log_ratio, -FEATURE_CAP)
        abs_z = by_device(np.abs(z), 0.0)
        spread_ratio = np.maximum(by_device(ratio, -FEATURE_CAP).max(axis=1), -FEATURE_CAP)
        features = np.stack(
            (
                abs_z.max(axis=1),
                abs_z.sum(axis=1) / counts,
                by_device(np.abs(z_change), 0.0).max(axis=1),
                by_device(shift, 0.0).max(axis=1),
                spread_ratio,
                by_device((short_std == 0.0) & moved_before, False).any(axis=1).astype(np.float64),
            ),
            axis=1,
        )
        features[:, :5] = np.clip(features[:, :5], -FEATURE_CAP, FEATURE_CAP)
        features[:, 4] = np.where(spread_ratio > -FEATURE_CAP, features[:, 4], 0.0)
        return features

    def _learn(
        self, rows: np.ndarray, features: np.ndarray, labels: np.ndarray, logit: np.ndarray | None = None
    ) -> None:
        """``DeviceState._learn``: the round's accuracy and loss on each label, then the model's step."""
        if logit is None:
            logit = _logit(0.0, self.weights[rows], features) + self.intercept[rows]
        probability = sigmoid(logit)
        self.round_labelled[rows] += 1
        self.round_correct[rows] += (probability > MODEL_THRESHOLD) == (labels == 1)
        self.round_loss[rows] += log_loss(probability, labels)
        settings = self.settings
        self.weights[rows], self.intercept[rows] = learn(
            self.weights[rows],
            self.intercept[rows],
            features,
            labels,
            logit,
            settings.learning_rate,
            settings.positive_weight,
        )
        self.trained[rows] = True

    def _hold_labels(self, rows: np.ndarray, features: np.ndarray, labels: np.ndarray) -> None:
        """Labels that arrive ``label_delay`` readings late wait with their features."""
        delay = self.settings.label_delay
        for row, row_features, label in zip(rows.tolist(), features, labels.tolist(), strict=True):
            pending = self.pending_labels[row]
            if pending is None:
                pending = self.pending_labels[row] = deque()
            pending.append((int(self.readings[row]) + delay, row_features, label))

    def _learn_arrived(self, rows: np.ndarray) -> None:
        for row in rows.tolist():
            pending = self.pending_labels[row]
            while pending and pending[0][0] <= self.readings[row]:
                _, features, label = pending.popleft()
                self._learn(np.array([row]), features[None, :], np.array([label]))

    def device(self, row: int) -> DeviceState:
        """The device of ``row`` as a :class:`DeviceState`, holding exactly its state."""
        settings, fields = self.settings, self.fields
        device = DeviceState(self.ids[row], settings)
        for name, slot in self.slots[row].items():
            window = RollingStats(settings.window, settings.short_window)
            window._ring = array("d", fields.ring[slot].tobytes())
            window._pos, window.count, window._pushes = (
                int(fields.pos[slot]),
                int(fields.count[slot]),
                int(fields.pushes[slot]),
            )
            window._shift, window._sum, window._sumsq = (
                float(fields.shift[slot]),
                float(fields.sum[slot]),
                float(fields.sumsq[slot]),
            )
            window._short_sum, window._short_sumsq = float(fields.short_sum[slot]), float(fields.short_sumsq[slot])
            window.last_z = float(fields.last_z[slot])
            device.windows[name] = window
            forecaster = device.forecasters[name] = FieldForecaster()
            forecaster.__setstate__(
                (
                    fields.level[slot].tolist(),
                    fields.spread[slot].tolist(),
                    fields.forecasts[slot].tolist(),
                    array("f", fields.day[slot].tobytes()),
                    array("f", fields.week[slot].tobytes()),
                )
            )
            if fields.relation[slot, 0]:
                device.relations._state[name] = fields.relation[slot].tolist()
        position, count = int(self.recent_position[row]), int(self.history_count[row])
        for k, likelihood_ in enumerate(device.likelihoods):
            likelihood_.__setstate__(
                (
                    array("d", self.recent[row, k].tobytes()),
                    position,
                    float(self.recent_sum[row, k]),
                    count,
                    float(self.history_mean[row, k]),
                    float(self.history_variance[row, k]),
                )
            )
        device.since_anomaly = int(self.since_anomaly[row])
        device.incident_open = bool(self.incident_open[row])
        device.readings = int(self.readings[row])
        if self.trained[row]:
            device.model.load(ModelParameters(dict(zip(FEATURE_NAMES, self.weights[row].tolist(), strict=True))))
        device.model.intercept = float(self.intercept[row])
        pending = self.pending_labels[row]
        if pending is not None:
            device.pending_labels = deque(
                (arrive, dict(zip(FEATURE_NAMES, features.tolist(), strict=True)), label)
                for arrive, features, label in pending
            )
        device.model_version = int(self.model_version[row])
        device.base_global_version = int(self.base_global_version[row])
        device.round_base = self._round_base(row)
        device.round_rows = int(self.round_rows[row])
        device.round_start = float(self.round_start[row])
        device.round_last = float(self.round_last[row])
        device.round_labelled = int(self.round_labelled[row])
        device.round_correct = int(self.round_correct[row])
        device.round_loss = float(self.round_loss[row])
        moments = device.round_moments
        moments.samples = int(self.moment_samples[row])
        moments.sums, moments.squares = self.moment_sums[row].tolist(), self.moment_squares[row].tolist()
        if device.round_thresholds is not None:
            device.round_thresholds.samples = int(self.threshold_samples[row])
            device.round_thresholds.reached = self.threshold_reached[row].tolist()
        device.last_seen = float(self.last_seen[row])
        return device

    def store(self, row: int, device: DeviceState) -> None:
        """Put the state of ``device`` (made by :meth:`device` from ``row``) back into the row."""
        fields = self.fields
        for name, window in device.windows.items():
            slot = self._slot(row, name)
            fields.ring[slot] = np.frombuffer(window._ring, np.float64)
            fields.pos[slot], fields.count[slot], fields.pushes[slot] = window._pos, window.count, window._pushes
            fields.shift[slot], fields.sum[slot], fields.sumsq[slot] = window._shift, window._sum, window._sumsq
            fields.short_sum[slot], fields.short_sumsq[slot] = window._short_sum, window._short_sumsq
            fields.last_z[slot] = window.last_z
            level, spread, counts, day, week = device.forecasters[name].__getstate__()
            fields.level[slot], fields.spread[slot], fields.forecasts[slot] = level, spread, counts
            fields.day[slot] = np.frombuffer(day, np.float32)
            fields.week[slot] = np.frombuffer(week, np.float32)
            relation = device.relations._state.get(name)
            if relation is not None:
                fields.relation[slot] = relation
        for k, likelihood_ in enumerate(device.likelihoods):
            recent, position, recent_sum, count, mean, variance = likelihood_.__getstate__()
            self.recent[row, k] = np.frombuffer(recent, np.float64)
            self.recent_sum[row, k], self.history_mean[row, k], self.history_variance[row, k] = (
                recent_sum,
                mean,
                variance,
            )
            self.recent_position[row], self.history_count[row] = position, count
        self.since_anomaly[row] = device.since_anomaly
        self.incident_open[row] = device.incident_open
        self.readings[row] = device.readings
        parameters = device.model.parameters
        self.trained[row] = bool(parameters.weights)
        self.weights[row] = _parameters_vector(parameters)
        self.intercept[row] = parameters.intercept
        if device.pending_labels is not None:
            self.pending_labels[row] = deque(
                (arrive, np.array([features[name] for name in FEATURE_NAMES]), label)
                for arrive, features, label in device.pending_labels
            )
        self.model_version[row] = device.model_version
        self.base_global_version[row] = device.base_global_version
        self.round_base[row] = device.round_base
        self.round_rows[row] = device.round_rows
        self.round_start[row] = device.round_start
        self.round_last[row] = device.round_last
        self.round_labelled[row] = device.round_labelled
        self.round_correct[row] = device.round_correct
        self.round_loss[row] = device.round_loss
        moments = device.round_moments
        self.moment_samples[row] = moments.samples
        self.moment_sums[row], self.moment_squares[row] = moments.sums, moments.squares
        if device.round_thresholds is not None:
            self.threshold_samples[row] = device.round_thresholds.samples
            self.threshold_reached[row] = device.round_thresholds.reached
        self.last_seen[row] = device.last_seen

    def _round_base(self, row: int) -> ModelParameters:
        shared = self.round_base[row]
        if shared is not None:
            return shared
        rows = [row]
        return next(_parameters(self.base_trained[rows], self.base_weights[rows], self.base_intercept[rows]))

    def close_rounds(self, rows: np.ndarray) -> list[LocalUpdate]:
        """``DeviceState.close_round`` for distinct ``rows`` that each have readings in their round.

        The columns are read for all the rows at once and each update is built from Python
        numbers: rounds close every few readings, and reading a device's numbers one numpy
        scalar at a time cost more than the rest of its update.
        """
        if not len(rows):
            return []
        self.model_version[rows] += 1
        thresholds: Iterable[tuple[int, list[int]] | None] = [None] * len(rows)
        if self.settings.target_false_alarm_rate > 0:
            thresholds = zip(self.threshold_samples[rows].tolist(), self.threshold_reached[rows].tolist(), strict=True)
            self.threshold_samples[rows] = 0
            self.threshold_reached[rows] = 0
        columns = zip(
            rows.tolist(),
            self.model_version[rows].tolist(),
            self.base_global_version[rows].tolist(),
            _parameters(self.trained[rows], self.weights[rows], self.intercept[rows]),
            _parameters(self.base_trained[rows], self.base_weights[rows], self.base_intercept[rows]),
            self.round_rows[rows].tolist(),
            self.round_labelled[rows].tolist(),
            self.round_correct[rows].tolist(),
            self.round_loss[rows].tolist(),
            self.round_last[rows].tolist(),
            map(
                _normal_model,
                self.moment_samples[rows].tolist(),
                self.moment_sums[rows].tolist(),
                self.moment_squares[rows].tolist(),
            ),
            thresholds,
            strict=True,
        )
        updates = []
        for row, version, base_version, model, base, samples, labelled, correct, loss, last, normal, counts in columns:
            shared_base = self.round_base[row]
            self.round_base[row] = None
            updates.append(
                LocalUpdate(
                    device_id=self.ids[row],
                    model_version=version,
                    global_version=base_version,
                    parameters=model,
                    base=base if shared_base is None else shared_base,
                    samples=samples,
                    labelled=labelled,
                    accuracy=correct / labelled if labelled else None,
                    loss=loss / labelled if labelled else None,
                    timestamp=last,
                    normal=normal,
                    threshold_counts=counts,
                )
            )
        self.base_weights[rows] = self.weights[rows]
        self.base_trained[rows] = self.trained[rows]
        self.base_intercept[rows] = self.intercept[rows]
        self.round_rows[rows] = 0
        self.round_labelled[rows] = 0
        self.round_correct[rows] = 0
        self.round_loss[rows] = 0.0
        self.moment_samples[rows] = 0
        self.moment_sums[rows] = 0.0
        self.moment_squares[rows] = 0.0
        return updates


def _parameters(trained: np.ndarray, weights: np.ndarray, intercepts: np.ndarray) -> Iterator[ModelParameters]:
    """Each row's :class:`ModelParameters`: no weights until its model has learned."""
    for is_trained, row_weights, intercept in zip(trained.tolist(), weights.tolist(), intercepts.tolist(), strict=True):
        yield ModelParameters(dict(zip(FEATURE_NAMES, row_weights, strict=True)) if is_trained else {}, intercept)


def _normal_model(samples: int, sums: list[float], squares: list[float]) -> NormalModel:
    """A round's evidence moments from their sums (the empty model before any warm reading)."""
    if not samples:
        return NormalModel()
    return NormalModel(tuple(Moments(samples, s / samples, q / samples) for s, q in zip(sums, squares, strict=True)))
