import pytest

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
