"""A hostile edge client, measured: how far its updates move the final global model.

    python -m bench.edge_attacks

The fleet is the bundled NAB data (labels visible, rounds of 50 readings so that the logistic
models learn), replayed through the dataflow's device stage (``operators/shard.py``) and
FedAvg (``operators/fedavg.py``, plain FedAvg, every 20 updates) with each version fed back
to the devices. One series, ``art_daily_jumpsup``, is an edge client: its updates travel as
the edge client's messages and pass the dataflow's checks (``operators/update_validation.py``)
before FedAvg. Every one of its updates is then attacked: weights and intercept scaled by
100, a weight set to NaN, or a seventh weight (the wrong dimension). Each attack is run twice:
through the checks, and straight into FedAvg as it would go without them. The number is the
relative L2 distance of the final global weights and intercept from the clean run's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import orjson

from dataflows.replay_files import read_replay
from operators.device import DetectionSettings
from operators.fedavg import FedAvgAggregator, GlobalModel, LocalUpdate
from operators.local_model import ModelParameters
from operators.messages import MessageLimits, Telemetry
from operators.shard import ShardState
from operators.update_validation import UpdateLimits, decode_update, edge_update_message

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "nab"
EDGE_DEVICE = "artificialWithAnomaly/art_daily_jumpsup"


def scaled(row: dict) -> bytes:
    return orjson.dumps(
        {**row, "weights": {k: 100 * w for k, w in row["weights"].items()}, "intercept": 100 * row["intercept"]}
    )


def with_nan(row: dict) -> bytes:
    if not row["weights"]:
        return json.dumps({**row, "intercept": math.nan}).encode()
    return json.dumps({**row, "weights": {**row["weights"], "abs_z": math.nan}}).encode()


def wider(row: dict) -> bytes:
    return orjson.dumps({**row, "weights": {**row["weights"], "temperature_z": 1.0}})


ATTACKS: dict[str, Callable[[dict], bytes]] = {"scaled ×100": scaled, "NaN": with_nan, "wrong dimension": wider}


def unchecked(raw: bytes) -> LocalUpdate:
    """An edge message taken as it is, as FedAvg would take it without the checks."""
    row = json.loads(raw)

    def numbers(weights: dict) -> dict[str, float]:  # a model already NaN is sent as null (JSON has no NaN)
        return {name: math.nan if w is None else w for name, w in weights.items()}

    row["weights"], row["base"]["weights"] = numbers(row["weights"]), numbers(row["base"]["weights"])
    row["intercept"] = math.nan if row["intercept"] is None else row["intercept"]
    row["base"]["intercept"] = math.nan if row["base"]["intercept"] is None else row["base"]["intercept"]
    return LocalUpdate(
        device_id=row["device_id"],
        model_version=row["model_version"],
        global_version=row["global_version"],
        parameters=ModelParameters(row["weights"], row["intercept"]),
        base=ModelParameters(row["base"]["weights"], row["base"]["intercept"]),
        samples=row["samples_processed"],
        labelled=row["labelled"],
        accuracy=row["accuracy"],
        loss=row["loss"],
        timestamp=0.0,
    )


def federate(attack: Callable[[dict], bytes] | None, checked: bool, with_edge: bool = True) -> tuple[GlobalModel, int]:
    """The final global model of a replay, and how many edge updates were refused."""
    state = ShardState(DetectionSettings(round_seconds=0), False)
    federation = FedAvgAggregator(20)
    limits = UpdateLimits()
    refused = 0
    newest: GlobalModel | None = None
    batch: list[Telemetry] = []

    def step(readings: list[Telemetry], closing: bool = False) -> None:
        nonlocal refused, newest
        updates = state.finish().updates if closing else state.process(readings).updates
        models = []
        for update in updates:
            if update.device_id == EDGE_DEVICE:
                if not with_edge:
                    continue
                raw = edge_update_message(update)
                if attack is not None:
                    raw = attack(orjson.loads(raw))
                decoded = decode_update(raw, "bench", limits) if checked else unchecked(raw)
                if type(decoded) is not LocalUpdate:
                    refused += 1
                    continue
                update = decoded
            if (model := federation.add(update)) is not None:
                models.append(model)
        if models:
            newest = models[-1]
            state.process([newest])

    for record in read_replay(BUNDLED, MessageLimits()):
        if type(record) is Telemetry:
            batch.append(record)
            if len(batch) == 1000:
                step(batch)
                batch = []
    step(batch)
    step([], closing=True)
    assert newest is not None
    return newest, refused


def vector(model: GlobalModel, names: list[str]) -> list[float]:
    return [*(model.parameters.weights.get(name, 0.0) for name in names), model.parameters.intercept]


def relative_distance(model: GlobalModel, clean: GlobalModel) -> float:
    names = sorted(model.parameters.weights.keys() | clean.parameters.weights.keys())
    a, b = vector(model, names), vector(clean, names)
    return math.dist(a, b) / math.hypot(*b)


def main() -> None:
    clean, refused = federate(None, checked=True)
    assert refused == 0, f"{refused} honest edge updates were refused"
    without, _ = federate(None, checked=True, with_edge=False)
    norm = math.hypot(*vector(clean, sorted(clean.parameters.weights)))
    print(f"clean: global version {clean.version}, |w| = {norm:.4f}")
    print(f"without the edge client: relative L2 distance {relative_distance(without, clean):.4f}")
    print(
        "| edge client's updates | checked: refused | checked: distance from clean "
        "(from the run without the edge client) | unchecked: distance from clean |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name, attack in ATTACKS.items():
        checked, refused = federate(attack, checked=True)
        raw, _ = federate(attack, checked=False)
        print(
            f"| {name} | {refused} | {relative_distance(checked, clean):.4f} "
            f"({relative_distance(checked, without):.4f}) | {relative_distance(raw, clean):.4g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
