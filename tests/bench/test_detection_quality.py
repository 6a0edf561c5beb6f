from pathlib import Path

import pytest

from bench.detection_quality import (
    alert_score,
    average_precision,
    confusion,
    false_alarms_by_device,
    fleet_labels,
    main,
    roc_auc,
    spread_line,
)
from bench.fleet import generate_fleet


def test_roc_auc_by_hand() -> None:
    # positives 0.9 and 0.4 against negatives 0.8, 0.4, 0.1: pairs won 1+1+1, 0+0.5+1 → 4.5 of 6
    assert roc_auc([(0.9, 1), (0.8, 0), (0.4, 1), (0.4, 0), (0.1, 0)]) == pytest.approx(4.5 / 6)
    assert roc_auc([(0.3, 0), (0.2, 0)]) is None  # no anomalous reading: undefined


def test_average_precision_by_hand() -> None:
    # flagging from the top: 0.9 (1 of 1 right), 0.8 (wrong), 0.7 (2 of 3 right): (1 + 2/3) / 2
    assert average_precision([(0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)]) == pytest.approx(5 / 6)
    # a tie is flagged at once: 0.5 and 0.5 together give 1 of 2 right for the one positive
    assert average_precision([(0.5, 1), (0.5, 0)]) == pytest.approx(0.5)
    assert average_precision([(0.5, 0)]) is None


def test_confusion_reports_the_false_alarm_rate_beside_f1() -> None:
    truth = {("d", str(i)): int(i < 2) for i in range(10)}  # 2 anomalous readings, 8 normal
    rows = [{"device_id": "d", "timestamp": str(i)} for i in range(10)]
    everything = confusion(rows, truth, lambda r: True)
    # flagging everything: recall 1, precision 0.2, F1 1/3, and every normal reading a false alarm
    assert (everything["precision"], everything["recall"], everything["false_alarm_rate"]) == (0.2, 1.0, 1.0)
    assert everything["f1"] == pytest.approx(1 / 3)
    one = confusion(rows, truth, lambda r: r["timestamp"] in ("0", "5"))
    assert (one["precision"], one["recall"], one["false_alarm_rate"]) == (0.5, 0.5, 1 / 8)


def test_alert_score_holds_the_flags_after_an_incident_s_alert_below_the_threshold() -> None:
    alert = {"score": 0.8, "is_anomaly": True, "alert": True, "threshold": 0.5}
    inside = {"score": 0.8, "is_anomaly": True, "alert": False, "threshold": 0.5}
    quiet = {"score": 0.3, "is_anomaly": False, "alert": False, "threshold": 0.5}
    assert alert_score(alert) == 0.8
    assert 0.49999 < alert_score(inside) < 0.5
    assert alert_score(quiet) == 0.3


def test_a_fleet_table_from_two_real_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fleet.jsonl"
    stats = generate_fleet(path, devices=60, rows_per_device=400, seed=3, anomaly_rate=0.003)
    assert len(fleet_labels(path)) == stats.records and sum(fleet_labels(path).values()) == stats.anomalous_records

    main(["--fleet", str(path), "--label-delay", "20"])

    printed = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in printed[2:] if line.startswith("|")]
    assert printed[-1].startswith("False-alarm rate of `is_anomaly` per device (60 devices): median ")
    by_rule = {(row[0].lstrip("| "), row[1]): [cell.strip(" |") for cell in row[2:]] for row in rows}
    assert list(by_rule) == [
        ("FLEAD `is_anomaly` (calibrated score, incidents)", "none"),
        ("z-rule (\\|z\\| ≥ 2.5)", "none"),
        ("logistic model (probability > 0.5)", "20 readings late"),
    ]
    calibrated = by_rule[("FLEAD `is_anomaly` (calibrated score, incidents)", "none")]
    z_rule = by_rule[("z-rule (\\|z\\| ≥ 2.5)", "none")]
    # label-free, the calibrated score flags far fewer normal readings than the z-rule, and ranks better
    assert float(calibrated[4].rstrip("%")) < float(z_rule[4].rstrip("%")) / 2
    assert float(calibrated[5]) > float(z_rule[5])


def test_false_alarms_are_counted_per_device_over_its_normal_readings() -> None:
    truth = {("a", "1"): 0, ("a", "2"): 0, ("a", "3"): 1, ("b", "1"): 0, ("b", "2"): 0}
    rows = [
        {"device_id": "a", "timestamp": "1", "is_anomaly": True},
        {"device_id": "a", "timestamp": "2", "is_anomaly": False},
        {"device_id": "a", "timestamp": "3", "is_anomaly": True},  # a true anomaly: not a false alarm
        {"device_id": "b", "timestamp": "1", "is_anomaly": False},
        {"device_id": "b", "timestamp": "2", "is_anomaly": False},
    ]
    assert false_alarms_by_device(rows, truth) == [0.0, 0.5]
    assert spread_line([0.0, 0.5]).endswith("median 50.00%, 90th percentile 50.00%, highest 50.00%.")
