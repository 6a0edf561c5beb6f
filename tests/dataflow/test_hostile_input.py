"""Hostile input through the whole dataflow (``bytewax.testing.run_main``), from a JSON Lines file,
a CSV file and a directory holding both (where every row is decoded at the source and merged).

Every path must read every message it carries and account for it (read = processed +
rejected, nothing unaccounted, every dead letter with a known reason), each message must get
the verdict worked out for its kind, and the same verdict on every path that carries it
(``tests/hostile.py`` says which do). The Kafka path is ``tests/integration/test_hostile_kafka.py``.
"""

from __future__ import annotations

import csv
from unittest.mock import patch

import pytest

from dataflows import replay_files
from dataflows.replay_files import read_replay
from operators.messages import REJECTION_REASONS, MessageLimits, Rejection
from operators.update_validation import UPDATE_REASONS
from tests.hostile import (
    PROCESSED,
    SUITE_N,
    SUITE_SEED,
    Replay,
    disagreements,
    hostile_cases,
    replayed,
    shared_cases,
    summary_problems,
)

N = SUITE_N
SEED = SUITE_SEED
INPUTS = {
    "json_lines": ("hostile.jsonl",),
    "csv": ("hostile.csv",),
    "both": ("hostile.jsonl", "hostile.csv"),
}


@pytest.fixture(scope="module")
def cases():
    return list(shared_cases(N, SEED))


@pytest.fixture(params=list(INPUTS))
def each_run(request) -> Replay:
    return replayed(N, SEED, INPUTS[request.param])


def test_the_generator_is_reproducible_and_hostile(cases):
    assert [case.raw for case in hostile_cases(2_000, SEED)] == [case.raw for case in cases[:2_000]]
    assert [case.raw for case in hostile_cases(2_000, SEED + 1)] != [case.raw for case in cases[:2_000]]
    kinds = {case.kind for case in cases}
    assert len(kinds) == 19, kinds
    assert sum(case.csv_row is not None for case in cases) > N // 3
    assert sum(case.line is None for case in cases) > 0 and sum(b"\n" in case.raw for case in cases) > N // 100
    assert sum(len(case.raw) >= 1 << 20 for case in cases) == N // 5_000
    rejected = {case.expected for case in cases} - {PROCESSED, None}
    not_telemetry = {"device_limit", "invalid_row", "kafka_error", "missing_field", *UPDATE_REASONS}
    assert rejected == set(REJECTION_REASONS) - not_telemetry


def test_every_message_is_read_and_accounted_for(each_run):
    found = [verdict for verdicts in each_run.verdicts.values() for verdict in verdicts.values()]
    assert summary_problems(each_run.summary, found) == []
    assert len(each_run.dead_letters) == each_run.summary["rows_rejected"]
    assert {letter["reason"] for letter in each_run.dead_letters} <= set(REJECTION_REASONS)


def test_every_message_gets_the_verdict_of_its_kind(cases, each_run):
    for found in each_run.verdicts.values():
        wrong = disagreements(cases, found)
        assert not wrong, f"{len(wrong)} wrong verdicts, the first: " + "\n".join(wrong[:10])


def test_the_same_message_gets_the_same_verdict_from_a_json_line_and_a_csv_row(cases):
    lines = replayed(N, SEED, INPUTS["json_lines"]).verdicts["hostile.jsonl"]
    rows = replayed(N, SEED, INPUTS["csv"]).verdicts["hostile.csv"]
    assert len(rows) > N // 3
    differ = [
        (i, lines[i], rows[i], cases[i].raw[:100], [cell[:40] for cell in cases[i].csv_row])
        for i in rows
        if rows[i] != lines[i]
    ]
    assert not differ, f"{len(differ)} messages differ (index, as a line, as a row, message, row): {differ[:5]}"


def test_decoding_at_the_source_or_in_the_shards_gives_the_same_verdicts():
    """A single JSON Lines file goes to the shards undecoded; in a directory of files every row
    is decoded at the source and the files are merged: the verdicts are the same."""
    both = replayed(N, SEED, INPUTS["both"]).verdicts
    assert both["hostile.jsonl"] == replayed(N, SEED, INPUTS["json_lines"]).verdicts["hostile.jsonl"]
    assert both["hostile.csv"] == replayed(N, SEED, INPUTS["csv"]).verdicts["hostile.csv"]


def test_a_csv_row_with_a_1_mb_cell_is_oversized_and_the_rows_after_it_are_read(tmp_path):
    path = tmp_path / "fleet.csv"
    big = "x" * (1 << 20)
    path.write_text(
        f"device_id,timestamp,value\npump-1,2024-01-01T00:00:00Z,1\n{big},2024-01-01T00:01:00Z,2\n"
        "pump-1,2024-01-01T00:02:00Z,3\n"
    )
    records = list(read_replay(path, MessageLimits()))
    assert [getattr(record, "reason", "processed") for record in records] == [
        "processed",
        "oversized_message",
        "processed",
    ]
    assert records[1].source == f"file:{path}:3"


def test_a_row_the_csv_module_refuses_costs_that_row_only(tmp_path):
    """Not expected with FLEAD's settings (the csv module's cell limit is raised): should the
    module refuse a row anyway, the row is a dead letter and the file reads on."""
    path = tmp_path / "fleet.csv"
    path.write_text(
        "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z," + "9" * 200 + "\n2024-01-01T00:02:00Z,3\n"
    )
    saved = csv.field_size_limit()
    try:
        with patch.object(replay_files, "CSV_FIELD_LIMIT", 100):
            csv.field_size_limit(100)
            records = list(read_replay(path, MessageLimits()))
    finally:
        csv.field_size_limit(saved)
    assert [getattr(record, "reason", "processed") for record in records] == ["processed", "invalid_row", "processed"]
    assert [record.values["value"] for record in records if not isinstance(record, Rejection)] == [1.0, 3.0]
