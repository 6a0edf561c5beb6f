import pytest

from operators.normal_model import (
    EVIDENCE,
    MEMORY_SAMPLES,
    Moments,
    NormalModel,
    RoundMoments,
    next_normal_model,
    pooled,
)


def test_a_rounds_moments_by_hand():
    round_ = RoundMoments()
    for values in ([1.0, 0.0, 5.0, 0.0], [3.0, 2.0, 5.0, 0.0]):
        round_.add(values)
    forecast, spread, level, relation = round_.model().evidence
    assert (forecast.samples, forecast.mean, forecast.second, forecast.variance) == (2, 2.0, 5.0, 1.0)
    assert (spread.mean, spread.second) == (1.0, 2.0)
    assert (level.mean, level.variance) == (5.0, 0.0)
    assert relation == Moments(2, 0.0, 0.0)


def test_pooling_is_the_moments_of_all_the_readings_together():
    first, second = RoundMoments(), RoundMoments()
    for x in (1.0, 2.0, 3.0):
        first.add([x] * len(EVIDENCE))
    for x in (10.0,):
        second.add([x] * len(EVIDENCE))
    both = pooled([first.model(), second.model()]).evidence[0]
    assert both.mean == pytest.approx(16 / 4)
    assert both.second == pytest.approx((1 + 4 + 9 + 100) / 4)


def test_an_old_model_weighs_at_most_the_memory():
    old = NormalModel((Moments(10 * MEMORY_SAMPLES, 0.0, 0.0),) * len(EVIDENCE))
    new = NormalModel((Moments(MEMORY_SAMPLES, 1.0, 1.0),) * len(EVIDENCE))
    assert next_normal_model(old, [new]).evidence[0].mean == pytest.approx(0.5)


def test_a_model_survives_its_row_form():
    model = NormalModel(tuple(Moments(5, 1.5 + i, 3.0 + i) for i in range(len(EVIDENCE))))
    assert NormalModel.from_row(model.as_row()) == model
    assert NormalModel.from_row(None) == NormalModel()
