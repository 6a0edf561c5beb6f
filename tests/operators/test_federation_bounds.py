"""FedAvgAggregator's rules, one device's bounds and differential privacy, by hand."""

import itertools

import dp_accounting
import pytest
from dp_accounting import rdp

from operators.fedavg import FedAvgAggregator, FederationRules, GlobalModel, LocalUpdate
from operators.local_model import ModelParameters
from operators.normal_model import EVIDENCE, Moments, NormalModel


def change(device: str, w: float, samples: int = 10, normal_mean: float = 1.0) -> LocalUpdate:
    """A round from the zero model to weight ``w`` and intercept ``w`` (a change of norm √2·|w|)."""
    normal = NormalModel((Moments(samples, normal_mean, normal_mean**2 + 1.0),) * len(EVIDENCE))
    return LocalUpdate(
        device, 1, 0, ModelParameters({"abs_z": w}, w), ModelParameters(), samples, samples, 0.5, 0.1, 0.0, normal
    )


def version(aggregator: FedAvgAggregator, attacker: float = 100.0, attacker_samples: int = 1000) -> GlobalModel:
    """Nine honest devices that learned +1, and one that sends 100 times that on 100 times the samples."""
    for i in range(9):
        aggregator.add(change(f"honest{i}", 1.0))
    model = aggregator.add(change("attacker", attacker, attacker_samples, normal_mean=50.0))
    assert model is not None
    return model


BOUNDS = {"cap_multiple": 3.0, "clip_multiple": 3.0}


def aggregator_with(**rules) -> FedAvgAggregator:
    """A version every 10 updates, combined under ``rules`` (:class:`FederationRules`' fields)."""
    return FedAvgAggregator(every_updates=10, rules=FederationRules(**rules))


def test_plain_fedavg_follows_the_crafted_update():
    model = version(FedAvgAggregator(every_updates=10))
    # (9 devices × 10 samples × 1 + 1000 × 100) / 1090
    assert model.parameters.weights["abs_z"] == pytest.approx(100_090 / 1090)
    assert (model.capped_devices, model.clipped_devices) == (0, 0)


def test_fedavg_with_the_bounds_caps_the_weight_and_clips_the_change():
    model = version(aggregator_with(**BOUNDS))
    # Cap: 3 × the median 10 samples = 30. Clip: 3 × the median norm √2 = 3√2, so the attacker's
    # change (norm 100√2) is scaled to w = 3. (90 × 1 + 30 × 3) / 120 = 1.5.
    assert model.parameters.weights["abs_z"] == pytest.approx(1.5)
    assert model.parameters.intercept == pytest.approx(1.5)
    assert (model.capped_devices, model.clipped_devices) == (1, 1)


@pytest.mark.parametrize("rule", ["trimmed_mean", "median"])
def test_the_robust_rules_ignore_the_crafted_update(rule):
    model = version(aggregator_with(rule=rule, trim_fraction=0.1, **BOUNDS))
    assert model.parameters.weights["abs_z"] == pytest.approx(1.0)
    assert model.parameters.intercept == pytest.approx(1.0)


def test_a_fixed_clipping_bound():
    model = version(aggregator_with(clip_norm=2**0.5 / 2))
    # Every change is scaled to norm √2/2 (w = 0.5); the weights are the raw samples.
    assert model.parameters.weights["abs_z"] == pytest.approx(0.5)
    assert model.clipped_devices == 10


def test_the_normal_model_caps_the_flooding_device_and_the_median_ignores_it():
    plain = version(FedAvgAggregator(every_updates=10)).normal.evidence[0]
    capped = version(aggregator_with(**BOUNDS)).normal.evidence[0]
    median = version(aggregator_with(rule="median", **BOUNDS)).normal.evidence[0]
    assert plain.mean == pytest.approx((90 * 1.0 + 1000 * 50.0) / 1090)
    assert capped.mean == pytest.approx((90 * 1.0 + 30 * 50.0) / 120)
    assert capped.samples == 120
    assert median.mean == pytest.approx(1.0)
    assert median.variance == pytest.approx(1.0)


def dp_aggregator(**settings) -> FedAvgAggregator:
    return aggregator_with(clip_norm=10.0, dp_noise_multiplier=1.0, dp_delta=1e-5, **settings)


def test_privacy_adds_noise_of_the_stated_size_and_replays_draw_the_same():
    runs = []
    for _ in range(2):
        aggregator = dp_aggregator()
        runs.append([version(aggregator, attacker=1.0, attacker_samples=10).parameters for _ in range(3)])
    first, second = runs
    assert first == second
    # Without noise every version moves by exactly +1 (all devices learned +1, none clipped);
    # the noise's std is 1 × 10 / 10 devices = 1, so no move is off by 6 of them.
    moves = [later.weights["abs_z"] - earlier.weights["abs_z"] for earlier, later in itertools.pairwise(first)]
    assert all(1e-6 < abs(move - 1.0) < 6 for move in moves)


def test_the_spent_epsilon_grows_by_version_as_dp_accounting_composes_it():
    aggregator = dp_aggregator()
    epsilons = [version(aggregator, attacker=1.0, attacker_samples=10).dp_epsilon for _ in range(3)]
    assert epsilons[0] < epsilons[1] < epsilons[2]
    for versions, epsilon in enumerate(epsilons, start=1):
        accountant = rdp.RdpAccountant()
        accountant.compose(dp_accounting.GaussianDpEvent(1.0), versions)
        assert epsilon == pytest.approx(accountant.get_epsilon(1e-5))
    assert (
        GlobalModel.from_row(aggregator_row := version(aggregator).as_row()).dp_epsilon == aggregator_row["dp_epsilon"]
    )


def test_without_privacy_no_epsilon_is_reported():
    assert version(FedAvgAggregator(every_updates=10)).dp_epsilon is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rule": "mean"}, "rule"),
        ({"trim_fraction": 0.5}, "trim_fraction"),
        ({"cap_multiple": -1.0}, "negative"),
        ({"dp_noise_multiplier": 1.0}, "clip_norm"),
        ({"dp_noise_multiplier": 1.0, "clip_norm": 1.0, "rule": "median"}, "fedavg"),
    ],
)
def test_wrong_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        FederationRules(**settings)
