"""Every endpoint over real HTTP, its answers checked against the replay's JSON Lines files
and the rows inserted beside them (``tests/api/data.py``), on plain PostgreSQL and TimescaleDB."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from tests.api.client import OTHER_TOKEN, TOKEN
from tests.api.data import BULK_ANOMALIES, BULK_DEVICE, HOSTILE_IDS, inserted_anomalies, read_jsonl, when

pytestmark = pytest.mark.integration

PROTECTED = [
    "/models/global",
    "/models/global/latest",
    "/models/global/1",
    "/models/global/1/download",
    "/models/global/latest/download",
    "/devices",
    "/devices/realKnownCause%2Frogue_agent_key_hold",
    "/anomalies",
    "/anomalies?limit=1",
]


def expected_anomalies(out) -> list[dict]:
    """Every anomaly the API should have: the replay's and the inserted, newest first by (time, device)."""
    rows = [{**row, "timestamp": when(row["timestamp"])} for row in read_jsonl(out, "anomalies")]
    rows += inserted_anomalies()
    return sorted(rows, key=lambda row: (row["timestamp"], row["device_id"].encode()), reverse=True)


def walk(api, path: str, cursor: str, key: str, **params) -> list[dict]:
    """Every item of every page, following ``key`` (``next_after``/``next_before``) as ``cursor``."""
    items, pages, value = [], 0, None
    while True:
        page = api.ok(path, **params, **{cursor: value})
        assert page["items"], "an empty page after a cursor: the cursor promised more"
        items += page["items"]
        pages += 1
        value = page[key]
        if value is None:
            return items
        assert pages < 1000


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong", "prefix", "longer", "basic", "empty"],
)
def test_a_request_without_a_valid_token_is_401(api, path, headers):
    reply = api.get(path, token=None, headers=headers)
    assert reply.status == 401
    assert reply.body == {"detail": "a bearer token of FLEAD_API_TOKENS is needed"}
    assert reply.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("token", [TOKEN, OTHER_TOKEN])
def test_each_configured_token_is_accepted(api, token):
    assert api.get("/models/global/latest", token=token).status == 200


def test_health_needs_no_token_and_names_the_newest_version_and_its_age(api, replayed):
    newest = read_jsonl(replayed.out, "federated_models")[-1]
    before = time.time()
    reply = api.get("/health", token=None)
    assert reply.status == 200
    body = reply.body
    assert (body["status"], body["database"]) == ("ok", "reachable")
    assert body["newest_global_version"] == newest["global_version"] == 248
    assert when(body["created_at"]) == when(newest["created_at"])
    age = before - when(newest["created_at"]).timestamp()
    assert age - 5 < body["age_seconds"] < age + 60


def test_the_versions_are_listed_newest_first_with_their_metrics_page_by_page(api, replayed):
    versions = read_jsonl(replayed.out, "federated_models")
    evaluations = {row["global_version"]: row for row in read_jsonl(replayed.out, "model_evaluations")}
    assert evaluations, "the replay evaluated no version: the evaluations would go unchecked"
    listed = walk(api, "/models/global", "before", "next_before", limit=50)
    assert [item["global_version"] for item in listed] == sorted((v["global_version"] for v in versions), reverse=True)
    by_version = {row["global_version"]: row for row in versions}
    for item in listed:
        row = by_version[item["global_version"]]
        for name in ("aggregation_round", "accuracy", "num_devices", "num_updates", "samples", "threshold"):
            assert item[name] == row[name], (item["global_version"], name)
        assert when(item["created_at"]) == when(row["created_at"])
        assert "weights" not in item
        evaluation = evaluations.get(item["global_version"])
        if evaluation is None:
            assert item["evaluation"] is None
        else:
            found = item["evaluation"]
            assert {k: found[k] for k in ("n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1")} == {
                k: evaluation[k] for k in ("n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1")
            }
            assert when(found["window_start"]) == when(evaluation["window_start"])
            assert when(found["window_end"]) == when(evaluation["window_end"])


