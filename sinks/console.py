"""Progress lines on standard output; the run's summary as ``summary.json`` and a short printout;
the run report as ``report.html``.

>>> print(summary_lines({"rows_read": 93753, "anomalies": {"critical": 3, "warning": 7},
...                      "quality": {"z_rule": {"tp": 688, "f1": 0.08206}}}))
  rows read              93,753
  anomalies              critical 3 · warning 7
  quality
    z rule               tp 688 · f1 0.08206
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from report.data import RunReport

Report = tuple[str, Any]
"""``("progress", line)``, ``("summary", dict)`` or ``("report", RunReport)``."""


class _ReportPartition(StatelessSinkPartition[Report]):
    def __init__(self, summary_path: Path) -> None:
        self._summary_path = summary_path

    def write_batch(self, items: list[Report]) -> None:
        for kind, payload in items:
            if kind == "summary":
                self._write_summary(payload)
            elif kind == "report":
                self._write_report(payload)
            else:
                print(f"flead: {payload}", file=sys.stdout, flush=True)

    def _write_summary(self, summary: dict[str, Any]) -> None:
        self._summary_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._summary_path.with_suffix(".json.tmp")
        temporary.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        temporary.replace(self._summary_path)
        print(f"flead: summary ({self._summary_path})", flush=True)
        print(summary_lines(summary), flush=True)

    def _write_report(self, report: RunReport) -> None:
        # Plotly only when a report is drawn, at the end of a replay: imported with the sink,
        # it took 0.1 s and 6 MB of every process, Kafka input's included (none draws one).
        from report.html import write_report

        path = self._summary_path.with_name("report.html")
        write_report(report, path)
        print(f"flead: report ({path}): open it in a browser", flush=True)


def summary_lines(summary: dict[str, Any], indent: str = "  ") -> str:
    """The summary for a person: one line per entry; an entry of tables gets a line per table."""
    lines = []
    for key, value in summary.items():
        name = key.replace("_", " ")
        if isinstance(value, dict) and value and all(isinstance(inner, dict) for inner in value.values()):
            lines.append(f"{indent}{name}")
            lines.append(summary_lines(value, indent + "  "))
        else:
            lines.append(f"{indent}{name:<{24 - len(indent)}} {_shown(value)}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return " · ".join(f"{key} {_shown(inner)}" for key, inner in value.items()) if value else "none"
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ReportSink(DynamicSink[Report]):
    """Prints progress lines; writes the summary and the report atomically (they are only ever
    emitted by one worker)."""

    def __init__(self, summary_path: Path) -> None:
        self._summary_path = summary_path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ReportPartition:
        return _ReportPartition(self._summary_path)
