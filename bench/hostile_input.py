"""Hostile input down every path: 100,000 messages each, no crash, nothing unaccounted, one verdict.

    .venv/bin/python -m bench.hostile_input                 # 100,000 messages, seed 18
    .venv/bin/python -m bench.hostile_input --n 20000 --no-kafka

Makes ``tests/hostile.py``'s messages and runs the real command (``python -m bytewax.run
dataflows.flead``) on each path: a JSON Lines file (every message that can be a line), a CSV
file (every message a CSV row can say), a directory holding both (decoded at the source and
merged), and a Kafka topic holding every message raw (a broker started as the tests start it:
Java and Maven, ``deploy/local/servers.py``). Prints two markdown tables: per path, the
messages, processed, rejected, unaccounted, verdicts that differ from the one expected for
their kind and from the same message's as a JSON line, and seconds (the command's wall time,
start-up included; for Kafka after producing, and its wait at the end of the topic included);
then the rejections by reason on each path.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

from bench.run import flead_env, run_measured
from tests.hostile import (
    SUITE_SEED,
    Case,
    disagreements,
    hostile_cases,
    summary_problems,
    through_kafka,
    verdicts,
    write_csv,
    write_json_lines,
)

COMMAND = [sys.executable, "-m", "bytewax.run", "dataflows.flead"]


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def replay(source: Path, index_of: dict[str, dict[int, int]], out: Path) -> dict:
    """One replay of ``source`` by the real command; its summary, verdicts and wall seconds."""
    seconds, _ = run_measured(COMMAND, flead_env(source, out))
    summary = orjson.loads((out / "summary.json").read_bytes())
    letters = [orjson.loads(line) for line in (out / "dead_letters.jsonl").read_bytes().splitlines()]
    by_file: dict[str, list[dict]] = {name: [] for name in index_of}
    for letter in letters:
        by_file[Path(letter["source"].removeprefix("file:").rsplit(":", 1)[0]).name].append(letter)
    found = {name: verdicts(by_file[name], index_of[name]) for name in index_of}
    return {"summary": summary, "verdicts": found, "seconds": seconds}


def row(path: str, result: dict, cases: list[Case], lines: dict[int, str]) -> dict:
    summary, found = result["summary"], result["verdicts"]
    every = [verdict for per_file in found.values() for verdict in per_file.values()]
    wrong = sum(len(disagreements(cases, per_file)) for per_file in found.values())
    differ = sum(
        1
        for per_file in found.values()
        for index, verdict in per_file.items()
        if index in lines and verdict != lines[index]
    )
    return {
        "path": path,
        "messages": summary["rows_read"],
        "processed": summary["rows_processed"],
        "rejected": summary["rows_rejected"],
        "unaccounted": summary["rows_unaccounted"],
        "accounted": not summary_problems(summary, every),
        "wrong": wrong,
        "differ": differ,
        "seconds": result["seconds"],
        "by_reason": summary["rejected_by_reason"],
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| path | messages | processed | rejected | unaccounted | summary = dead letters | verdict ≠ its kind's"
        " | verdict ≠ as a JSON line | seconds |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['messages']:,} | {r['processed']:,} | {r['rejected']:,} | {r['unaccounted']:,}"
            f" | {'yes' if r['accounted'] else 'NO'} | {r['wrong']:,} | {r['differ']:,} | {r['seconds']:.1f} |"
        )
    reasons = sorted({reason for r in rows for reason in r["by_reason"]})
    lines += ["", "| rejected by reason | " + " | ".join(r["path"] for r in rows) + " |"]
    lines.append("| --- |" + " ---: |" * len(rows))
    for reason in reasons:
        lines.append(f"| {reason} | " + " | ".join(f"{r['by_reason'].get(reason, 0):,}" for r in rows) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="hostile messages (default 100,000)")
    parser.add_argument("--seed", type=int, default=SUITE_SEED)
    parser.add_argument("--no-kafka", action="store_true", help="skip the Kafka path (no broker needed)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    cases = hostile_cases(args.n, args.seed)
    progress(f"{len(cases):,} hostile messages made in {time.perf_counter() - started:.1f} s")
    rows = []
    with tempfile.TemporaryDirectory(prefix="flead-hostile-bench-") as tmp:
        root = Path(tmp)
        (root / "both").mkdir()
        index_of = {
            "hostile.jsonl": write_json_lines(cases, root / "both" / "hostile.jsonl"),
            "hostile.csv": write_csv(cases, root / "both" / "hostile.csv"),
        }
        for name in index_of:
            shutil.copy(root / "both" / name, root / name)
        progress("JSON Lines ...")
        lines_result = replay(root / "hostile.jsonl", {"hostile.jsonl": index_of["hostile.jsonl"]}, root / "out-lines")
        as_lines = lines_result["verdicts"]["hostile.jsonl"]
        rows.append(row("JSON Lines file", lines_result, cases, as_lines))
        progress("CSV ...")
        csv_result = replay(root / "hostile.csv", {"hostile.csv": index_of["hostile.csv"]}, root / "out-csv")
        rows.append(row("CSV file", csv_result, cases, as_lines))
        progress("directory of both ...")
        rows.append(row("directory (both files)", replay(root / "both", index_of, root / "out-both"), cases, as_lines))
        if not args.no_kafka:
            from deploy.local.servers import KafkaServer

            progress("Kafka: starting a broker ...")
            with KafkaServer() as kafka:
                run = through_kafka(kafka, cases, root / "out-kafka")
            progress(f"Kafka: produced in {run.produce_seconds:.1f} s")
            result = {"summary": run.summary, "verdicts": {"topic": run.verdicts}, "seconds": run.run_seconds}
            rows.append(row("Kafka topic", result, cases, as_lines))
    kinds = Counter(case.kind for case in cases)
    print(f"{args.n:,} hostile messages, seed {args.seed}; {len(kinds)} kinds: " + ", ".join(sorted(kinds)))
    lines, rows_ = sum(case.line is not None for case in cases), sum(case.csv_row is not None for case in cases)
    print(f"{lines:,} can be JSON lines, {rows_:,} CSV rows")
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