def test_a_page_of_versions_starts_below_before(api):
    page = api.ok("/models/global", limit=3, before=100)
    assert [item["global_version"] for item in page["items"]] == [99, 98, 97]
    assert page["next_before"] == 97
    assert api.ok("/models/global", before=1) == {"items": [], "next_before": None}


def check_full_version(found: dict, row: dict, previous: dict | None, evaluation: dict | None) -> None:
    assert found["global_version"] == row["global_version"]
    assert when(found["created_at"]) == when(row["created_at"])
    for name in ("weights", "intercept", "threshold", "accuracy", "normal_model"):
        assert found[name] == row[name], name
    lineage = found["lineage"]
    assert (lineage["devices"], lineage["updates"], lineage["samples"]) == (
        row["num_devices"],
        row["num_updates"],
        row["samples"],
    )
    assert lineage["moved_from"] == row["global_version"] - 1
    before = previous or {"weights": {}, "intercept": 0.0}
    names = row["weights"].keys() | before["weights"].keys()
    assert lineage["weight_change"] == {
        name: row["weights"].get(name, 0.0) - before["weights"].get(name, 0.0) for name in names
    }
    assert lineage["intercept_change"] == row["intercept"] - before["intercept"]
    if evaluation is None:
        assert found["evaluation"] is None
    else:
        assert found["evaluation"]["n"] == evaluation["n"] and found["evaluation"]["f1"] == evaluation["f1"]


def test_the_latest_version_comes_in_full_with_its_lineage(api, replayed):
    versions = read_jsonl(replayed.out, "federated_models")
    evaluations = {row["global_version"]: row for row in read_jsonl(replayed.out, "model_evaluations")}
    found = api.ok("/models/global/latest")
    check_full_version(found, versions[-1], versions[-2], evaluations.get(versions[-1]["global_version"]))


def test_a_version_by_number_with_its_evaluation(api, replayed):
    versions = {row["global_version"]: row for row in read_jsonl(replayed.out, "federated_models")}
    evaluation = read_jsonl(replayed.out, "model_evaluations")[0]
    number = evaluation["global_version"]
    check_full_version(api.ok(f"/models/global/{number}"), versions[number], versions[number - 1], evaluation)


def test_the_first_version_moved_the_all_zeros_model(api, replayed):
    first = read_jsonl(replayed.out, "federated_models")[0]
    found = api.ok("/models/global/1")
    check_full_version(found, first, None, None)
    assert found["lineage"]["weight_change"] == first["weights"]


@pytest.mark.parametrize("version", [0, 249, 2**31 - 1])
def test_an_unknown_version_is_a_json_404(api, version):
    reply = api.get(f"/models/global/{version}")
    assert reply.status == 404
    assert reply.body == {"detail": f"no global version {version}"}


def test_every_device_is_listed_once_with_its_rounds_anomalies_and_last_sighting(api, replayed):
    local = read_jsonl(replayed.out, "local_models")
    anomalies = expected_anomalies(replayed.out)
    rounds = Counter(row["device_id"] for row in local) + Counter(HOSTILE_IDS)
    by_severity: dict[str, Counter] = {}
    last_seen: dict[str, datetime] = {}
    for row in anomalies:
        by_severity.setdefault(row["device_id"], Counter())[row["severity"]] += 1
        last_seen[row["device_id"]] = max(last_seen.get(row["device_id"], row["timestamp"]), row["timestamp"])
    for row in local:
        moment = when(row["created_at"])
        last_seen[row["device_id"]] = max(last_seen.get(row["device_id"], moment), moment)

    listed = walk(api, "/devices", "after", "next_after", limit=4)
    assert [item["device_id"] for item in listed] == sorted(set(rounds) | set(by_severity), key=str.encode)
    assert len(listed) == 3 + len(HOSTILE_IDS) + 1
    for item in listed:
        device = item["device_id"]
        assert item["rounds"] == rounds[device], device
        assert item["anomalies"]["by_severity"] == dict(by_severity.get(device, {})), device
        assert item["anomalies"]["total"] == sum(by_severity.get(device, Counter()).values())
        if device in HOSTILE_IDS:  # its local model a day before its anomalies
            assert when(item["last_seen"]) == max(row["timestamp"] for row in anomalies if row["device_id"] == device)
        else:
            assert when(item["last_seen"]) == last_seen[device], device


