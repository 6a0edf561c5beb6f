"""Local updates from edge clients: their message, and the checks before FedAvg takes one.

An edge client (``dataflows/edge.py``) trains on its device and sends only its local updates
to ``FLEAD_TOPIC_LOCAL_UPDATES``, the topic where the dataflow also publishes its own
devices' updates. An edge update is the dataflow's ``local_models`` row plus two fields:
``"origin": "edge"``, which tells it from the dataflow's own (those are ignored when read
back, so that none is counted twice), and ``"base"``, the model its round started from
(FedAvg adds the change ``parameters − base``, and the norm bound is on that change).

Every edge update is checked before it reaches the aggregate; one that fails becomes a
:class:`~operators.messages.Rejection` (a dead letter) with its reason:

- ``oversized_message``, ``empty_message``, ``invalid_json``, ``not_an_object``: as telemetry;
- ``missing_field``: a field of the schema is absent;
- ``invalid_update``: a field of the wrong type or out of range (samples, counts, accuracy);
- ``invalid_device_id``: the telemetry's rule for device ids;
- ``wrong_features``: weights (or base weights) whose names are not
  :data:`operators.features.FEATURE_NAMES` (the model's dimension); a model no label has
  trained yet has no weights at all, which is valid;
- ``non_finite_value``: ``NaN``, ``Infinity`` or a number past float range anywhere;
- ``update_norm``: the L2 norm of the change (weights and intercept) above the bound;
- ``unknown_base_version``: a round that started from a global version the federation has
  not made (see :class:`BaseVersionCheck`).

>>> from operators.local_model import ModelParameters
>>> from operators.fedavg import LocalUpdate
>>> names = ("abs_z", "abs_z_mean", "z_change", "level_shift", "spread_ratio", "flat")
>>> update = LocalUpdate("pump-1", 3, 0, ModelParameters(dict.fromkeys(names, 0.3), -0.1),
...                      ModelParameters(), 50, 2, 0.5, 0.7, 1.7e9)
>>> decoded = decode_update(edge_update_message(update), "test", UpdateLimits())
>>> decoded.parameters == update.parameters, decoded.base == update.base, round(change_norm(decoded), 4)
(True, True, 0.7416)
>>> decode_update(edge_update_message(update), "test", UpdateLimits(max_norm=0.5)).reason
'update_norm'
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from operators.features import FEATURE_NAMES
from operators.fedavg import LocalUpdate
from operators.local_model import ModelParameters
from operators.messages import (
    InvalidMessage,
    MessageLimits,
    Rejection,
    _with_non_finite_numbers,
    excerpt,
    parse_timestamp,
    validate_device_id,
)
from operators.normal_model import EVIDENCE, NormalModel
from operators.threshold import GRID

UPDATE_REASONS = ("invalid_update", "unknown_base_version", "update_norm", "wrong_features")
"""The reasons only an edge update is rejected for (the others are telemetry's too)."""

EDGE_ORIGIN = "edge"
"""The ``origin`` of an edge client's update; the dataflow's own updates have none."""

REQUIRED_FIELDS = (
    "device_id",
    "model_version",
    "global_version",
    "weights",
    "intercept",
    "base",
    "samples_processed",
    "labelled",
    "created_at",
)

_FEATURES = frozenset(FEATURE_NAMES)


@dataclass(frozen=True)
class UpdateLimits:
    """What an edge update may look like. ``max_norm``: the largest L2 norm of its change
    (``FLEAD_EDGE_MAX_UPDATE_NORM``)."""

    max_norm: float = 20.0
    max_bytes: int = 65_536
    max_device_id_length: int = 128

    def __post_init__(self) -> None:
        if not self.max_norm > 0:
            raise ValueError(f"max_norm must be greater than 0, got {self.max_norm!r}")


def edge_update_message(update: LocalUpdate, row: dict[str, Any] | None = None) -> bytes:
    """An edge client's update as the JSON message it sends; ``row``: ``update.as_row()``,
    when the caller has made it already."""
    base = {"weights": update.base.weights, "intercept": update.base.intercept}
    return orjson.dumps({**(update.as_row() if row is None else row), "origin": EDGE_ORIGIN, "base": base})


def change_norm(update: LocalUpdate) -> float:
    """The L2 norm of ``parameters − base`` over the weights and the intercept (a missing weight is 0)."""
    new, old = update.parameters, update.base
    names = new.weights.keys() | old.weights.keys()
    changes = (new.weights.get(name, 0.0) - old.weights.get(name, 0.0) for name in names)
    return math.hypot(*changes, new.intercept - old.intercept)  # no overflow on the way


def decode_update(raw: bytes, source: str, limits: UpdateLimits) -> LocalUpdate | Rejection | None:
    """An edge update, a :class:`Rejection` saying why it is not a valid one, or ``None`` for
    a message that is not an edge client's (the dataflow's own updates, read back)."""
    now = time.time()

    def rejected(reason: str, detail: str = "") -> Rejection:
        return Rejection(reason, excerpt(raw), source, now, detail)

    if len(raw) > limits.max_bytes:
        return rejected("oversized_message", f"{len(raw)} bytes > {limits.max_bytes}")
    if not raw or raw.isspace():
        return rejected("empty_message")
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        row = _with_non_finite_numbers(raw)
        if row is None:
            return rejected("invalid_json", str(exc)[:200])
        if isinstance(row, dict) and row.get("origin") != EDGE_ORIGIN:
            return None
        return rejected("non_finite_value", "NaN, Infinity or a number past float range")
    if not isinstance(row, dict):
        return rejected("not_an_object", type(row).__name__)
    if row.get("origin") != EDGE_ORIGIN:
        return None
    try:
        update = _update_of(row, limits)
    except InvalidMessage as exc:
        return rejected(exc.reason, exc.detail)
    norm = change_norm(update)
    if not math.isfinite(norm):
        return rejected("non_finite_value", "the change overflows")
    if norm > limits.max_norm:
        return rejected("update_norm", f"the change's L2 norm is {norm:.4g} > {limits.max_norm:g}")
    return update


def _update_of(row: dict[str, Any], limits: UpdateLimits) -> LocalUpdate:
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise InvalidMessage("missing_field", f"no {missing[0]}")
    device_id = validate_device_id(row["device_id"], MessageLimits(max_device_id_length=limits.max_device_id_length))
    base = row["base"]
    if not isinstance(base, dict) or "weights" not in base or "intercept" not in base:
        raise InvalidMessage("invalid_update", "base must be an object with weights and intercept")
    samples = _count(row, "samples_processed", least=1)
    labelled = _count(row, "labelled")
    if labelled > samples:
        raise InvalidMessage("invalid_update", f"labelled {labelled} > samples_processed {samples}")
    accuracy = _optional_number(row, "accuracy", 0.0, 1.0)
    try:
        timestamp = parse_timestamp(row["created_at"])
    except InvalidMessage as exc:
        raise InvalidMessage("invalid_update", f"created_at: {exc.detail}") from None
    return LocalUpdate(
        device_id=device_id,
        model_version=_count(row, "model_version"),
        global_version=_count(row, "global_version"),
        parameters=_parameters(row, "weights", row["intercept"]),
        base=_parameters(base, "base weights", base["intercept"]),
        samples=samples,
        labelled=labelled,
        accuracy=accuracy,
        loss=_optional_number(row, "loss", 0.0, math.inf),
        timestamp=timestamp,
        normal=_normal_model(row.get("normal_model")),
        threshold_counts=_threshold_counts(row.get("threshold_counts")),
    )


def _count(row: dict[str, Any], name: str, least: int = 0) -> int:
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidMessage("invalid_update", f"{name} must be a whole number of at least {least}")
    return value


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage("invalid_update", f"{name} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidMessage("non_finite_value", f"{name} is {value}")
    return number


def _optional_number(row: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    number = _finite(value, name)
    if not low <= number <= high:
        raise InvalidMessage("invalid_update", f"{name} {number!r} is outside [{low:g}, {high:g}]")
    return number


def _parameters(holder: dict[str, Any], name: str, intercept: Any) -> ModelParameters:
    weights = holder["weights"]
    if not isinstance(weights, dict):
        raise InvalidMessage("invalid_update", f"{name} must be an object of feature: weight")
    if weights and weights.keys() != _FEATURES:
        unknown = sorted(weights.keys() - _FEATURES)
        missing = sorted(_FEATURES - weights.keys())
        detail = f"{len(weights)} weights, the model has {len(_FEATURES)}"
        detail += f"; unknown {unknown[:3]}" if unknown else ""
        detail += f"; missing {missing[:3]}" if missing else ""
        raise InvalidMessage("wrong_features", f"{name}: {detail}")
    values = {feature: _finite(value, f"{name}[{feature}]") for feature, value in weights.items()}
    return ModelParameters(values, _finite(intercept, f"{name.split()[0]} intercept"))


def _normal_model(row: Any) -> NormalModel:
    if row is None or row == {}:
        return NormalModel()
    if not isinstance(row, dict) or row.keys() != set(EVIDENCE):
        raise InvalidMessage("invalid_update", f"normal_model must hold the moments of {', '.join(EVIDENCE)}")
    for name in EVIDENCE:
        moments = row[name]
        if not isinstance(moments, list) or len(moments) != 3:
            raise InvalidMessage("invalid_update", f"normal_model.{name} must be [samples, mean, mean square]")
        samples, _mean, second = (_finite(x, f"normal_model.{name}") for x in moments)
        if samples < 0 or samples != int(samples) or second < 0:
            raise InvalidMessage("invalid_update", f"normal_model.{name}: negative or fractional moments")
    return NormalModel.from_row(row)


def _threshold_counts(row: Any) -> tuple[int, list[int]] | None:
    if row is None:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("reached"), list) or len(row["reached"]) != len(GRID):
        raise InvalidMessage("invalid_update", f"threshold_counts must hold samples and {len(GRID)} counts")
    samples = _count(row, "samples")
    reached = [_count({"reached": n}, "reached") for n in row["reached"]]
    if any(n > samples for n in reached):
        raise InvalidMessage("invalid_update", "threshold_counts: more reached than samples")
    return samples, reached


@dataclass
class BaseVersionCheck:
    """Holds back an edge update whose round started from a global version the federation
    has not made yet, and rejects it unless that version comes within ``wait_seconds``.

    The federation's newest version reaches this check through the global-model topic, the
    way it reaches the edge client: an update can overtake the model it started from, so an
    update that is ahead waits rather than being rejected at once. A version from the past is
    known, however old: FedAvg weighs a round that started ``τ`` versions ago by
    ``1/√(1 + τ)``, and the norm bound limits what any one update moves.

    >>> from operators.local_model import ModelParameters
    >>> check = BaseVersionCheck(newest=2, wait_seconds=30)
    >>> update = LocalUpdate("pump-1", 1, 3, ModelParameters(), ModelParameters(), 1, 0, None, None, 0.0)
    >>> check.offer(update, b"{}", "kafka:t:0:5", now=100.0)
    []
    >>> [u.global_version for u in check.adopt(3)]
    [3]
    >>> check.offer(LocalUpdate("pump-1", 2, 7, ModelParameters(), ModelParameters(), 1, 0, None, None, 0.0),
    ...             b"{}", "kafka:t:0:6", now=100.0)
    []
    >>> [r.reason for r in check.expire(now=131.0)]
    ['unknown_base_version']
    """

    newest: int = 0
    wait_seconds: float = 30.0
    waiting: list[tuple[LocalUpdate, bytes, str, float]] = field(default_factory=list)

    def offer(self, update: LocalUpdate, raw: bytes, source: str, now: float) -> list[LocalUpdate]:
        """The update if its base version is known, else nothing (it waits)."""
        if update.global_version <= self.newest:
            return [update]
        self.waiting.append((update, raw, source, now))
        return []

    def adopt(self, version: int) -> list[LocalUpdate]:
        """A global version the federation made: the waiting updates it makes known."""
        if version <= self.newest:
            return []
        self.newest = version
        known = [item[0] for item in self.waiting if item[0].global_version <= version]
        self.waiting = [item for item in self.waiting if item[0].global_version > version]
        return known

    def expire(self, now: float) -> list[Rejection]:
        """Reject the updates that waited ``wait_seconds`` for their base version."""
        late = [item for item in self.waiting if now - item[3] >= self.wait_seconds]
        self.waiting = [item for item in self.waiting if now - item[3] < self.wait_seconds]
        return [self._rejection(*item, now) for item in late]

    def finish(self, now: float) -> list[Rejection]:
        """The input has ended: every waiting update is rejected."""
        late, self.waiting = self.waiting, []
        return [self._rejection(*item, now) for item in late]

    def _rejection(self, update: LocalUpdate, raw: bytes, source: str, since: float, now: float) -> Rejection:
        detail = f"base global_version {update.global_version} > {self.newest}, the newest the federation has made"
        return Rejection("unknown_base_version", excerpt(raw), source, now, detail)
