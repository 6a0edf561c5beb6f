import gc
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.fleet import FleetStats, generate_fleet
from bench.references import flead_logic_loop, floor_loop, pyflink_job, river_loop
from bench.references.device_logic import FEDAVG_EVERY, WARMUP, WINDOW, FedAvg, Model, Window
from dataflows.garbage_collection import ALLOCATIONS_PER_COLLECTION


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetStats]:
    path = tmp_path_factory.mktemp("fleet") / "fleet.jsonl"
    return path, generate_fleet(path, devices=120, rows_per_device=150, seed=5)


def test_floor_loop_counts(fleet: tuple[Path, FleetStats]) -> None:
    path, stats = fleet
    result = floor_loop.run(path)
    assert result["records"] == stats.records
    assert 0 < result["anomalies"] < 0.2 * stats.records
    assert result["seconds"] > 0


def test_floor_loop_flags_a_field_beyond_2_5_deviations_of_the_window_before_it(tmp_path: Path) -> None:
    """By hand: after 10, 12, 10, 12 (mean 11, deviation 1) a 20 is 9 deviations out: flagged
    (against a window that held it too, it would be 1.9); the 11 after it is not. Device "b"
    does the same in its field "p" while "t" never moves; device "c" ends at 13.4, 2.4
    deviations out: not flagged. Each field counts on its own."""
    readings = {"a": [10.0, 12.0, 10.0, 12.0, 20.0, 11.0], "c": [10.0, 12.0, 10.0, 12.0, 13.4]}
    lines = [
        {"device_id": device, "timestamp": t, "data": v} for device, vs in readings.items() for t, v in enumerate(vs)
    ]
    lines += [{"device_id": "b", "timestamp": t, "data": {"t": 5.0, "p": v}} for t, v in enumerate(readings["a"])]
    path = tmp_path / "hand.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    result = floor_loop.run(path)
    assert (result["records"], result["anomalies"]) == (17, 2)


