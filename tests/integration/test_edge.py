"""Edge clients against a real broker: what they send, what they never send, and what the
dataflow's federation takes from them (issue 15, points 4 and 6)."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from operators.messages import parse_timestamp
from tests.flead_runs import REPO, anomaly_keys, environment, run
from tests.integration.test_kafka import (
    consume,
    items_per_worker,
    produce,
    rows,
    run_from_kafka,
    run_from_kafka_scraped,
    topics_env,
)

pytestmark = pytest.mark.integration

SERIES = REPO / "data" / "nab" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
OTHER_SERIES = REPO / "data" / "nab" / "artificialWithAnomaly" / "art_daily_jumpsdown.csv"
ROUNDS = {"FLEAD_ROUND_SECONDS": "0"}
"""Rounds of 50 readings (the NAB series report every 5 minutes: 60 s rounds would hold two)."""


def run_edge(input_path: Path | str, out_dir: Path, topics: dict[str, str], stdin: bytes | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "dataflows.edge"],
        cwd=REPO,
        env=environment(input_path, out_dir, **topics, **ROUNDS),
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rb"bandwidth +updates are [0-9.]+ % of the readings they stand for", result.stdout)
    return orjson.loads((out_dir / "edge-summary.json").read_bytes())


@pytest.fixture(scope="module")
def edge_run(kafka, tmp_path_factory):
    """The edge client on one NAB series, alone: its topics, its summary."""
    topics = topics_env(kafka)
    summary = run_edge(SERIES, tmp_path_factory.mktemp("edge"), topics)
    return topics, summary


def numbers_in(value) -> list[float]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers_in(item)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_the_edge_client_sends_its_updates_and_anomalies_and_never_its_readings(kafka, edge_run):
    topics, summary = edge_run
    assert (summary["rows_read"], summary["rows_processed"], summary["rows_rejected"]) == (4032, 4032, 0)
    assert summary["local_updates"] == math.ceil(4032 / 50)
    updates = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"]))
    anomalies = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_ANOMALIES"]))
    assert len(updates) == summary["local_updates"] and len(anomalies) == summary["anomalies"] > 0
    assert all(u["origin"] == "edge" and set(u["base"]) == {"weights", "intercept"} for u in updates)
    assert sum(u["samples_processed"] for u in updates) == 4032
    sent = {
        m: sum(len(orjson.dumps(r)) for r in found) for m, found in (("updates", updates), ("anomalies", anomalies))
    }
    assert summary["bytes_sent"] == sent

    # No message on any topic holds a reading, but for the anomalies' own values.
    with SERIES.open() as handle:
        readings = {(parse_timestamp(row["timestamp"]), float(row["value"])) for row in csv.DictReader(handle)}
    flagged = {(parse_timestamp(a["timestamp"]), a["values"]["value"]) for a in anomalies}
    assert flagged <= readings
    kept_private = {value for _, value in readings - flagged}
    assert consume(kafka.bootstrap, topics["FLEAD_TOPIC_TELEMETRY"]) == []
    for name in ("FLEAD_TOPIC_LOCAL_UPDATES", "FLEAD_TOPIC_GLOBAL_MODELS", "FLEAD_TOPIC_DEAD_LETTERS"):
        for message in rows(consume(kafka.bootstrap, topics[name])):
            assert not kept_private & set(numbers_in(message)), name
    for anomaly in anomalies:
        assert not kept_private & set(numbers_in(anomaly))


def test_the_edge_clients_anomalies_are_those_of_the_dataflow_on_the_same_stream(kafka, edge_run, tmp_path):
    """Same settings, no global model on the topic (the fleet's normal model is off): the
    device stage is the same code, so the same anomalies with the same scores."""
    topics, _ = edge_run
    run(SERIES, tmp_path, **ROUNDS)
    edge = Counter(
        (a["device_id"], a["timestamp"], a["severity"], a["score"])
        for a in rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_ANOMALIES"]))
    )
    assert edge and edge == anomaly_keys(tmp_path)


def test_the_edge_client_reads_standard_input(kafka, tmp_path):
    lines = b"".join(
        orjson.dumps({"device_id": "edge-pump", "timestamp": 1_700_000_000 + 300 * i, "data": math.sin(i)}) + b"\n"
        for i in range(120)
    )
    topics = topics_env(kafka)
    summary = run_edge("-", tmp_path, topics, stdin=lines + b"{not json\n")
    assert (summary["rows_read"], summary["rows_processed"], summary["rows_rejected"]) == (121, 120, 1)
    updates = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"]))
    assert [u["samples_processed"] for u in updates] == [50, 50, 20]
    assert consume(kafka.bootstrap, topics["FLEAD_TOPIC_DEAD_LETTERS"]) == []  # a bad reading is a reading too


def bad_updates(good: list[dict]) -> dict[str, bytes]:
    """Crafted from a trained honest update: each reason's bad message."""
    trained = max(good, key=lambda u: sum(w * w for w in u["weights"].values()))
    assert math.sqrt(sum(w * w for w in trained["weights"].values())) * 99 > 20, "too small to be scaled past the bound"
    scaled = {
        **trained,
        "weights": {k: 100 * w for k, w in trained["weights"].items()},
        "intercept": 100 * trained["intercept"],
    }
    with_nan = json.dumps({**trained, "weights": {**trained["weights"], "abs_z": float("nan")}}).encode()
    wider = {**trained, "weights": {**trained["weights"], "temperature_z": 0.1}}
    ahead = {**trained, "global_version": 999}
    return {
        "update_norm": orjson.dumps(scaled),
        "non_finite_value": with_nan,
        "wrong_features": orjson.dumps(wider),
        "unknown_base_version": orjson.dumps(ahead),
        "invalid_json": b'{"origin": "edge", "weights": ',
    }


def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value, b"edge")
    assert producer.flush(10) == 0


