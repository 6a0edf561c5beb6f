"""The README's run command, exactly as written, replays the bundled data end to end."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import orjson

from tests.report.test_html import CHROMIUM, chromium

REPO = Path(__file__).resolve().parents[1]


def readme_command(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```\n(.+?)\n```", (REPO / "README.md").read_text(), re.S)
    assert match, f"README.md has no {marker}"
    return match.group(1)


def test_the_run_command_replays_the_bundled_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEAD_", "VIRTUAL_ENV"))}
    env.update(FLEAD_OUT_DIR=str(tmp_path), FLEAD_PROGRESS_SECONDS="1")
    result = subprocess.run(
        readme_command("run-command"), shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "flead: read " in result.stdout  # progress while it runs
    assert "flead: summary" in result.stdout
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith(f"flead: report ({tmp_path / 'report.html'})"), last_line

    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["rows_read"] == 93_753  # every row of the 13 bundled series
    assert summary["rows_processed"] == 93_753
    assert summary["rows_rejected"] == 0
    assert summary["anomalies"]["critical"] > 0
    assert summary["global_versions"] >= 1
    for name in ("anomalies", "local_models", "federated_models", "model_evaluations", "dead_letters"):
        assert (tmp_path / f"{name}.jsonl").exists(), name
    assert (tmp_path / "federated_models.jsonl").read_bytes().count(b"\n") == summary["global_versions"]
    report = (tmp_path / "report.html").read_text()
    assert len(report.encode()) < 10_000_000
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", report), "the report must not load anything"
    bundled = {
        path.relative_to(REPO / "data" / "nab").with_suffix("").as_posix()
        for path in (REPO / "data" / "nab").rglob("*.csv")
    }
    assert len(bundled) == 13 and all(device in report for device in bundled)
    if CHROMIUM is not None:  # .ci/run installs it; tests/report says so when it is missing
        dom, log = chromium((tmp_path / "report.html").as_uri(), "--dump-dom")
        assert [line for line in log.splitlines() if "CONSOLE" in line] == []
        assert 'data-rendered="3"' in dom  # the three charts drawn
        assert re.search(r'<div id="errors"[^>]*>(.*?)</div>', dom, re.S).group(1) == ""


def test_the_test_command_is_what_ci_runs():
    assert readme_command("test-command") == "bash .ci/run"
