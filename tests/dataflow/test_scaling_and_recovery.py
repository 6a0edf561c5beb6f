"""The same replay with more workers, more processes, and an abort + resume gives the same counts
and the same anomalies, each as many times."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.fleet import generate_fleet
from deploy.local.servers import free_port
from tests.flead_runs import REPO, assert_same_anomalies, comparable, environment, flead_command, run


@pytest.fixture(scope="module")
def one_worker(nab_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-worker")
    return out, run(nab_sample, out)


def test_two_workers_in_one_process(nab_sample, one_worker, tmp_path):
    reference_out, reference = one_worker
    summary = run(nab_sample, tmp_path, "-w", "2")
    assert comparable(summary) == comparable(reference)
    assert_same_anomalies(tmp_path, reference_out)


@pytest.mark.parametrize(("shards", "workers", "warned"), [(2, 2, False), (2, 3, True)])
def test_workers_beyond_the_shards_are_named_at_start(nab_sample, one_worker, tmp_path, shards, workers, warned):
    """They score nothing, so a run says so; it still processes every row."""
    _, reference = one_worker
    env = environment(nab_sample, tmp_path, FLEAD_SHARDS=str(shards))
    done = subprocess.run(
        flead_command("-w", str(workers)), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    warning = f"FLEAD_SHARDS={shards} is fewer than the {workers} workers of this run"
    assert (warning in done.stderr) is warned, done.stderr[-2000:]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["rows_processed"] == reference["rows_processed"]


def test_two_processes_on_localhost(nab_sample, one_worker, tmp_path):
    reference_out, reference = one_worker
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    env = environment(nab_sample, tmp_path)
    processes = [
        subprocess.Popen(
            flead_command("-i", str(i), "-a", addresses),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stdout.read().decode()[-2000:]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert comparable(summary) == comparable(reference)
    assert_same_anomalies(tmp_path, reference_out)


def output_lines(out_dir: Path, name: str) -> Counter[bytes]:
    return Counter((out_dir / name).read_bytes().splitlines())


def test_a_replay_in_two_processes_gives_the_results_of_one_with_the_fleets_normal_model(tmp_path):
    """The fleet's normal model on (it makes a device's scores depend on which global model it
    has), on a fleet on which two processes flagged more anomalies than one before the replay
    kept step with FedAvg (6,459 against 4,708 in one run)."""
    fleet = tmp_path / "fleet.jsonl"
    generate_fleet(fleet, devices=300, rows=40_000, seed=5)
    normal_model = {"FLEAD_NORMAL_PRIOR_READINGS": "300"}
    one = tmp_path / "one"
    run(fleet, one, **normal_model)
    two = tmp_path / "two"
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    processes = [
        subprocess.Popen(
            flead_command("-i", str(i), "-a", addresses),
            cwd=REPO,
            env=environment(fleet, two, **normal_model),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stdout.read().decode()[-2000:]
    assert_same_anomalies(two, one)
    for name in ("local_models.jsonl", "federated_models.jsonl"):
        assert output_lines(two, name) == output_lines(one, name), name
    assert len(output_lines(one, "federated_models.jsonl")) > 100


def source_snapshot_committed(recovery: Path) -> bool:
    """Whether the recovery store holds a snapshot of the replay source in a committed epoch."""
    with contextlib.closing(sqlite3.connect(f"file:{recovery / 'part-0.sqlite3'}?mode=ro", uri=True)) as store:
        (count,) = store.execute(
            "SELECT count(*) FROM snaps JOIN commits ON snaps.snap_epoch <= commits.commit_epoch"
            " WHERE snaps.step_id = 'flead.telemetry'"
        ).fetchone()
    return count > 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, Path]:
    """The bundled data replayed once without interruption: the summary and the output folder."""
    out = tmp_path_factory.mktemp("uninterrupted")
    return run(REPO / "data" / "nab", out), out


def recoverable_replay(tmp_path: Path) -> tuple[Path, Path, list[str], dict[str, str]]:
    """A recovery store, an output folder, and the command and settings of a replay of the
    bundled data that snapshots every second into that store."""
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    out = tmp_path / "resumed"
    command = flead_command("-r", str(recovery), "-s", "1", "-b", "0")
    return recovery, out, command, environment(REPO / "data" / "nab", out, FLEAD_PROGRESS_SECONDS="0.2")


def stopped_after(command: list[str], env: dict[str, str], rows: int, stop_signal: signal.Signals) -> tuple[int, str]:
    """Run ``command`` and send it ``stop_signal`` once a progress line shows ``rows`` read; its
    exit code and the output it printed after that."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal delivers Ctrl-C
    )
    for line in process.stdout:
        if line.startswith("flead: read ") and int(line.split()[2].replace(",", "")) >= rows:
            break
    process.send_signal(stop_signal)
    rest = process.stdout.read()
    return process.wait(timeout=120), rest


