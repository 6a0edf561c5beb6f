"""Small real inputs for dataflow tests, cut from the bundled NAB data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dataflows.config import Settings, load_settings

NAB = Path(__file__).resolve().parents[2] / "data" / "nab"
SAMPLE_FILES = [
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realKnownCause/rogue_agent_key_hold.csv",
]


@pytest.fixture(scope="session")
def nab_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three NAB series (~10k labelled rows) in the bundled layout, with one bad row each."""
    root = tmp_path_factory.mktemp("nab-sample")
    for name in SAMPLE_FILES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / name, target)
        with target.open("a") as handle:
            handle.write("2014-12-31 23:59:59,not-a-number,0\n")
    return root


def settings_for(input_path: Path, out_dir: Path, **overrides: str) -> Settings:
    environ = {"FLEAD_INPUT": str(input_path), "FLEAD_OUT_DIR": str(out_dir), "FLEAD_PROGRESS_SECONDS": "0"}
    environ.update({f"FLEAD_{name.upper()}": value for name, value in overrides.items()})
    return load_settings(environ)
