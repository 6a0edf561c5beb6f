"""A global model as one file: what a site exports, keeps, and starts another deployment from.

The file is JSON::

    {"format": "flead-global-model", "format_version": 1,
     "feature_names": [...],           # the logistic model's inputs, in operators/features.py's order
     "model": {...},                   # the federated_models row: weights, intercept, threshold,
                                       # the fleet's normal model, version, devices, updates, samples
     "lineage": {...},                 # the versions and devices behind it, as the exporter knew them
     "settings": {...}}                # the FLEAD_* settings that shape a model, of the exporter

A deployment started with ``FLEAD_INITIAL_MODEL`` refuses a file of another format, another
format version or other feature names, naming the difference: weights of other features
would be read as weights of these.

>>> from operators.local_model import ModelParameters
>>> model = GlobalModel(7, ModelParameters(dict.fromkeys(FEATURE_NAMES, 0.5), -1.0), None, 3, 9, 900, 0.0)
>>> document = model_document(model.as_row(), lineage={}, settings={})
>>> parse_model_document(document).version
7
>>> document["feature_names"] = [*FEATURE_NAMES[:-1], "voltage"]
>>> try:
...     parse_model_document(document)
... except ModelFileError as refused:
...     print(refused)
the model file's features differ from this build's: it lacks flat; it has voltage, which this build does not know
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from operators.features import FEATURE_NAMES
from operators.fedavg import GlobalModel

FORMAT = "flead-global-model"
FORMAT_VERSION = 1


class ModelFileError(RuntimeError):
    """A model file this build cannot start from; the message says why."""


def model_document(row: dict[str, Any], lineage: dict[str, Any], settings: dict[str, str]) -> dict[str, Any]:
    """The file's content for a ``federated_models`` row (as :meth:`GlobalModel.as_row` makes it)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "model": row,
        "lineage": lineage,
        "settings": settings,
    }


def parse_model_document(document: Any) -> GlobalModel:
    """The global model in ``document``; :class:`ModelFileError` naming what does not match."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ModelFileError(f'not a FLEAD model file: its format is {found!r}, not "{FORMAT}"')
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"the model file has format version {document.get('format_version')!r};"
            f" this build reads format version {FORMAT_VERSION}"
        )
    _check_features(document.get("feature_names"))
    row = document.get("model")
    try:
        model = GlobalModel.from_row(row)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise ModelFileError(f"the model file's model is incomplete or malformed ({problem})") from None
    if set(model.parameters.weights) != set(FEATURE_NAMES):
        raise ModelFileError("the model file's weights do not name the features it lists")
    numbers = [*model.parameters.weights.values(), model.parameters.intercept]
    if model.threshold is not None:
        numbers.append(model.threshold)
    if not all(math.isfinite(x) for x in numbers):
        raise ModelFileError("the model file's weights, intercept or threshold are not all finite numbers")
    if model.version < 1:
        raise ModelFileError(f"the model file's version is {model.version}; global versions start at 1")
    return model


def _check_features(names: Any) -> None:
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ModelFileError("the model file lists no feature names")
    if names == list(FEATURE_NAMES):
        return
    lacks = sorted(set(FEATURE_NAMES) - set(names))
    extra = sorted(set(names) - set(FEATURE_NAMES))
    if not lacks and not extra:
        raise ModelFileError(f"the model file lists the features in another order: {', '.join(names)}")
    parts = []
    if lacks:
        parts.append(f"it lacks {', '.join(lacks)}")
    if extra:
        parts.append(f"it has {', '.join(extra)}, which this build does not know")
    raise ModelFileError(f"the model file's features differ from this build's: {'; '.join(parts)}")


def read_model_file(path: Path) -> GlobalModel:
    """The global model in the file at ``path`` (:class:`ModelFileError` naming the file and the problem)."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ModelFileError(f"cannot read the model file {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ModelFileError(f"the model file {path} is not JSON: {exc}") from None
    try:
        return parse_model_document(document)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def write_model_file(path: Path, document: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
