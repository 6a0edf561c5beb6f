import math
import random

import pytest

from operators.forecast import FieldForecaster


def test_the_error_is_zero_until_a_forecaster_is_ready_then_in_spreads():
    forecaster = FieldForecaster()
    # the first reading sets the level; 20 forecasts more before their errors count
    assert [forecaster.push(float(t), 5.0 + (t % 2)) for t in range(21)] == [0.0] * 21
    # alternating 5, 6: the level settles near 5.5 with errors of about ±0.5, so a 10 is ~9 spreads off
    assert 7 < forecaster.push(21.0, 10.0) < 12


def test_a_daily_rhythm_is_forecast_by_the_time_of_day_after_a_few_days():
    rng = random.Random(3)
    forecaster = FieldForecaster()
    day = 86_400.0
    errors = []
    for step in range(12 * 96):  # twelve days of 15-minute readings
        t = step * 900.0
        value = 50.0 + 20.0 * math.sin(2 * math.pi * t / day) + rng.gauss(0.0, 1.0)
        errors.append(forecaster.push(t, value))
    # the daily profile explains the sine: the last day's errors are noise-sized, in its spreads
    assert max(abs(e) for e in errors[-96:]) < 4
    # a reading at the level of noon, at midnight: far off the day's shape
    assert abs(forecaster.push(12 * day, 70.0)) > 8


def test_the_state_round_trips_through_pickle():
    import pickle

    forecaster = FieldForecaster()
    for t in range(50):
        forecaster.push(t * 60.0, float(t % 7))
    copy = pickle.loads(pickle.dumps(forecaster))
    assert copy.push(3000.0, 3.0) == pytest.approx(forecaster.push(3000.0, 3.0))
