"""Edge clients' local updates: the message, and every reason one is refused before FedAvg."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from dataflows.replay_files import read_replay
from operators.device import DetectionSettings
from operators.features import FEATURE_NAMES
from operators.fedavg import LocalUpdate
from operators.local_model import ModelParameters
from operators.messages import REJECTION_REASONS, MessageLimits, Rejection, Telemetry
from operators.shard import ShardState
from operators.update_validation import (
    UPDATE_REASONS,
    BaseVersionCheck,
    UpdateLimits,
    change_norm,
    decode_update,
    edge_update_message,
)

SERIES = Path(__file__).resolve().parents[2] / "data" / "nab" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
LIMITS = UpdateLimits()


def update(weights: dict[str, float] | None = None, intercept: float = 0.0, **changes) -> LocalUpdate:
    fields = {
        "device_id": "pump-1",
        "model_version": 1,
        "global_version": 0,
        "parameters": ModelParameters(dict.fromkeys(FEATURE_NAMES, 0.0) if weights is None else weights, intercept),
        "base": ModelParameters(),
        "samples": 50,
        "labelled": 0,
        "accuracy": None,
        "loss": None,
        "timestamp": 1.7e9,
    }
    return LocalUpdate(**{**fields, **changes})


def row(**changes) -> dict:
    return {**orjson.loads(edge_update_message(update())), **changes}


def reason(message: dict | bytes) -> str:
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    decoded = decode_update(raw, "kafka:updates:0:7", LIMITS)
    assert type(decoded) is Rejection, decoded
    assert decoded.source == "kafka:updates:0:7"
    return decoded.reason


def test_a_real_devices_update_comes_back_as_it_was_sent():
    state = ShardState(DetectionSettings(round_seconds=0), False)
    readings = [r for r in read_replay(SERIES, MessageLimits()) if type(r) is Telemetry][:400]
    updates = state.process(readings).updates
    assert len(updates) == 8 and updates[-1].parameters.weights  # trained on the series' labels
    for sent in updates:
        assert decode_update(edge_update_message(sent), "test", LIMITS) == sent


def test_the_dataflows_own_updates_are_not_edge_updates():
    own = update().as_row()
    assert decode_update(orjson.dumps(own), "test", LIMITS) is None
    assert decode_update(orjson.dumps({**own, "origin": "dataflow"}), "test", LIMITS) is None
    assert decode_update(json.dumps({**own, "intercept": float("nan")}).encode(), "test", LIMITS) is None


def test_an_untrained_model_without_weights_is_valid():
    decoded = decode_update(edge_update_message(update(weights={})), "test", LIMITS)
    assert type(decoded) is LocalUpdate and decoded.parameters.weights == {}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"", "empty_message"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b"x" * 70_000, "oversized_message"),
        ({"origin": "edge", "device_id": "pump-1"}, "missing_field"),
        (row(device_id="pump 1; drop table"), "invalid_device_id"),
        (row(samples_processed=0), "invalid_update"),
        (row(samples_processed="50"), "invalid_update"),
        (row(labelled=51), "invalid_update"),
        (row(global_version=-1), "invalid_update"),
        (row(accuracy=1.5), "invalid_update"),
        (row(weights=[0.1] * 6), "invalid_update"),
        (row(base=None), "invalid_update"),
        (row(created_at="yesterday"), "invalid_update"),
        (row(normal_model={"forecast": [1, 0.0, 0.0]}), "invalid_update"),
        (row(threshold_counts={"samples": 5, "reached": [1, 2]}), "invalid_update"),
        (row(weights={**dict.fromkeys(FEATURE_NAMES, 0.0), "temperature_z": 0.1}), "wrong_features"),
        (row(weights=dict.fromkeys(FEATURE_NAMES[:5], 0.0)), "wrong_features"),
        (row(base={"weights": {"abs_z": 0.0}, "intercept": 0.0}), "wrong_features"),
        (row(weights=dict.fromkeys(FEATURE_NAMES, True)), "invalid_update"),
        (json.dumps(row(intercept=float("nan"))).encode(), "non_finite_value"),
        (json.dumps(row(base={"weights": {}, "intercept": float("-inf")})).encode(), "non_finite_value"),
        (orjson.dumps(row()).replace(b'"intercept":0.0', b'"intercept":1e400', 1), "non_finite_value"),
        (row(weights=dict.fromkeys(FEATURE_NAMES, 1e200)), "update_norm"),  # its square would overflow
        (row(intercept=1e308, base={"weights": {}, "intercept": -1e308}), "non_finite_value"),  # the change does
    ],
)
def test_a_bad_update_is_refused_with_its_reason(message, expected):
    assert reason(message) == expected


def test_every_reason_is_a_known_dead_letter_reason():
    assert set(UPDATE_REASONS) <= set(REJECTION_REASONS)


def test_the_norm_bound_is_on_the_change_from_the_base():
    """Weights moved by 3 in one coordinate and the intercept by 4: a change of norm 5,
    whatever the weights were."""
    base = ModelParameters(dict.fromkeys(FEATURE_NAMES, 100.0), 7.0)
    moved = ModelParameters({**base.weights, "abs_z": 103.0}, 11.0)
    sent = update(base=base, parameters=moved)
    assert change_norm(sent) == 5.0
    assert type(decode_update(edge_update_message(sent), "t", UpdateLimits(max_norm=5.0))) is LocalUpdate
    refused = decode_update(edge_update_message(sent), "t", UpdateLimits(max_norm=4.99))
    assert (refused.reason, refused.detail) == ("update_norm", "the change's L2 norm is 5 > 4.99")


def test_an_update_scaled_by_100_passes_the_bound_only_if_it_was_tiny():
    honest = update(weights=dict.fromkeys(FEATURE_NAMES, 0.5), intercept=-0.5)  # change norm √(7·0.25) ≈ 1.32
    assert type(decode_update(edge_update_message(honest), "t", LIMITS)) is LocalUpdate
    scaled = update(weights=dict.fromkeys(FEATURE_NAMES, 50.0), intercept=-50.0)
    assert reason(edge_update_message(scaled)) == "update_norm"


def test_an_update_from_a_version_not_made_yet_waits_for_it_then_is_refused():
    check = BaseVersionCheck(newest=3, wait_seconds=30.0)
    old, current, ahead = (update(global_version=v) for v in (0, 3, 5))
    assert check.offer(old, b"{}", "s:1", now=0.0) == [old]  # however old: FedAvg weighs it down
    assert check.offer(current, b"{}", "s:2", now=0.0) == [current]
    assert check.offer(ahead, b"{}", "s:3", now=0.0) == []
    assert check.adopt(4) == [] and check.expire(now=29.9) == []
    assert check.adopt(5) == [ahead]
    assert check.offer(update(global_version=9), b'{"x": 1}', "s:4", now=10.0) == []
    assert check.adopt(2) == []  # an older copy of a version changes nothing
    (late,) = check.expire(now=40.0)
    assert (late.reason, late.source, late.raw) == ("unknown_base_version", "s:4", '{"x": 1}')
    assert late.detail == "base global_version 9 > 5, the newest the federation has made"
    check.offer(update(global_version=8), b"{}", "s:5", now=50.0)
    assert [r.reason for r in check.finish(now=51.0)] == ["unknown_base_version"] and not check.waiting
