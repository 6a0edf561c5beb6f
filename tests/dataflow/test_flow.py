"""The whole dataflow in one worker through ``bytewax.testing.run_main``."""

from __future__ import annotations

import orjson
import pytest
from bytewax.testing import run_main

from dataflows.flead import build_flow, topic_records
from tests.dataflow.conftest import settings_for


def read_rows(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def run(nab_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("flow-out")
    run_main(build_flow(settings_for(nab_sample, out, scores="1")))
    return out, orjson.loads((out / "summary.json").read_bytes())


def test_nothing_disappears(run):
    _, summary = run
    assert summary["rows_read"] == 4032 + 4032 + 1882 + 3  # the three files' rows and one bad row each
    assert summary["rows_rejected"] == 3
    assert summary["rows_processed"] + summary["rows_rejected"] == summary["rows_read"]
    assert summary["rows_unaccounted"] == 0


def test_the_summary_weighs_the_updates_against_the_readings_bytes(run, nab_sample):
    """The readings' bytes are the CSV rows' (their line ends counted as one byte); the updates'
    are edge clients' messages, about 900 bytes each here."""
    _, summary = run
    expected = 0
    for file in nab_sample.rglob("*.csv"):
        data = file.read_bytes().split(b"\n", 1)[1]
        expected += len(data) - data.count(b"\r\n")
    bandwidth = summary["bandwidth"]
    assert bandwidth["reading_bytes"] == expected
    assert 700 * summary["local_updates"] < bandwidth["update_bytes"] < 1100 * summary["local_updates"]
    assert bandwidth["update_share"] == round(bandwidth["update_bytes"] / expected, 4)


def test_rejected_rows_are_dead_letters_with_a_reason(run):
    out, _ = run
    letters = read_rows(out / "dead_letters.jsonl")
    assert [letter["reason"] for letter in letters] == ["invalid_value"] * 3
    assert all("not-a-number" in letter["payload"] and letter["source"].startswith("file:") for letter in letters)


def test_every_processed_reading_has_a_score_row(run):
    out, summary = run
    scores = read_rows(out / "scores.jsonl")
    assert len(scores) == summary["rows_processed"]
    assert all(0.0 <= row["score"] <= 1.0 for row in scores)
    assert {row["label"] for row in scores} == {0, 1}


def test_anomalies_carry_severity_signed_z_and_explanation(run):
    out, summary = run
    anomalies = read_rows(out / "anomalies.jsonl")
    by_severity = {}
    for row in anomalies:
        by_severity[row["severity"]] = by_severity.get(row["severity"], 0) + 1
    assert by_severity == summary["anomalies"]
    critical = [row for row in anomalies if row["severity"] == "critical"]
    warning = [row for row in anomalies if row["severity"] == "warning"]
    # critical: at least 100 times rarer than the threshold's tail probability (score ≥ 0.6845 for 0.5);
    # warning: at the threshold, or in an open incident above its release level (0.2076)
    assert critical and all(row["score"] >= 0.6845 for row in critical)
    assert warning and all(0.2076 <= row["score"] < 0.6845 for row in warning)
    assert any(row["score"] < 0.5 for row in warning)
    assert any(row["z_score"] < 0 for row in anomalies) and any(row["z_score"] > 0 for row in anomalies)
    # every anomaly says which evidence moved, on which field, and how rare it was
    assert all(row["explanation"] and row["explanation"][0]["field"] == "value" for row in anomalies)
    assert all(row["explanation"][0]["log10_tail"] < -1 for row in anomalies)
    assert set(anomalies[0]) == {
        "device_id",
        "timestamp",
        "values",
        "field",
        "z_score",
        "severity",
        "score",
        "global_version",
        "explanation",
    }


def test_local_updates_and_global_versions(run):
    out, summary = run
    updates = read_rows(out / "local_models.jsonl")
    models = read_rows(out / "federated_models.jsonl")
    assert len(updates) == summary["local_updates"] > 0
    assert sum(u["samples_processed"] for u in updates) == summary["rows_processed"]  # every round closes
    assert [m["global_version"] for m in models] == list(range(1, summary["global_versions"] + 1))
    assert summary["global_versions"] == summary["local_updates"] // 20
    assert models and all(m["num_updates"] == 20 and 1 <= m["num_devices"] <= 3 for m in models)
    per_device: dict[str, list[int]] = {}
    for update in updates:
        per_device.setdefault(update["device_id"], []).append(update["model_version"])
    assert all(versions == list(range(1, len(versions) + 1)) for versions in per_device.values())


def test_global_models_reach_the_devices_through_the_loopback(run):
    out, _ = run
    updates = read_rows(out / "local_models.jsonl")
    base_versions = [u["global_version"] for u in updates]
    assert base_versions[0] == 0
    assert max(base_versions) >= 1
    # a device's rounds start from ever newer global models
    for device in {u["device_id"] for u in updates}:
        versions = [u["global_version"] for u in updates if u["device_id"] == device]
        assert versions == sorted(versions)


def test_live_evaluation_rows_count_the_labelled_readings_each_global_version_scored(run):
    """Counted again from the score rows: each labelled reading that a global model scored is a
    true/false positive/negative of that model's version (positive: its score above 0.5), in a
    window from the first to the last such reading."""
    out, summary = run
    expected: dict[int, dict] = {}
    for score in read_rows(out / "scores.jsonl"):
        if score["label"] is None or score["global_score"] is None:
            continue
        counts = expected.setdefault(score["global_version"], {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "times": []})
        flagged, anomalous = score["global_score"] > 0.5, score["label"] == 1
        counts[("t" if flagged == anomalous else "f") + ("p" if flagged else "n")] += 1
        counts["times"].append(score["timestamp"])
    assert len(expected) >= 2, "fewer than two global versions scored labelled readings: nothing to compare"
    rows = {row["global_version"]: row for row in read_rows(out / "model_evaluations.jsonl")}
    assert sorted(rows) == sorted(expected)
    for version, counts in expected.items():
        row = rows[version]
        assert {name: row[name] for name in ("tp", "fp", "tn", "fn")} == {
            k: counts[k] for k in ("tp", "fp", "tn", "fn")
        }
        assert row["n"] == sum(counts[k] for k in ("tp", "fp", "tn", "fn"))
        assert (row["window_start"], row["window_end"]) == (min(counts["times"]), max(counts["times"])), version
    assert sum(row["n"] for row in rows.values()) == summary["live_evaluation"]["n"]


def test_a_fresh_run_replaces_the_outputs_of_the_last_one(run, nab_sample, tmp_path):
    _out, _ = run
    (tmp_path / "stale").mkdir()
    for name in ("dead_letters.jsonl", "scores.jsonl", "summary.json"):
        (tmp_path / "stale" / name).write_text("old\n")
    csv = nab_sample / "realKnownCause" / "rogue_agent_key_hold.csv"
    run_main(build_flow(settings_for(csv, tmp_path / "stale")))
    assert (tmp_path / "stale" / "dead_letters.jsonl").read_text().count("\n") == 1
    assert not (tmp_path / "stale" / "scores.jsonl").exists()
    assert orjson.loads((tmp_path / "stale" / "summary.json").read_bytes())["rows_read"] == 1883


def test_rows_go_to_their_topics_keyed_by_device_version_or_source(nab_sample, tmp_path):
    settings = settings_for(nab_sample, tmp_path, kafka_brokers="127.0.0.1:9")
    records = topic_records(settings.kafka)
    anomaly, model = {"device_id": "pump-1", "z_score": 4.2}, {"global_version": 7, "intercept": -1.5}
    source = "kafka:edge-iiot-stream:0:12"
    letter = {"source": source, "reason": "invalid_json"}
    assert records(("anomalies", [anomaly])) == [("anomalies", b"pump-1", orjson.dumps(anomaly))]
    assert records(("local_models", [anomaly])) == [("local-model-updates", b"pump-1", orjson.dumps(anomaly))]
    assert records(("federated_models", [model])) == [("global-model-updates", b"7", orjson.dumps(model))]
    assert records(("dead_letters", [letter])) == [("flead-dead-letters", source.encode(), orjson.dumps(letter))]
    assert records(("model_evaluations", [model])) is None
    assert records(("scores", [anomaly])) is None


def test_readings_beyond_the_device_limit_are_dead_letters_and_counted(nab_sample, tmp_path):
    run_main(build_flow(settings_for(nab_sample, tmp_path, shards="1", max_devices_per_shard="1")))
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["rows_read"] == 4032 + 4032 + 1882 + 3
    # the first device of the one shard is processed; the other two devices' rows are refused
    by_reason = summary["rejected_by_reason"]
    assert set(by_reason) == {"device_limit", "invalid_value"} and by_reason["invalid_value"] == 3
    assert summary["rows_processed"] in (4032, 1882)
    assert summary["rows_processed"] + summary["rows_rejected"] == summary["rows_read"]
    letters = [row for row in read_rows(tmp_path / "dead_letters.jsonl") if row["reason"] == "device_limit"]
    assert len(letters) == by_reason["device_limit"]
    assert {row["source"] for row in letters} == {"device-stage"}  # CSV rows are decoded at the source
    assert all("its shard is full: 1 live devices" in row["detail"] for row in letters)
