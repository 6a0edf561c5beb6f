import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

pytest_plugins = ["tests.servers.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers (Kafka via java+mvn, PostgreSQL)")


NAB = Path(__file__).resolve().parents[1] / "data" / "nab"
SAMPLE_FILES = [
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realKnownCause/rogue_agent_key_hold.csv",
]


@pytest.fixture(scope="session")
def nab_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three NAB series (~10k labelled rows) in the bundled layout, with one bad row each."""
    root = tmp_path_factory.mktemp("nab-sample")
    for name in SAMPLE_FILES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / name, target)
        with target.open("a") as handle:
            handle.write("2014-12-31 23:59:59,not-a-number,0\n")
    return root


DATABASE_SERVERS = {"postgresql": "postgres", "timescaledb": "timescaledb"}
"""The database mode FLEAD reports on each server fixture (``tests/servers/fixtures.py``)."""


@pytest.fixture(params=list(DATABASE_SERVERS))
def database_mode(request: pytest.FixtureRequest) -> str:
    """Each database test runs twice: on plain PostgreSQL and on PostgreSQL with TimescaleDB."""
    return request.param


@pytest.fixture
def database_server(request: pytest.FixtureRequest, database_mode: str):
    """The session's server of ``database_mode``, for a test that stops and restarts it."""
    return request.getfixturevalue(DATABASE_SERVERS[database_mode])


@pytest.fixture
def database(database_server):
    """A fresh database per test on the session's server of ``database_mode``."""
    server = database_server
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = server.url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
