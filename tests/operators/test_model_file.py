"""A global model as a file: written from a table row, read back, and refused when it does not fit."""

from __future__ import annotations

import pytest

from operators.features import FEATURE_NAMES
from operators.fedavg import GlobalModel
from operators.local_model import ModelParameters
from operators.model_file import (
    FORMAT_VERSION,
    ModelFileError,
    model_document,
    parse_model_document,
    read_model_file,
    write_model_file,
)
from operators.normal_model import EVIDENCE, NormalModel


def a_model() -> GlobalModel:
    weights = {name: 0.25 * index - 0.5 for index, name in enumerate(FEATURE_NAMES)}
    normal = NormalModel.from_row({name: [100, 0.5, 1.5] for name in EVIDENCE})
    return GlobalModel(12, ModelParameters(weights, -2.0), 0.9, 4, 40, 4000, 1_400_000_000.0, normal, 0.6)


def test_a_model_round_trips_through_a_file(tmp_path):
    model = a_model()
    lineage = {"devices": ["pump-1", "pump-2"], "moved_from": 11}
    path = tmp_path / "v12.json"
    write_model_file(path, model_document(model.as_row(), lineage, {"FLEAD_SCORE_THRESHOLD": "0.5"}))
    back = read_model_file(path)
    assert back.as_row() == model.as_row()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="onnx"), "not a FLEAD model file: its format is 'onnx'"),
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), f"this build reads format version {FORMAT_VERSION}"),
        (
            lambda d: d.update(feature_names=[*FEATURE_NAMES[1:], "voltage"]),
            "it lacks abs_z; it has voltage, which this build does not know",
        ),
        (lambda d: d.update(feature_names=list(reversed(FEATURE_NAMES))), "lists the features in another order"),
        (lambda d: d.pop("feature_names"), "lists no feature names"),
        (lambda d: d["model"].pop("weights"), "incomplete or malformed (KeyError"),
        (lambda d: d["model"]["weights"].pop("flat"), "weights do not name the features it lists"),
        (lambda d: d["model"].update(intercept=float("nan")), "not all finite numbers"),
        (lambda d: d["model"].update(global_version=0), "global versions start at 1"),
    ],
)
def test_a_file_that_does_not_fit_is_refused_naming_the_difference(change, message):
    document = model_document(a_model().as_row(), {}, {})
    change(document)
    with pytest.raises(ModelFileError) as refused:
        parse_model_document(document)
    assert message in str(refused.value)


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(ModelFileError, match=f"cannot read the model file {tmp_path / 'none.json'}"):
        read_model_file(tmp_path / "none.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ModelFileError, match=f"the model file {broken} is not JSON"):
        read_model_file(broken)
