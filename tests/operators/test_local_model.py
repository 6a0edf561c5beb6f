import random

import pytest
from river import linear_model, optim

from operators.local_model import LocalModel


def test_a_labelled_anomaly_weighs_positive_weight_and_a_z_rule_one_weighs_one():
    features = {"abs_z": 3.0}
    from_label, from_z_rule = LocalModel(0.05, positive_weight=5.0), LocalModel(0.05, positive_weight=5.0)
    from_label.learn(features, 1)
    from_z_rule.learn(features, 1, labelled=False)
    # the same first step from an all-zero model (p = 0.5), five times as long for the label
    step = from_z_rule.parameters.weights["abs_z"]
    assert step > 0
    assert from_label.parameters.weights["abs_z"] == pytest.approx(5 * step)
    assert from_label.parameters.intercept == pytest.approx(5 * from_z_rule.parameters.intercept)


def test_normal_readings_weigh_one_either_way():
    labelled, unlabelled = LocalModel(0.05, positive_weight=5.0), LocalModel(0.05, positive_weight=5.0)
    labelled.learn({"abs_z": 1.0}, 0)
    unlabelled.learn({"abs_z": 1.0}, 0, labelled=False)
    assert labelled.parameters == unlabelled.parameters


def test_a_step_is_rivers_learn_one_bit_for_bit():
    """LocalModel scores as River's model does and learns as its learn_one does; River is the reference."""
    rng = random.Random(5)
    learning_rate, positive_weight = 0.05, 5.0
    local = LocalModel(learning_rate, positive_weight)
    river_model = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), intercept_lr=learning_rate)
    names = ["abs_z", "abs_z_mean", "z_change", "level_shift", "spread_ratio", "flat"]
    margins_seen = set()
    for step in range(5_000):
        scale = rng.choice([0.1, 1.0, 10.0, 200.0])  # 200 drives |logit| past 18 both ways
        features = {name: rng.gauss(0.0, scale) for name in names[: 2 + step % 5]}  # new names appear
        target, labelled = int(rng.random() < 0.2), rng.random() < 0.5
        logit = local.logit(features)
        assert logit == river_model._raw_dot_one(features), f"step {step}"  # what its scores are made of
        margins_seen.add("above 18" if logit > 18 else "below -18" if logit < -18 else "within ±18")
        if step % 2:
            local.learn(features, target, labelled, logit)
        else:
            local.learn(features, target, labelled)
        river_model.learn_one(features, bool(target), w=positive_weight if target and labelled else 1.0)
        assert local.parameters.weights == river_model.weights, f"step {step}"
        assert local.parameters.intercept == river_model.intercept, f"step {step}"
    assert margins_seen == {"above 18", "below -18", "within ±18"}