def test_river_loop_counts(fleet: tuple[Path, FleetStats]) -> None:
    path, stats = fleet
    result = river_loop.run(path)
    assert result["records"] == stats.records
    assert result["devices"] == stats.devices
    assert 0 < result["anomalies"] < 0.2 * stats.records
    # A device reports every 10 s, so the 60-second rule closes its rounds after 7 readings.
    assert result["local_updates"] == stats.devices * (150 // 7)
    assert result["global_versions"] == result["local_updates"] // FEDAVG_EVERY


def test_flead_logic_loop_closes_the_same_rounds_as_the_river_loop(fleet: tuple[Path, FleetStats]) -> None:
    path, stats = fleet
    result = flead_logic_loop.run(path)
    assert result["records"] == stats.records
    assert result["devices"] == stats.devices
    assert result["rejected"] == 0
    assert 0 < result["anomalies"] < 0.2 * stats.records
    assert result["local_updates"] == stats.devices * (150 // 7)
    assert result["global_versions"] == result["local_updates"] // FEDAVG_EVERY


def test_flead_logic_loop_collects_garbage_as_the_dataflow_does_then_as_before(
    fleet: tuple[Path, FleetStats], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = fleet
    during = []
    loop = flead_logic_loop._run

    def recorded(fleet_path: Path | str) -> dict[str, Any]:
        during.append(gc.get_threshold())
        return loop(fleet_path)

    monkeypatch.setattr(flead_logic_loop, "_run", recorded)
    outside = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        flead_logic_loop.run(path)
        assert during == [(ALLOCATIONS_PER_COLLECTION, 10, 10)]
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*outside)


def test_window_z_is_against_the_window_before_the_reading() -> None:
    window = Window(first=1e5)
    readings = [1e5 + 40 * math.sin(i) for i in range(WINDOW + 30)]
    for reading in readings:
        window.push(reading)
    before = readings[-WINDOW:]
    z, _ = window.push(1e5 + 500)
    expected = (1e5 + 500 - statistics.fmean(before)) / statistics.pstdev(before)
    assert z == pytest.approx(expected, rel=1e-6)


def test_window_is_quiet_while_warming_up() -> None:
    window = Window(first=1.0)
    assert [window.push(1.0 + i)[0] for i in range(WARMUP)] == [0.0] * WARMUP
    assert window.push(1000.0)[0] > 3


def test_fedavg_adds_the_sample_weighted_mean_change_every_n_updates() -> None:
    fedavg = FedAvg()
    updates = [(f"d{i % 2}", Model({"abs_z": 0.1 * (i % 2)}, 0.0, 10 * (1 + i % 2))) for i in range(FEDAVG_EVERY)]
    models = [fedavg.add(device_id, update) for device_id, update in updates]
    assert models[:-1] == [None] * (FEDAVG_EVERY - 1)
    model = models[-1]
    assert model is not None and model.version == 1
    # d0 and d1 sent 10 updates each: 100 and 200 samples, changes adding up to 0 and 1.
    assert model.weights["abs_z"] == pytest.approx(200 / 300)
    assert fedavg.changes == {} and fedavg.pending == 0


def test_fedavg_weighs_a_change_from_an_older_version_by_its_staleness() -> None:
    fedavg = FedAvg()
    for _ in range(FEDAVG_EVERY):
        model = fedavg.add("d0", Model({"abs_z": 0.5}, 0.0, 10))  # version 1: abs_z 20 × 0.5
    for _ in range(FEDAVG_EVERY):
        model = fedavg.add("d1", Model({"abs_z": 0.5}, 0.0, 10, version=0))  # learned from version 0
    assert model is not None and model.version == 2
    assert model.weights["abs_z"] == pytest.approx(10 + 10 / 2**0.5)


def test_pyflink_job_imports_without_pyflink() -> None:
    """FLEAD's venv has no PyFlink; the module must import there even if PyFlink were installed."""
    code = "import sys; sys.modules['pyflink'] = None; import bench.references.pyflink_job"  # None: import fails
    result = subprocess.run([sys.executable, "-c", code], cwd=pyflink_job.REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_without_pyflink_the_job_starts_in_the_pyflink_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From FLEAD's venv, main() hands the job to run(), which starts it with bench/.venv-flink's
    python (here a stand-in that prints what it was asked) and adds the child's wall time."""
    fleet = tmp_path / "fleet.jsonl"
    fleet.write_text("")
    monkeypatch.setattr(pyflink_job, "FLINK_PYTHON", tmp_path / "missing" / "python")
    with pytest.raises(FileNotFoundError, match=r"setup_pyflink\.sh"):
        pyflink_job.run(fleet, 2)

    stand_in = tmp_path / "python"
    stand_in.write_text('#!/bin/sh\nprintf \'starting\\n{"records": 40, "argv": "%s"}\\n\' "$*"\n')
    stand_in.chmod(0o755)
    monkeypatch.setattr(pyflink_job, "FLINK_PYTHON", stand_in)
    result = pyflink_job.run(fleet, 2, tuned=False)
    assert result["argv"] == f"-m bench.references.pyflink_job {fleet} 2 --flink-defaults"
    assert result["records"] == 40 and result["wall_seconds"] > 0
    assert result["records_per_second_with_start_up"] == pytest.approx(40 / result["wall_seconds"])

    monkeypatch.setattr(pyflink_job.importlib.util, "find_spec", lambda name: None)
    calls = []
    monkeypatch.setattr(pyflink_job, "run", lambda *args, **kwargs: calls.append((args, kwargs)) or {"records": 1})
    monkeypatch.setattr(pyflink_job, "run_job", lambda *args, **kwargs: pytest.fail("ran the job without PyFlink"))
    pyflink_job.main([str(fleet), "2"])
    assert calls == [((fleet.resolve(), 2), {"tuned": True})]


def test_a_lag_that_keeps_growing_is_not_sustained():
    from bench.kafka_latency import lag_growth, sustained

    rate = 10_000.0
    steady = [3000, 800, 500, 650, 400, 600, 500, 550]  # start-up backlog, then a few batches
    growing = [0, 600, 1200, 1800, 2400, 3000, 3600, 4200]  # 1,200 messages/s more each second
    assert lag_growth(growing, 0.5) == 1200
    assert sustained(steady, rate)
    assert not sustained(growing, rate)
    assert not sustained([12_000] * 8, rate)  # not growing, but more than a second behind