def final_weights(bootstrap: str, topics: dict[str, str]) -> tuple[int, dict]:
    models = rows(consume(bootstrap, topics["FLEAD_TOPIC_GLOBAL_MODELS"]))
    newest = max(models, key=lambda m: m["global_version"])
    return len(models), {"weights": newest["weights"], "intercept": newest["intercept"], "samples": newest["samples"]}


def test_bad_edge_updates_are_dead_letters_and_never_reach_the_aggregate(kafka, edge_run, tmp_path):
    """Only edge updates feed FedAvg here, in the order of their topic, so the federation is
    deterministic: with the bad updates among the good ones, its final weights are exactly
    those of the good ones alone."""
    topics, _ = edge_run
    good = [m.value() for m in consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"])]
    bad = bad_updates([orjson.loads(g) for g in good])
    own = orjson.loads(good[-1])
    del own["origin"]  # as the dataflow's own devices' updates: not read back
    mixed = [*good[:40], *bad.values(), orjson.dumps(own), *good[40:]]

    clean_topics = topics_env(kafka, FLEAD_EDGE_UPDATES="true")
    send(kafka.bootstrap, clean_topics["FLEAD_TOPIC_LOCAL_UPDATES"], good)
    run_from_kafka(tmp_path / "clean", clean_topics)
    attacked_topics = topics_env(kafka, FLEAD_EDGE_UPDATES="true")
    send(kafka.bootstrap, attacked_topics["FLEAD_TOPIC_LOCAL_UPDATES"], mixed)
    summary = run_from_kafka(tmp_path / "attacked", attacked_topics)

    letters = rows(consume(kafka.bootstrap, attacked_topics["FLEAD_TOPIC_DEAD_LETTERS"]))
    assert sorted(letter["reason"] for letter in letters) == sorted(bad)
    assert summary["rows_rejected"] == len(bad)
    assert consume(kafka.bootstrap, clean_topics["FLEAD_TOPIC_DEAD_LETTERS"]) == []
    versions, clean = final_weights(kafka.bootstrap, clean_topics)
    assert versions == len(good) // 20 > 0
    assert final_weights(kafka.bootstrap, attacked_topics) == (versions, clean)
    assert any(clean["weights"].values())


def test_the_dataflow_federates_edge_updates_beside_its_own_devices_counting_each_once(kafka, edge_run, tmp_path):
    """The dataflow publishes its own devices' updates to the topic it reads edge updates
    from; it reads them back (its input emits them) and leaves them out, so a version is
    made every 20 updates of its own devices and the edge client's together."""
    topics, edge_summary = edge_run
    good = [m.value() for m in consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"])]
    fleet_topics = topics_env(kafka, FLEAD_EDGE_UPDATES="true", **ROUNDS)
    produce(OTHER_SERIES, tmp_path / "producer", fleet_topics)
    send(kafka.bootstrap, fleet_topics["FLEAD_TOPIC_LOCAL_UPDATES"], good)
    summary, metrics = run_from_kafka_scraped(tmp_path / "flead", fleet_topics)
    own = summary["local_updates"]
    assert own == math.ceil(4032 / 50)
    # its own updates were read back: all but perhaps the last, closed at the end of the input
    assert sum(items_per_worker(metrics, "flead.edge_updates_in").values()) in (len(good) + own - 1, len(good) + own)
    assert metrics["flead_edge_updates_total"] == len(good) == edge_summary["local_updates"]
    assert summary["global_versions"] == (own + len(good)) // 20  # not (2 × own + edge) // 20
    models = rows(consume(kafka.bootstrap, fleet_topics["FLEAD_TOPIC_GLOBAL_MODELS"]))
    assert sum(m["num_updates"] for m in models) == 20 * summary["global_versions"]
    assert max(m["num_devices"] for m in models) == 2
