"""FLEAD_AGGREGATION, the bounds on one device and differential privacy, through a replay."""

from __future__ import annotations

import dp_accounting
import orjson
import pytest
from bytewax.testing import run_main
from dp_accounting import rdp

from dataflows.config import ConfigError, load_settings
from dataflows.flead import build_flow
from tests.dataflow.conftest import settings_for


def read_rows(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_a_private_replay_reports_epsilon_per_version_and_the_bounds_it_applied(nab_sample, tmp_path):
    settings = settings_for(
        nab_sample, tmp_path, weight_cap="1", clip_norm="0.05", dp_noise_multiplier="1.5", dp_delta="0.00001"
    )
    run_main(build_flow(settings))
    models = read_rows(tmp_path / "federated_models.jsonl")
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert len(models) >= 3
    epsilons = [model["dp_epsilon"] for model in models]
    assert epsilons == sorted(epsilons) and epsilons[0] < epsilons[-1]
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(1.5), len(models))
    assert epsilons[-1] == pytest.approx(accountant.get_epsilon(1e-5))
    assert summary["dp_epsilon"] == epsilons[-1]
    # A cap of 1 × the median cuts every device above the median; a bound of 0.05 clips changes.
    assert summary["updates_capped"] == sum(model["capped_devices"] for model in models) > 0
    assert summary["updates_clipped"] == sum(model["clipped_devices"] for model in models) > 0


def test_the_default_run_clips_changes_and_reports_no_epsilon(nab_sample, tmp_path):
    settings = settings_for(nab_sample, tmp_path)
    assert (settings.federation.rule, settings.federation.cap_multiple, settings.federation.clip_multiple) == (
        "fedavg",
        3.0,
        1.0,
    )
    run_main(build_flow(settings))
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    models = read_rows(tmp_path / "federated_models.jsonl")
    assert summary["dp_epsilon"] is None
    assert all(row["dp_epsilon"] is None for row in models)
    # Clipped to 1 × the median norm of recent changes: the changes above it are counted.
    assert summary["updates_clipped"] == sum(model["clipped_devices"] for model in models) > 0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FLEAD_AGGREGATION": "mean"}, "FLEAD_AGGREGATION='mean'"),
        ({"FLEAD_TRIM_FRACTION": "0.5"}, "FLEAD_TRIM_FRACTION"),
        ({"FLEAD_DP_NOISE_MULTIPLIER": "1"}, "FLEAD_CLIP_NORM"),
        ({"FLEAD_DP_NOISE_MULTIPLIER": "1", "FLEAD_CLIP_NORM": "1", "FLEAD_AGGREGATION": "median"}, "fedavg"),
    ],
)
def test_wrong_federation_settings_are_named(nab_sample, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({"FLEAD_INPUT": str(nab_sample), **environ})
