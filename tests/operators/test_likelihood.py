import math
import random

import numpy as np
import pytest

from operators.likelihood import (
    AnomalyLikelihood,
    log_tail,
    log_tail_many,
    rarest,
    rarest_many,
    score_many,
    score_of,
    threshold_of,
)
from operators.normal_model import Moments


def test_log_tail_matches_the_normal_tail_and_stays_finite_far_out():
    assert math.exp(log_tail(1.0)) == pytest.approx(0.158655, abs=1e-6)
    assert math.exp(log_tail(5.0)) == pytest.approx(2.8665e-7, rel=1e-4)
    # either side of the switch to the asymptotic series: P(Z > 20) = 2.7536e-89
    assert math.exp(log_tail(19.9999999)) == pytest.approx(2.7536e-89, rel=1e-4)
    assert math.exp(log_tail(20.0)) == pytest.approx(2.7536e-89, rel=1e-4)
    assert math.isfinite(log_tail(1e6))


def test_score_and_threshold_are_one_to_one_with_the_tail_probability():
    assert score_of(math.log(1e-3)) == pytest.approx(1 - 10**-0.3)  # 0.4988
    assert threshold_of(1e-3) == pytest.approx(score_of(math.log(1e-3)))
    assert score_of(math.log(1e-150)) < 1.0 and score_of(0.0) == 0.0


def test_the_rarest_of_two_pieces_of_evidence_is_corrected_for_looking_twice():
    assert math.exp(rarest(math.log(0.01), 2)) == pytest.approx(1 - 0.99**2)


def ordinary(likelihood: AnomalyLikelihood, rng: random.Random, n: int, scale: float) -> list[float]:
    return [log_tail(likelihood.update(abs(rng.gauss(0.0, scale)))[0]) for _ in range(n)]


def test_calibrated_alike_whatever_the_raw_scores_units():
    small, large = AnomalyLikelihood(), AnomalyLikelihood()
    a = ordinary(small, random.Random(1), 600, 1.0)
    b = ordinary(large, random.Random(1), 600, 100.0)
    assert a == pytest.approx(b)  # the same readings in other units: the same tail probabilities
    assert all(t == math.log(0.5) for t in a[:300])  # not warm: neutral


def test_a_prior_stands_in_for_history_a_new_device_does_not_have():
    prior = Moments(samples=10_000, mean=0.8, second=0.8**2 + 0.1**2)
    fresh, with_prior = AnomalyLikelihood(), AnomalyLikelihood()
    assert fresh.update(5.0)[0] == 0.0  # no history: neutral
    z, average = with_prior.update(5.0, prior, prior_weight=300.0)
    assert average == 5.0 and z == pytest.approx((5.0 - 0.8) / 0.1)


def test_the_array_forms_give_the_per_reading_tail_probabilities_and_scores():
    z = np.concatenate([np.linspace(-8.0, 60.0, 6_801), [19.999999, 20.0, 20.000001, 0.0]])
    log_q = log_tail_many(z)
    expected = np.array([log_tail(x) for x in z.tolist()])
    assert np.allclose(log_q, expected, rtol=1e-13, atol=1e-15)
    for k in (1, 2, 4):
        rare = rarest_many(log_q, k)
        assert np.allclose(rare, [rarest(x, k) for x in log_q.tolist()], rtol=1e-13, atol=1e-15)
        scores = score_many(rare)
        assert np.allclose(scores, [score_of(x) for x in rare.tolist()], rtol=0, atol=1e-15)
    assert score_many(rarest_many(np.array([0.0]), 4)).tolist() == [0.0]  # Q = 1: score 0, not -0.0 or NaN
