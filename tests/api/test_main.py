"""``python -m api`` as a process: it starts, refuses bad settings in one line, stops cleanly on
SIGTERM and SIGINT, and answers 503 while its database is away."""

from __future__ import annotations

import signal
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from api.settings import ConfigError, load_api_settings
from sinks.database_schema import connect, ensure_schema
from tests.api.client import TOKEN, api_environment, free_port, launch, start_api

pytestmark = pytest.mark.integration

NOWHERE = "postgresql://flead@127.0.0.1:9/flead"
"""A database URL for tests that never reach it."""


@contextmanager
def new_database(server) -> Iterator[str]:
    """An empty database of its own on ``server``, dropped afterwards."""
    name = f"api_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield server.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def empty_tables(postgres) -> Iterator[str]:
    """FLEAD's tables without rows, on the session's plain PostgreSQL (the process tests need
    no replay, and the database mode changes nothing in them)."""
    with new_database(postgres) as url:
        with connect(url) as conn:
            ensure_schema(conn)
        yield url


def refused(env: dict[str, str]) -> str:
    """The one line a refused start-up prints; it must end the process without serving."""
    proc = start_api(env)
    try:
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_no_tokens_and_a_bind_beyond_loopback_refuses_to_start_in_one_line():
    env = api_environment(NOWHERE, free_port(), tokens=None, FLEAD_API_BIND="0.0.0.0:8123")
    assert refused(env) == (
        "flead api: bad setting: FLEAD_API_BIND='0.0.0.0:8123': without FLEAD_API_TOKENS the API listens on a "
        "loopback address only (127.0.0.1, ::1 or localhost)"
    )


def test_a_bad_token_is_named_without_being_shown():
    env = api_environment(NOWHERE, free_port(), tokens=f"{TOKEN},short-secret")
    line = refused(env)
    assert line == "flead api: bad setting: FLEAD_API_TOKENS: a token is shorter than 16 characters"
    assert "short-secret" not in line


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FLEAD_API_BIND": "8000"}, "FLEAD_API_BIND='8000': must be host:port"),
        ({"FLEAD_API_BIND": "127.0.0.1:http"}, "FLEAD_API_BIND='127.0.0.1:http': the port must be a number"),
        ({"FLEAD_API_BIND": "127.0.0.1:70000"}, "FLEAD_API_BIND='127.0.0.1:70000': the port must be a number"),
        ({"FLEAD_API_BIND": "::1:8000"}, "an IPv6 address goes in brackets"),
        ({"FLEAD_API_TOKENS": "0123456789abcdef 0123"}, "FLEAD_API_TOKENS: a token holds a character"),
        ({"FLEAD_API_TOKEN": TOKEN}, "unknown setting FLEAD_API_TOKEN"),
        ({"FLEAD_DATABASE_URL": ""}, "FLEAD_DATABASE_URL: must be set"),
        ({"FLEAD_DATABASE_URL": "mysql://x:secret@db/x"}, "FLEAD_DATABASE_URL: must start with postgresql://"),
        ({"FLEAD_DATABASE_URL": "postgresql://x:secret@db:port/x?sslmode"}, "FLEAD_DATABASE_URL: is not a PostgreSQL"),
    ],
)
def test_a_bad_setting_is_named(environ, message):
    with pytest.raises(ConfigError) as raised:
        load_api_settings({"FLEAD_DATABASE_URL": "postgresql://flead@db/flead", **environ})
    assert message in str(raised.value)
    assert "secret" not in str(raised.value)


def test_settings_leave_the_dataflows_variables_alone():
    settings = load_api_settings(
        {
            "FLEAD_DATABASE_URL": "postgresql://flead@db/flead",
            "FLEAD_INPUT": "kafka",
            "FLEAD_API_BIND": "[::]:9000",
            "FLEAD_API_TOKENS": f" {TOKEN} ,, other-token-0123456789 ",
        }
    )
    assert (settings.host, settings.port, settings.bind) == ("::", 9000, "[::]:9000")
    assert settings.tokens == (TOKEN, "other-token-0123456789")
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_without_tokens_it_serves_loopback_says_so_and_stops_cleanly(empty_tables, sig):
    port = free_port()
    served = launch(api_environment(empty_tables, port, tokens=None), port)
    try:
        assert served.get("/anomalies", token=None).body == {"items": [], "next_after": None}
        health = served.get("/health", token=None).body
        assert (health["database"], health["newest_global_version"]) == ("reachable", None)
    finally:
        served.proc.send_signal(sig)
        code = served.proc.wait(timeout=30)
    stderr = served.proc.stderr.read()
    assert code == 0, stderr
    assert f"no FLEAD_API_TOKENS: anyone on this machine may read; listening on 127.0.0.1:{port} only" in stderr
    assert "Finished server process" in stderr
    assert "Traceback" not in stderr


def test_a_database_that_is_away_is_a_json_503():
    port = free_port()
    served = launch(api_environment(NOWHERE, port), port)
    try:
        health = served.get("/health", token=None)
        assert health.status == 503
        assert health.body == {"status": "unavailable", "database": "unreachable"}
        reply = served.get("/anomalies")
        assert reply.status == 503
        assert reply.body == {"detail": "the database is unavailable; try again later"}
    finally:
        assert served.stop() == 0


def test_a_database_without_the_tables_is_a_json_503(postgres):
    port = free_port()
    with new_database(postgres) as url:
        served = launch(api_environment(url, port), port)
        try:
            reply = served.get("/models/global/latest")
            assert reply.status == 503
            assert reply.body == {"detail": "the database has no FLEAD tables yet: no dataflow has written to it"}
        finally:
            assert served.stop() == 0


def test_the_openapi_document_names_every_endpoint_and_the_bearer_scheme(api):
    document = api.get("/openapi.json", token=None).body
    assert set(document["paths"]) == {
        "/health",
        "/models/global",
        "/models/global/latest",
        "/models/global/{version}",
        "/models/global/latest/download",
        "/models/global/{version}/download",
        "/devices",
        "/devices/{device_id}",
        "/anomalies",
    }
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    with urllib.request.urlopen(f"{api.base}/docs", timeout=10) as page:
        assert "swagger-ui" in page.read().decode()
