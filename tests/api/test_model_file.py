"""A global version as a model file: ``GET /models/global/{version}/download`` and ``python -m
api.export_model``, checked against the replay's ``federated_models.jsonl``, and a replay that
starts from the downloaded file (``FLEAD_INITIAL_MODEL``)."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import orjson
import pytest

from api.settings import MODEL_SETTINGS
from dataflows.config import SETTINGS
from operators.model_file import parse_model_document
from tests.api.client import REPO, TOKEN, api_environment
from tests.api.conftest import MODEL_ENVIRONMENT
from tests.api.data import read_jsonl
from tests.flead_runs import run

pytestmark = pytest.mark.integration


def download(api, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the raw body of a GET of ``path``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(api.base + path, headers=headers), timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def export(url: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess[str]:
    env = api_environment(url, 0, tokens=None, **MODEL_ENVIRONMENT)
    del env["FLEAD_API_BIND"]
    return subprocess.run(
        [sys.executable, "-m", "api.export_model", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (the test servers trust 127.0.0.1 and ignore it)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{password}@{parts.hostname}:{parts.port}").geturl()


def test_the_model_settings_are_settings_of_the_dataflow():
    assert set(MODEL_SETTINGS) <= {setting.name for setting in SETTINGS}


def test_a_version_downloads_as_a_model_file_of_its_row_lineage_and_settings(api, replayed):
    row = next(r for r in read_jsonl(replayed.out, "federated_models") if r["global_version"] == 100)
    status, headers, body = download(api, "/models/global/100/download")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["content-disposition"] == 'attachment; filename="flead-global-v100.json"'
    document = orjson.loads(body)
    model = parse_model_document(document)
    assert (model.version, model.parameters.weights, model.parameters.intercept, model.threshold) == (
        100,
        row["weights"],
        row["intercept"],
        row["threshold"],
    )
    assert {name: document["model"][name] for name in row} == row  # the row as the dataflow wrote it
    assert document["lineage"] == api.ok("/models/global/100")["lineage"]
    assert document["settings"] == {"FLEAD_NORMAL_PRIOR_READINGS": "0", "FLEAD_WINDOW": "100"}


def test_the_newest_version_downloads_and_an_unknown_one_is_404(api):
    status, headers, body = download(api, "/models/global/latest/download")
    assert status == 200
    assert headers["content-disposition"] == 'attachment; filename="flead-global-v248.json"'
    assert orjson.loads(body)["model"]["global_version"] == 248
    status, headers, body = download(api, "/models/global/249/download")
    assert (status, headers["content-type"], orjson.loads(body)) == (
        404,
        "application/json",
        {"detail": "no global version 249"},
    )


def test_the_command_writes_the_file_the_api_sends(api, replayed, tmp_path):
    done = export(replayed.url, "100", "--out", str(tmp_path / "v100.json"))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"flead export: wrote global version 100 to {tmp_path / 'v100.json'}\n"
    assert (tmp_path / "v100.json").read_bytes() == download(api, "/models/global/100/download")[2]
    done = export(replayed.url, "latest", cwd=tmp_path)
    assert done.stdout == "flead export: wrote global version 248 to flead-global-v248.json\n"
    assert (tmp_path / "flead-global-v248.json").read_bytes() == download(api, "/models/global/latest/download")[2]


def test_the_command_fails_in_one_line_without_the_password(replayed, tmp_path):
    url = with_password(replayed.url, "s3cret-pw")
    shown = with_password(replayed.url, "***")
    port = f":{urlsplit(replayed.url).port}/"
    unreachable = url.replace(port, ":9/")
    for database, version, line in [
        (url, "249", f"flead export: no global version 249 in the database {shown}"),
        (unreachable, "latest", f"flead export: cannot read the database {shown.replace(port, ':9/')}: "),
    ]:
        done = export(database, version, "--out", str(tmp_path / "never.json"))
        assert done.returncode == 1 and done.stdout == "", done
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(line), done.stderr
        assert "s3cret-pw" not in done.stderr
    assert not (tmp_path / "never.json").exists()


def test_a_replay_starts_from_the_downloaded_file(api, replayed, nab_sample, tmp_path):
    if replayed.mode != "postgresql":
        pytest.skip("one replay from the file is enough: the file is the same in both database modes")
    path = tmp_path / "flead-global-v248.json"
    path.write_bytes(download(api, "/models/global/248/download")[2])
    kept = orjson.loads(path.read_bytes())["model"]
    run(nab_sample, tmp_path / "out", FLEAD_INITIAL_MODEL=str(path))
    first = read_jsonl(tmp_path / "out", "federated_models")[0]
    assert first["global_version"] == 249  # numbered after the version the file holds
    assert (first["weights"], first["intercept"], first["threshold"]) == (
        kept["weights"],
        kept["intercept"],
        kept["threshold"],
    )
