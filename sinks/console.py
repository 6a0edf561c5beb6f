"""Progress lines on standard output, and the run's summary as ``summary.json`` and a printout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

Report = tuple[str, Any]
"""``("progress", line)`` or ``("summary", dict)``."""


class _ReportPartition(StatelessSinkPartition[Report]):
    def __init__(self, summary_path: Path) -> None:
        self._summary_path = summary_path

    def write_batch(self, items: list[Report]) -> None:
        for kind, payload in items:
            if kind == "summary":
                self._write_summary(payload)
            else:
                print(f"flead: {payload}", file=sys.stdout, flush=True)

    def _write_summary(self, summary: dict[str, Any]) -> None:
        self._summary_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._summary_path.with_suffix(".json.tmp")
        temporary.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        temporary.replace(self._summary_path)
        print(f"flead: summary ({self._summary_path})", flush=True)
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode(), flush=True)


class ReportSink(DynamicSink[Report]):
    """Prints progress lines; writes the summary atomically (it is only ever emitted by one worker)."""

    def __init__(self, summary_path: Path) -> None:
        self._summary_path = summary_path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ReportPartition:
        return _ReportPartition(self._summary_path)