def test_a_device_with_its_latest_local_model_round_statistics_and_recent_anomalies(api, replayed):
    device = "realKnownCause/ec2_request_latency_system_failure"
    local = [row for row in read_jsonl(replayed.out, "local_models") if row["device_id"] == device]
    anomalies = [row for row in expected_anomalies(replayed.out) if row["device_id"] == device]
    found = api.ok("/devices/realKnownCause%2Fec2_request_latency_system_failure")
    assert found["device_id"] == device
    latest = max(local, key=lambda row: (row["created_at"], row["model_version"]))
    model = found["latest_local_model"]
    assert when(model.pop("created_at")) == when(latest["created_at"])
    assert model == {name: latest[name] for name in model}
    assert set(model) == set(latest) - {"device_id", "created_at"}
    stats = found["round_statistics"]
    assert stats["count"] == found["rounds"] == len(local) == 2011
    assert stats["samples"] == sum(row["samples_processed"] for row in local)
    assert stats["labelled"] == sum(row["labelled"] for row in local)
    accuracies = [row["accuracy"] for row in local if row["accuracy"] is not None]
    assert math.isclose(stats["mean_accuracy"], sum(accuracies) / len(accuracies), rel_tol=1e-9)
    assert when(stats["first_at"]) == min(when(row["created_at"]) for row in local)
    assert found["anomalies"]["total"] == len(anomalies) == 247
    recent = found["recent_anomalies"]
    assert [when(row["timestamp"]) for row in recent] == [row["timestamp"] for row in anomalies[:20]]
    assert recent[0] == {**anomalies[0], "timestamp": recent[0]["timestamp"]}


def test_the_device_path_takes_slashes_as_such_or_encoded(api):
    plain = api.get("/devices/realKnownCause/rogue_agent_key_hold")
    encoded = api.get("/devices/realKnownCause%2Frogue_agent_key_hold")
    assert plain.status == encoded.status == 200
    assert plain.body == encoded.body
    assert plain.body["device_id"] == "realKnownCause/rogue_agent_key_hold"


def test_walking_the_pages_of_anomalies_returns_every_one_once_in_order(api, replayed):
    expected = expected_anomalies(replayed.out)
    listed = walk(api, "/anomalies", "after", "next_after", limit=97)
    keys = [(when(row["timestamp"]), row["device_id"]) for row in listed]
    assert len(keys) == len(set(keys)) == len(expected) == 452 + 2 * len(HOSTILE_IDS) + BULK_ANOMALIES
    assert keys == [(row["timestamp"], row["device_id"]) for row in expected]
    # The tied anomalies of the hostile devices are split over pages of 5 and still all there, once.
    tied = walk(api, "/anomalies", "after", "next_after", limit=5, since="2019-12-31T23:59:59Z")
    assert [row["device_id"] for row in tied] == sorted(HOSTILE_IDS, key=str.encode, reverse=True)


def test_an_anomaly_comes_back_as_it_was_written(api, replayed):
    written = read_jsonl(replayed.out, "anomalies")[100]
    page = api.ok(
        "/anomalies", device_id=written["device_id"], since=written["timestamp"], until=written["timestamp"][:-1] + "1Z"
    )
    assert len(page["items"]) == 1
    found = page["items"][0]
    assert when(found.pop("timestamp")) == when(written["timestamp"])
    assert found == {name: value for name, value in written.items() if name != "timestamp"}


