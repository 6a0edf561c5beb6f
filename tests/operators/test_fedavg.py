import random
import statistics

import pytest

from operators.fedavg import FedAvgAggregator, GlobalModel, LocalUpdate, RecentMedian, fedavg
from operators.local_model import ModelParameters
from operators.normal_model import EVIDENCE, Moments, NormalModel
from operators.threshold import GRID


def test_reference_example_by_hand():
    # Σ n_k·w_k / Σ n_k with n = 500, 400, 300 (Σ = 1200):
    #   (0.45·500 + 0.55·400 + 0.48·300) / 1200 = 589 / 1200 = 0.4908
    #   (0.35·500 + 0.25·400 + 0.32·300) / 1200 = 371 / 1200 = 0.3092
    #   (0.25·500 + 0.20·400 + 0.23·300) / 1200 = 274 / 1200 = 0.2283
    # The reference document prints [0.494, 0.323, 0.223], which is not this formula's
    # result for its own inputs (nor the unweighted mean, [0.493, 0.307, 0.227]).
    averaged = fedavg([[0.45, 0.35, 0.25], [0.55, 0.25, 0.20], [0.48, 0.32, 0.23]], [500, 400, 300])
    assert averaged == pytest.approx([589 / 1200, 371 / 1200, 274 / 1200])
    assert [round(w, 3) for w in averaged] == [0.491, 0.309, 0.228]


def test_a_client_with_more_samples_pulls_harder():
    assert fedavg([[0.0], [1.0]], [1, 3]) == [0.75]


@pytest.mark.parametrize(
    ("weights", "samples", "message"),
    [([[1.0]], [1, 2], "sample counts"), ([[1.0], [1.0, 2.0]], [1, 1], "length"), ([[1.0]], [0], "more than 0")],
)
def test_inconsistent_inputs_are_refused(weights, samples, message):
    with pytest.raises(ValueError, match=message):
        fedavg(weights, samples)


ZERO = ModelParameters()


def update(
    device: str,
    w: float,
    samples: int = 10,
    accuracy: float = 0.5,
    timestamp: float = 0.0,
    base: ModelParameters = ZERO,
    base_version: int = 0,
) -> LocalUpdate:
    parameters = ModelParameters({"abs_z": w}, intercept=-w)
    return LocalUpdate(device, 1, base_version, parameters, base, samples, samples, accuracy, 0.1, timestamp)


def test_a_global_model_every_n_updates_with_consecutive_versions():
    aggregator = FedAvgAggregator(every_updates=3)
    produced = [aggregator.add(update(f"d{i % 2}", float(i))) for i in range(9)]
    versions = [model.version for model in produced if model is not None]
    assert versions == [1, 2, 3]
    assert [i for i, model in enumerate(produced) if model is not None] == [2, 5, 8]


def test_rounds_that_started_from_the_newest_version_give_fedavg_of_their_weights():
    aggregator = FedAvgAggregator(every_updates=2)
    aggregator.add(update("a", 2.0))
    first = aggregator.add(update("b", 4.0))  # both from version 0 (zeros): (2 + 4) / 2
    assert first.parameters.weights == {"abs_z": pytest.approx(3.0)}
    aggregator.add(update("a", 5.0, samples=30, base=first.parameters, base_version=1))
    second = aggregator.add(update("b", 1.0, samples=10, base=first.parameters, base_version=1))
    # Σ n·w / Σ n = (30·5 + 10·1) / 40
    assert second.parameters.weights == {"abs_z": pytest.approx(4.0)}
    assert second.parameters.intercept == pytest.approx(-4.0)


def test_a_round_from_an_older_version_adds_its_change_with_the_staleness_weight():
    aggregator = FedAvgAggregator(every_updates=1)
    v1 = aggregator.add(update("a", 4.0))
    v2 = aggregator.add(update("a", 6.0, base=v1.parameters, base_version=1))
    assert v2.parameters.weights["abs_z"] == pytest.approx(6.0)
    # b learned 0 → 0.5 from version 0, two versions ago: its weights (0.5) would drag the global
    # model back towards version 0; its change (+0.5) counts 1/√(1 + 2)
    v3 = aggregator.add(update("b", 0.5, base=ZERO, base_version=0))
    assert v3.parameters.weights["abs_z"] == pytest.approx(6.0 + 0.5 / 3**0.5)
    assert v3.parameters.intercept == pytest.approx(-6.0 - 0.5 / 3**0.5)


def test_a_devices_rounds_since_the_last_version_add_up_with_all_their_samples():
    aggregator = FedAvgAggregator(every_updates=3)
    first = update("a", w=1.0, samples=10, accuracy=1.0)
    aggregator.add(first)
    aggregator.add(update("a", w=3.0, samples=10, accuracy=0.5, base=first.parameters))  # +2 on top of +1
    model = aggregator.add(update("b", w=0.0, samples=20, accuracy=0.25))
    assert model is not None
    # a: change +3 over 20 samples; b: 0 over 20 samples → 1.5
    assert model.parameters.weights == {"abs_z": pytest.approx(1.5)}
    assert model.parameters.intercept == pytest.approx(-1.5)
    # accuracy Σ n·acc / Σ n = (10·1.0 + 10·0.5 + 20·0.25) / 40
    assert model.accuracy == pytest.approx(20 / 40)
    assert (model.num_devices, model.num_updates, model.samples) == (2, 3, 40)


