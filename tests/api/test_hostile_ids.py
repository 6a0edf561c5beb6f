"""Device ids made to break an API: in the path and in the query they are values, never SQL or
routing. Ids that no row has get a 404 or an empty page; rows written with such ids (as SQL
parameters, ``tests/api/data.py``) come back byte for byte."""

from __future__ import annotations

from urllib.parse import urlencode

import psycopg
import pytest

from api import queries
from tests.api.client import device_path
from tests.api.data import ABSENT_IDS, HOSTILE_IDS, TIE, read_jsonl
from tests.api.test_endpoints import expected_anomalies

pytestmark = pytest.mark.integration


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("anomalies", "local_models", "federated_models", "model_evaluations")
        }


@pytest.mark.parametrize("device_id", ABSENT_IDS, ids=repr)
def test_an_id_no_row_has_is_a_404_and_an_empty_page(api, replayed, device_id):
    before = counts(replayed.url)
    reply = api.get(device_path(device_id))
    assert reply.status == 404
    assert reply.body == {"detail": "no device with this id"}
    assert api.ok("/anomalies", device_id=device_id) == {"items": [], "next_after": None}
    assert api.ok("/anomalies", device_id=device_id, severity="critical", since="2000-01-01") == {
        "items": [],
        "next_after": None,
    }
    assert counts(replayed.url) == before


@pytest.mark.parametrize("device_id", HOSTILE_IDS, ids=repr)
def test_rows_of_a_hostile_id_come_back_byte_for_byte(api, device_id):
    reply = api.get(device_path(device_id))
    assert reply.status == 200, reply.body
    found = reply.body
    assert found["device_id"] == device_id
    assert found["rounds"] == 1
    assert found["latest_local_model"]["weights"] == {"abs_z": 0.5}
    assert [row["device_id"] for row in found["recent_anomalies"]] == [device_id, device_id]
    page = api.ok("/anomalies", device_id=device_id)
    assert [row["device_id"] for row in page["items"]] == [device_id, device_id]
    assert page["items"] == found["recent_anomalies"]
    assert page["items"][0]["values"] == {"value": float(HOSTILE_IDS.index(device_id)), "ünï \"'": -1.5}


def test_a_hostile_id_as_the_device_cursor_starts_the_page_after_it(api):
    every = [item["device_id"] for item in api.ok("/devices", limit=1000)["items"]]
    for device_id in HOSTILE_IDS:
        following = every[every.index(device_id) + 1 :][:2]
        page = api.ok("/devices", limit=2, after=device_id)
        assert [item["device_id"] for item in page["items"]] == following


def test_an_invalid_utf8_path_is_a_json_404(api):
    reply = api.get("/devices/%C3%28%FF")
    assert reply.status == 404
    assert reply.body["detail"] == "no device with this id"


def test_queries_take_ids_as_parameters_without_http(replayed):
    """``api/queries.py`` on its own: the same answers from a connection, no server between."""
    with psycopg.connect(replayed.url, autocommit=True) as conn:
        assert queries.anomalies(conn, 10, device_id="'; DROP TABLE anomalies; --' OR 1=1 --") == []
        assert queries.device(conn, "%") is None
        tied = queries.anomalies(conn, 100, since=TIE)
        assert sorted(row["device_id"] for row in tied) == sorted(HOSTILE_IDS)
        assert all(row["timestamp"] == TIE for row in tied)
        found = queries.device(conn, "'; DROP TABLE anomalies; --")
        assert found["device_id"] == "'; DROP TABLE anomalies; --"
        assert found["anomalies"]["total"] == 2
        everything = queries.anomalies(conn, 100_000)
    assert len(everything) == len(expected_anomalies(replayed.out))
    assert len(read_jsonl(replayed.out, "anomalies")) == 452


def test_query_strings_are_decoded_once(api):
    """``a%2Fb`` is an id of its own: sent encoded it must not be read as ``a/b``."""
    page = api.get("/anomalies?" + urlencode({"device_id": "a%2Fb"}))
    assert [row["device_id"] for row in page.body["items"]] == ["a%2Fb", "a%2Fb"]
    assert api.get(device_path("a%2Fb")).body["device_id"] == "a%2Fb"
    assert api.get("/devices/a%2Fb").status == 404  # that is a/b
