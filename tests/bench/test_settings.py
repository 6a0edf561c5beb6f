"""``--set``: a setting named on a benchmark's command line reaches its replays."""

import argparse

import pytest

from bench.federation_attacks import replay
from bench.fleet import generate_fleet
from bench.settings import setting


def test_a_setting_is_a_flead_name_and_a_value():
    assert setting("FLEAD_ROUND_ROWS=20") == ("FLEAD_ROUND_ROWS", "20")
    assert setting("FLEAD_FIELDS=") == ("FLEAD_FIELDS", "")
    for text in ("ROUND_ROWS=20", "FLEAD_ROUND_ROWS", " FLEAD_ROUND_ROWS=20"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not FLEAD_NAME=VALUE"):
            setting(text)


def test_the_replays_take_the_setting_and_a_rows_own_settings_win(tmp_path):
    fleet = tmp_path / "fleet.jsonl"
    generate_fleet(fleet, devices=12, rows_per_device=60, seed=3)
    rows_only = {"FLEAD_ROUND_SECONDS": "0"}
    updates = {rows: replay(fleet, rows_only, {"FLEAD_ROUND_ROWS": str(rows)})[2]["local_updates"] for rows in (10, 30)}
    assert updates == {10: 12 * 6, 30: 12 * 2}
    overruled = replay(fleet, {**rows_only, "FLEAD_ROUND_ROWS": "30"}, {"FLEAD_ROUND_ROWS": "10"})[2]
    assert overruled["local_updates"] == 12 * 2
