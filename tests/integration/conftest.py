"""Fixtures shared by the tests against real servers."""

from __future__ import annotations

import uuid

import psycopg
import pytest


@pytest.fixture
def database(postgres):
    """A fresh database per test on the session's server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