@pytest.mark.parametrize(
    "filters",
    [
        {"device_id": "realKnownCause/rogue_agent_key_hold"},
        {"severity": "critical"},
        {"device_id": "realKnownCause/ec2_request_latency_system_failure", "severity": "warning"},
        {"since": "2014-03-15T00:00:00Z", "until": "2014-04-10T12:00:00Z"},
        {"since": "2014-03-15T00:00:00", "until": "2014-04-10T12:00:00"},  # UTC without a zone
        {"since": "2014-03-15T05:30:00+05:30", "until": "2014-04-10T10:00:00-02:00"},
        {"device_id": BULK_DEVICE, "since": "2019-01-01T10:00:00.000010Z"},
        {"since": "2030-01-01T00:00:00Z"},
    ],
)
def test_filtered_pages_hold_exactly_the_matching_anomalies(api, replayed, filters):
    def matches(row: dict) -> bool:
        since = filters.get("since") and when(filters["since"]).replace(tzinfo=when(filters["since"]).tzinfo or UTC)
        until = filters.get("until") and when(filters["until"]).replace(tzinfo=when(filters["until"]).tzinfo or UTC)
        return (
            row["device_id"] == filters.get("device_id", row["device_id"])
            and row["severity"] == filters.get("severity", row["severity"])
            and (not since or row["timestamp"] >= since)
            and (not until or row["timestamp"] < until)
        )

    expected = [(row["timestamp"], row["device_id"]) for row in expected_anomalies(replayed.out) if matches(row)]
    if "2030" not in filters.get("since", ""):
        assert len(expected) > 20, "too few rows match for pages to be walked"
        listed = walk(api, "/anomalies", "after", "next_after", limit=20, **filters)
    else:
        listed = api.ok("/anomalies", **filters)["items"]
    assert [(when(row["timestamp"]), row["device_id"]) for row in listed] == expected


def test_a_limit_above_the_cap_gets_a_page_of_1000(api):
    page = api.ok("/anomalies", limit=10**9)
    assert len(page["items"]) == 1000
    assert page["next_after"] is not None
    assert len(api.ok("/anomalies", limit=10**30)["items"]) == 1000


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/anomalies?limit=-1", 422),
        ("/anomalies?limit=0", 422),
        ("/anomalies?limit=ten", 422),
        ("/anomalies?limit=1e3", 422),
        ("/anomalies?limit=" + "9" * 5000, 422),
        ("/anomalies?since=not%20a%20time", 422),
        ("/anomalies?until=2014-13-45", 422),
        ("/anomalies?since=2014-03-15T25:00:00Z", 422),
        ("/anomalies?severity=fatal", 422),
        ("/anomalies?severity=%27%3B%20DROP%20TABLE%20anomalies%3B%20--", 422),
        ("/anomalies?after=garbage", 400),
        ("/anomalies?after=%00", 400),
        ("/anomalies?after=WzEsMl0", 400),  # [1,2]
        ("/anomalies?after=WyJub3QgYSB0aW1lIiwieCJd", 400),  # ["not a time","x"]
        ("/anomalies?after=WyIyMDE0LTAzLTExVDE5OjI2OjAwIiwieCJd", 400),  # a time without a zone
        ("/anomalies?after=WyIyMDE0LTAzLTExVDE5OjI2OjAwWiIsMV0", 400),  # a number as the device
        ("/anomalies?after=eyJ0IjoxfQ", 400),  # {"t":1}
        ("/anomalies?after=" + "A" * 5000, 422),
        ("/models/global?limit=-1", 422),
        ("/models/global?before=abc", 422),
        ("/models/global?before=-5", 422),
        ("/models/global?before=99999999999", 422),
        ("/models/global/abc", 422),
        ("/models/global/-1", 422),
        ("/models/global/1.5", 422),
        ("/models/global/99999999999999999999", 422),
        ("/models/global/%27%3B--", 422),
        ("/devices?limit=0", 422),
        ("/devices?after=%00", 400),
        ("/devices/a%00b", 404),
        ("/devices/%FF%FE", 404),
        ("/no/such/route", 404),
    ],
)
def test_a_bad_parameter_is_a_json_4xx_never_a_500(api, path, status):
    reply = api.get(path)
    assert reply.status == status, reply.body
    assert reply.body["detail"]