def test_after_a_version_the_next_one_starts_empty():
    aggregator = FedAvgAggregator(every_updates=2)
    aggregator.add(update("a", 1.0))
    first = aggregator.add(update("b", 1.0))
    c_first = update("c", 5.0, base=first.parameters, base_version=1)
    aggregator.add(c_first)
    model = aggregator.add(update("c", 7.0, base=c_first.parameters, base_version=1))
    assert model.version == 2
    assert model.num_devices == 1
    # only c's changes since version 1 (1 → 5 → 7): version 1 moved by +6
    assert model.parameters.weights["abs_z"] == pytest.approx(7.0)


def test_event_time_trigger():
    aggregator = FedAvgAggregator(every_updates=0, every_seconds=60)
    assert aggregator.add(update("a", 1.0, timestamp=1000.0)) is None
    assert aggregator.add(update("b", 1.0, timestamp=1059.0)) is None
    model = aggregator.add(update("c", 1.0, timestamp=1060.0))
    assert model is not None and model.version == 1 and model.timestamp == 1060.0
    assert aggregator.add(update("a", 1.0, timestamp=1100.0)) is None


def test_a_model_survives_its_row_form():
    aggregator = FedAvgAggregator(every_updates=1)
    model = aggregator.add(update("a", 2.0, timestamp=1_700_000_000.0))
    assert type(model).from_row(model.as_row()) == model


def test_no_trigger_at_all_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        FedAvgAggregator(every_updates=0, every_seconds=0)


def test_an_aggregator_goes_on_from_a_newer_version_it_adopts():
    aggregator = FedAvgAggregator(every_updates=1)
    earlier = ModelParameters({"abs_z": 2.0}, intercept=-3.0)
    aggregator.adopt(GlobalModel(41, earlier, 0.9, 5, 20, 100, 0.0))
    aggregator.adopt(GlobalModel(7, ZERO, 0.5, 1, 1, 1, 0.0))  # older: ignored
    # a device that started from version 41 and learned +0.5 on abs_z
    model = aggregator.add(
        LocalUpdate("a", 1, 41, ModelParameters({"abs_z": 2.5}, -3.0), earlier, 10, 10, 1.0, 0.1, 0.0)
    )
    assert model.version == 42
    assert model.parameters.weights == {"abs_z": pytest.approx(2.5)}
    assert model.parameters.intercept == pytest.approx(-3.0)


def test_the_fleets_normal_model_pools_the_rounds_moments():
    aggregator = FedAvgAggregator(every_updates=2)
    rest = len(EVIDENCE) - 2  # the other evidence, alike in both
    a = NormalModel((Moments(100, 1.0, 2.0), Moments(100, 0.2, 0.05), *(Moments(100, 0.5, 0.5),) * rest))
    b = NormalModel((Moments(300, 2.0, 5.0), Moments(300, 0.4, 0.25), *(Moments(300, 0.5, 0.5),) * rest))
    aggregator.add(LocalUpdate("a", 1, 0, ZERO, ZERO, 100, 0, None, None, 0.0, normal=a))
    model = aggregator.add(LocalUpdate("b", 1, 0, ZERO, ZERO, 300, 0, None, None, 0.0, normal=b))
    # (100·1 + 300·2) / 400 = 1.75 and (100·2 + 300·5) / 400 = 4.25; (100·0.2 + 300·0.4) / 400 = 0.35
    forecast, spread, *_ = model.normal.evidence
    assert (forecast.samples, forecast.mean, forecast.second) == (400, 1.75, 4.25)
    assert spread.mean == pytest.approx(0.35)
    assert model.accuracy is None  # no labels behind it


def test_with_a_target_rate_the_threshold_is_the_lowest_the_fleets_scores_reach_that_rarely():
    aggregator = FedAvgAggregator(every_updates=1, score_threshold=0.5, target_false_alarm_rate=0.01)
    # of 1,000 scores, 50 reached the first grid threshold, 9 the second, none the rest
    counts = (1000, [50, 9] + [0] * (len(GRID) - 2))
    model = aggregator.add(LocalUpdate("a", 1, 0, ZERO, ZERO, 1000, 0, None, None, 0.0, threshold_counts=counts))
    assert model.threshold == GRID[1]
    fixed = FedAvgAggregator(every_updates=1, score_threshold=0.5).add(update("a", 1.0))
    assert fixed.threshold == 0.5


def test_an_update_pickles_to_an_equal_update():
    import pickle

    normal = NormalModel(tuple(Moments(40 + i, 0.5 * i, 1.5 * i) for i in range(len(EVIDENCE))))
    updates = [
        LocalUpdate("d", 3, 2, ModelParameters({"abs_z": 1.5}, -2.0), ModelParameters(), 50, 0, None, None, 60.0),
        LocalUpdate(
            "e",
            1,
            0,
            ModelParameters({}, 0.1),
            ModelParameters({"flat": 0.2}, 0.3),
            7,
            7,
            1.0,
            0.6,
            9.5,
            normal,
            (7, [7, 3, 0]),
        ),
    ]
    assert pickle.loads(pickle.dumps(updates, protocol=pickle.HIGHEST_PROTOCOL)) == updates


def test_the_recent_median_is_the_median_of_the_last_values():
    """With repeated values, so that the value leaving the window has equal neighbours."""
    rng = random.Random(3)
    recent = RecentMedian(50)
    values = []
    for _ in range(2_000):
        value = rng.choice([rng.random(), 0.5, 1.0])
        values.append(value)
        recent.add(value)
        assert recent.median() == statistics.median(values[-50:])
