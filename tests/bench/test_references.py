import math
import statistics
from pathlib import Path

import pytest

from bench.fleet import FleetStats, generate_fleet
from bench.references import flead_logic_loop, floor_loop, pyflink_job, river_loop
from bench.references.device_logic import FEDAVG_EVERY, WARMUP, WINDOW, FedAvg, Model, Window


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetStats]:
    path = tmp_path_factory.mktemp("fleet") / "fleet.jsonl"
    return path, generate_fleet(path, devices=120, rows_per_device=150, seed=5)


def test_floor_loop_counts(fleet: tuple[Path, FleetStats]) -> None:
    path, stats = fleet
    result = floor_loop.run(path)
    assert result["records"] == stats.records
    assert 0 < result["anomalies"] < 0.2 * stats.records
    assert result["records_per_second"] == pytest.approx(result["records"] / result["seconds"])


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
    # FLEAD's venv has no PyFlink: run() must start the job in bench/.venv-flink instead.
    assert callable(pyflink_job.run)


def test_a_lag_that_keeps_growing_is_not_sustained():
    from bench.kafka_latency import lag_growth, sustained

    rate = 10_000.0
    steady = [3000, 800, 500, 650, 400, 600, 500, 550]  # start-up backlog, then a few batches
    growing = [0, 600, 1200, 1800, 2400, 3000, 3600, 4200]  # 1,200 messages/s more each second
    assert lag_growth(growing, 0.5) == 1200
    assert sustained(steady, rate)
    assert not sustained(growing, rate)
    assert not sustained([12_000] * 8, rate)  # not growing, but more than a second behind
