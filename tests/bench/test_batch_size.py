from pathlib import Path

import pytest

from bench.batch_size import markdown
from bench.fleet import generate_fleet
from bench.run import flead_replay


def test_the_table_gives_each_size_its_medians_and_every_pair_s_ratio() -> None:
    found = {1000: [(100.0, 150.0), (120.0, 150.0), (90.0, 180.0)], 4000: [(200.0, 300.0)]}
    quality = {
        1000: ({"f1": 0.4594, "false_alarm_rate": 0.0117}, 68.04),
        4000: ({"f1": 0.5, "false_alarm_rate": 0.02}, 70.0),
    }

    table = markdown(found, quality).splitlines()

    assert table[2] == "| 1,000 | 100 | 150 | 1.50 (1.50, 1.25, 2.00) | 0.459 | 1.17% | 68.0 |"
    assert table[3] == "| 4,000 | 200 | 300 | 1.50 (1.50) | 0.500 | 2.00% | 70.0 |"


def test_a_replay_takes_the_settings_it_is_given(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.jsonl"
    stats = generate_fleet(fleet, devices=20, rows_per_device=30, seed=2)

    assert flead_replay(fleet, 1, {"FLEAD_BATCH_SIZE": "7"})["records"] == stats.records
    with pytest.raises(RuntimeError, match="FLEAD_BATCH_SIZE"):
        flead_replay(fleet, 1, {"FLEAD_BATCH_SIZE": "0"})