def resumed_as_uninterrupted(command: list[str], env: dict[str, str], out: Path, uninterrupted) -> dict:
    """Run ``command`` again, check that it resumed and ended as the uninterrupted run, exactly
    once (the resumed run truncated what the first one wrote after its last snapshot); its summary."""
    reference, reference_out = uninterrupted
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "flead: resuming the replay" in second.stdout, "the second run started from scratch"
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert comparable(summary) == comparable(reference)
    for name in ("local_models.jsonl", "federated_models.jsonl"):
        lines = (out / name).read_bytes().count(b"\n")
        assert lines == (reference_out / name).read_bytes().count(b"\n")
    assert_same_anomalies(out, reference_out)
    return summary


def test_an_aborted_run_resumes_to_the_same_totals(tmp_path, uninterrupted):
    """Replays the whole bundled sample (~5 s), kills the run part-way with SIGKILL, resumes."""
    reference = uninterrupted[0]
    recovery, out, command, env = recoverable_replay(tmp_path)
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    rows_read = 0
    for line in first.stdout:
        if line.startswith("flead: read "):
            rows_read = int(line.split()[2].replace(",", ""))
            # well into the run, and past a snapshot of the source that Bytewax has committed
            if rows_read >= 40_000 and source_snapshot_committed(recovery):
                break
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert 40_000 <= rows_read < reference["rows_read"], "the run ended before it could be aborted"
    assert not (out / "summary.json").exists()

    summary = resumed_as_uninterrupted(command, env, out, uninterrupted)
    assert summary["rows_unaccounted"] == 0


def test_a_run_stopped_by_ctrl_c_drains_writes_its_summary_and_resumes_to_the_same_totals(tmp_path, uninterrupted):
    """SIGINT here; the live dataflow's stop test sends SIGTERM (the same handler)."""
    stop_signal = signal.SIGINT
    reference = uninterrupted[0]
    _, out, command, env = recoverable_replay(tmp_path)
    exit_code, rest = stopped_after(command, env, 20_000, stop_signal)
    assert exit_code == 0, rest[-2000:]
    stopped = orjson.loads((out / "summary.json").read_bytes())
    assert stopped["stopped_by"] == stop_signal.name
    assert 20_000 <= stopped["rows_read"] < reference["rows_read"]
    assert stopped["rows_read"] == stopped["rows_processed"] + stopped["rows_rejected"]
    assert (out / "report.html").exists()

    summary = resumed_as_uninterrupted(command, env, out, uninterrupted)
    assert "stopped_by" not in summary


def test_a_resume_with_another_shard_count_stops_naming_the_setting_and_the_right_one_resumes(tmp_path, uninterrupted):
    """Devices are spread over shards by ``crc32(device_id) % FLEAD_SHARDS`` and each shard's
    snapshot holds its devices: a resume with another count stops before it reads a row,
    saying which count the store needs, and leaves the store as it was."""
    _, out, command, env = recoverable_replay(tmp_path)
    exit_code, _ = stopped_after(command, env, 20_000, signal.SIGINT)
    assert exit_code == 0

    changed = subprocess.run(
        command, cwd=REPO, env={**env, "FLEAD_SHARDS": "3"}, capture_output=True, text=True, timeout=120
    )
    assert changed.returncode != 0
    assert "with FLEAD_SHARDS=3: it was written with FLEAD_SHARDS=2" in changed.stderr, changed.stderr[-2000:]
    assert "flead: read " not in changed.stdout

    resumed_as_uninterrupted(command, env, out, uninterrupted)
