"""Settings for dataflow tests."""

from __future__ import annotations

from pathlib import Path

from dataflows.config import Settings, load_settings


def settings_for(input_path: Path, out_dir: Path, **overrides: str) -> Settings:
    environ = {"FLEAD_INPUT": str(input_path), "FLEAD_OUT_DIR": str(out_dir), "FLEAD_PROGRESS_SECONDS": "0"}
    environ.update({f"FLEAD_{name.upper()}": value for name, value in overrides.items()})
    return load_settings(environ)
