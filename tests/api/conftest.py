"""One replay per database mode, and ``python -m api`` over it, shared by the API's tests.

The replay of ``nab_sample`` (three NAB series, 248 global versions, 452 anomalies) runs once
per mode into a database of its own on the session's server (plain PostgreSQL, then
TimescaleDB), with the rows of ``tests/api/data.py`` added; the API runs as a subprocess on a
free port with two tokens, and is stopped with SIGTERM after the package's tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.api.client import Api, api_environment, free_port, launch
from tests.api.data import insert_rows
from tests.conftest import DATABASE_SERVERS
from tests.flead_runs import run


@dataclass(frozen=True)
class Replayed:
    mode: str
    url: str
    out: Path
    """The replay's FLEAD_OUT_DIR: the JSON Lines files of every row it wrote to the database."""


@pytest.fixture(scope="package", params=list(DATABASE_SERVERS))
def replayed(request: pytest.FixtureRequest, nab_sample: Path, tmp_path_factory) -> Iterator[Replayed]:
    server = request.getfixturevalue(DATABASE_SERVERS[request.param])
    name = f"api_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = server.url.rsplit("/", 1)[0] + f"/{name}"
    out = tmp_path_factory.mktemp(f"api-replay-{request.param}")
    try:
        run(nab_sample, out, FLEAD_DATABASE_URL=url)
        insert_rows(url)
        yield Replayed(request.param, url, out)
    finally:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


MODEL_ENVIRONMENT = {"FLEAD_NORMAL_PRIOR_READINGS": "0", "FLEAD_WINDOW": "100", "FLEAD_INPUT": "kafka"}
"""Dataflow settings in the API's environment, as a shared ConfigMap would put them there: the
first two shape a model (the replay's, ``tests/flead_runs.py``, and a default), the third does not."""


@pytest.fixture(scope="package")
def api(replayed: Replayed) -> Iterator[Api]:
    port = free_port()
    served = launch(api_environment(replayed.url, port, **MODEL_ENVIRONMENT), port)
    yield served
    assert served.stop() == 0
