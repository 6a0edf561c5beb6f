from pathlib import Path

import pytest

from bench.detection_quality import auc_by_period, fleet_labels, main, roc_auc
from bench.fleet import generate_fleet


def test_roc_auc_by_hand() -> None:
    # positives 0.9 and 0.4 against negatives 0.8, 0.4, 0.1: pairs won 1+1+1, 0+0.5+1 → 4.5 of 6
    assert roc_auc([(0.9, 1), (0.8, 0), (0.4, 1), (0.4, 0), (0.1, 0)]) == pytest.approx(4.5 / 6)
    assert roc_auc([(0.3, 0), (0.2, 0)]) is None  # no anomalous reading: undefined


def test_a_fleet_table_from_two_real_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fleet.jsonl"
    stats = generate_fleet(path, devices=100, rows_per_device=150, seed=3, anomaly_rate=0.003)
    assert len(fleet_labels(path)) == stats.records and sum(fleet_labels(path).values()) == stats.anomalous_records

    main(["--fleet", str(path)])

    decisions, over_time = capsys.readouterr().out.split("\n\n")
    rows = [line.split(" | ") for line in decisions.splitlines()[2:]]
    assert len(rows) == 8
    by_rule = {(row[0].lstrip("| "), row[1]): [cell.strip(" |") for cell in row[3:]] for row in rows}
    z_rule = "z-rule alone (\\|z\\| ≥ 2.5)"
    assert by_rule[(z_rule, "labelled")] == by_rule[(z_rule, "label-free")]  # the z-rule does not learn
    assert float(by_rule[(z_rule, "labelled")][3]) > 0.55  # |z| ranks the injected anomalies above normal ones (0.62)
    # learning the labels as they stream in, a device's model soon knows it is inside an anomaly (0.92)
    assert float(by_rule[("local models (score > 0.5)", "labelled")][3]) > 0.8
    assert by_rule[("is_anomaly (z-rule or local model)", "labelled")][3] == "—"
    fifths = [line.strip("| ").split(" | ") for line in over_time.splitlines()[2:]]
    assert [fifth[0] for fifth in fifths] == ["1", "2", "3", "4", "5"]
    assert all(cell == "—" or 0.0 <= float(cell) <= 1.0 for fifth in fifths for cell in fifth[1:])


def test_auc_by_period_follows_event_time_not_row_order() -> None:
    truth = {("d", f"t{i}"): int(i % 2 == 0) for i in range(8)}
    # the first half in time ranks the wrong way round, the second half the right way; rows arrive shuffled
    scores = {0: 0.1, 1: 0.9, 2: 0.2, 3: 0.8, 4: 0.9, 5: 0.1, 6: 0.8, 7: 0.2}
    rows = [{"device_id": "d", "timestamp": f"t{i}", "score": scores[i]} for i in (5, 0, 7, 2, 4, 1, 6, 3)]
    assert auc_by_period(rows, truth, lambda r: r["score"], 2) == [0.0, 1.0]
    assert auc_by_period(rows, truth, lambda r: None, 2) == [None, None]
