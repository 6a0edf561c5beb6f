"""FLEAD_INITIAL_MODEL: a run that starts from a global model exported by another."""

from __future__ import annotations

import subprocess

import orjson
import pytest

from operators.model_file import model_document, write_model_file
from tests.flead_runs import REPO, environment, flead_command, run


def rows(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def exported(nab_sample, tmp_path_factory):
    """The last global version of a replay of the sample, as a model file."""
    out = tmp_path_factory.mktemp("first-site")
    run(nab_sample, out)
    last = rows(out / "federated_models.jsonl")[-1]
    path = out / f"global-v{last['global_version']}.json"
    write_model_file(path, model_document(last, lineage={}, settings={}))
    return last, path


def test_a_run_publishes_the_file_s_model_as_its_first_version_and_goes_on_from_it(nab_sample, exported, tmp_path):
    last, path = exported
    summary = run(nab_sample, tmp_path, FLEAD_INITIAL_MODEL=str(path))
    versions = rows(tmp_path / "federated_models.jsonl")
    first = versions[0]
    assert first["global_version"] == last["global_version"] + 1  # after the versions that exist
    assert (first["weights"], first["intercept"], first["threshold"]) == (
        last["weights"],
        last["intercept"],
        last["threshold"],
    )
    made = range(first["global_version"], summary["global_versions"] + 1)
    assert [v["global_version"] for v in versions] == list(made)
    updates = rows(tmp_path / "local_models.jsonl")
    adopted = {u["global_version"] for u in updates}
    assert first["global_version"] in adopted, "no device started a round from the file's model"
    # rounds started from no global model (0) or from this run's versions, none of the first run's numbering
    assert adopted <= {0, *made}


def test_a_file_of_other_features_stops_start_up_naming_the_difference(nab_sample, exported, tmp_path):
    last, _ = exported
    document = model_document(last, lineage={}, settings={})
    document["feature_names"] = [*document["feature_names"][:-1], "voltage"]
    path = tmp_path / "other.json"
    write_model_file(path, document)
    env = environment(nab_sample, tmp_path / "out", FLEAD_INITIAL_MODEL=str(path))
    done = subprocess.run(flead_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"flead: cannot start: {path}: the model file's features differ from this build's:"
        " it lacks flat; it has voltage, which this build does not know"
    )
    assert not (tmp_path / "out" / "summary.json").exists()
