from pathlib import Path

import pytest

from dataflows.config import BUNDLED_DATA, ConfigError, load_settings, settings_table

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_defaults_replay_the_bundled_data():
    settings = load_settings({})
    assert settings.input_path == BUNDLED_DATA
    assert settings.out_dir == Path("flead-out")
    detection = settings.detection
    assert (detection.window, detection.z_warning, detection.z_critical) == (100, 2.5, 3.0)
    assert (detection.round_rows, detection.round_seconds) == (50, 60.0)
    assert (settings.fedavg_updates, settings.limits.label_key, settings.limits.fields) == (20, "label", None)
    assert settings.scores is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FLEAD_WINDOW", "ten", "FLEAD_WINDOW='ten': is not a number"),
        ("FLEAD_WINDOW", "0", "FLEAD_WINDOW='0': must be a whole number of at least 1"),
        ("FLEAD_Z_WARNING", "-1", "FLEAD_Z_WARNING='-1'"),
        ("FLEAD_Z_CRITICAL", "2", "FLEAD_Z_CRITICAL=2.0 must not be below FLEAD_Z_WARNING=2.5"),
        ("FLEAD_SCORES", "maybe", "FLEAD_SCORES='maybe': must be true or false"),
        ("FLEAD_SCORE_THRESHOLD", "1.5", "FLEAD_SCORE_THRESHOLD='1.5'"),
        ("FLEAD_INPUT", "/no/such/place", "FLEAD_INPUT='/no/such/place': no such file or directory"),
        ("FLEAD_WINDOWS", "100", "unknown setting FLEAD_WINDOWS"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(name, value, message):
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})
    assert message in str(raised.value)


def test_an_input_directory_without_telemetry_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"FLEAD_INPUT=.*no \.jsonl, \.ndjson or \.csv files"):
        load_settings({"FLEAD_INPUT": str(tmp_path)})


def test_fields_are_a_comma_separated_list():
    assert load_settings({"FLEAD_FIELDS": "temp, rpm"}).limits.fields == frozenset({"temp", "rpm"})


def test_the_operations_guide_documents_every_setting_with_its_default():
    assert settings_table() in OPERATIONS.read_text()


def test_a_bad_setting_stops_the_real_command_with_a_message_naming_it(tmp_path):
    import subprocess

    from tests.flead_runs import REPO, environment, flead_command

    env = environment(REPO / "data" / "nab", tmp_path, FLEAD_WINDOW="ten")
    result = subprocess.run(flead_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "flead: bad setting: FLEAD_WINDOW='ten': is not a number" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_api_s_settings_may_share_the_dataflow_s_environment():
    """One env file or ConfigMap for both: the dataflow leaves FLEAD_API_* to the API (api/settings.py)."""
    settings = load_settings({"FLEAD_API_TOKENS": "a-token-of-sixteen-chars", "FLEAD_API_BIND": "0.0.0.0:8000"})
    assert settings.input_path == BUNDLED_DATA
