"""Running the real ``python -m bytewax.run`` commands from tests, and comparing their results."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]


def flead_command(*args: str, dataflow: str = "dataflows.flead") -> list[str]:
    return [sys.executable, "-m", "bytewax.run", dataflow, *args]


def environment(input_path: Path | str, out_dir: Path, **extra: str) -> dict[str, str]:
    """The settings of a test run. The fleet's normal model is off (``FLEAD_NORMAL_PRIOR_READINGS=0``)
    unless ``extra`` turns it on: with it, a device's scores depend on when global models reach
    it, which differs between the Kafka runs, inputs and restarts that these tests compare."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
    env.update(
        {
            "FLEAD_INPUT": str(input_path),
            "FLEAD_OUT_DIR": str(out_dir),
            "FLEAD_PROGRESS_SECONDS": "0",
            "FLEAD_NORMAL_PRIOR_READINGS": "0",
        }
    )
    env.update(extra)
    return env


def run(input_path: Path, out_dir: Path, *args: str, **extra: str) -> dict:
    subprocess.run(
        flead_command(*args),
        cwd=REPO,
        env=environment(input_path, out_dir, **extra),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return orjson.loads((out_dir / "summary.json").read_bytes())


def anomaly_keys(out_dir: Path) -> Counter[tuple[str, str, str, float]]:
    """How many times each anomaly (device, time, severity, score) is in a run's output: a
    count, not a set, so that an anomaly written twice differs from one written once."""
    rows = (orjson.loads(line) for line in (out_dir / "anomalies.jsonl").read_bytes().splitlines())
    return Counter((row["device_id"], row["timestamp"], row["severity"], row["score"]) for row in rows)


def anomaly_rows_keys(anomaly_rows: Iterable[dict]) -> Counter[tuple[str, str, str]]:
    """How many times each anomaly (device, time, severity) is among ``anomaly_rows``: a count,
    not a set, so that an anomaly delivered twice differs from one delivered once."""
    return Counter((r["device_id"], r["timestamp"], r["severity"]) for r in anomaly_rows)


def assert_same_anomalies(out_dir: Path, reference_out: Path) -> None:
    """The run in ``out_dir`` wrote exactly the reference run's anomalies, each as often; the
    reference has some (two empty outputs would be "the same")."""
    reference = anomaly_keys(reference_out)
    assert reference, f"the reference run in {reference_out} wrote no anomalies: the comparison would prove nothing"
    found = anomaly_keys(out_dir)
    assert found == reference, (
        f"missing: {list((reference - found).items())[:5]}, extra or repeated: {list((found - reference).items())[:5]}"
    )


def comparable(summary: dict) -> dict:
    anomalies = summary["anomalies"]
    return {
        "rows_read": summary["rows_read"],
        "rows_processed": summary["rows_processed"],
        "rows_rejected": summary["rows_rejected"],
        "warning": anomalies.get("warning", 0),
        "critical": anomalies.get("critical", 0),
        "local_updates": summary["local_updates"],
        "global_versions": summary["global_versions"],
    }
