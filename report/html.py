"""``report.html``: one page that draws a :class:`~report.data.RunReport` and opens with no network.

plotly.js is inlined once. The figures' layouts and trace styles are built here with plotly's
Python API; the data sits once in the page as compact JSON (numbers rounded, device times as
millisecond steps) that a short script binds to them. The device chart is a single figure that
the device picker redraws with ``Plotly.react``, so a fleet of thousands of devices still makes
three figures, not thousands.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from operators.threshold import critical_threshold
from report.data import DeviceTrace, ModelVersion, RunReport

SEVERITIES = ("critical", "warning")
WARNING_COLOUR = "#e8890c"
CRITICAL_COLOUR = "#c81e1e"
FIELD_COLOURS = ["#1f5fa8", "#2a9d6f", "#7b4fb3", "#1aa3b8", "#6b5a45", "#5b6470", "#a3a81a", "#c2579f"]
"""Readings' lines avoid orange and red: those colours mean anomalies."""
DEVICE_TRACES = ("reading", "warning", "critical", "score", "warning threshold", "critical threshold")
"""The device chart's styled trace templates, in the order the figure is built."""
TIME_HOVER = "%{x|%Y-%m-%d %H:%M:%S} UTC"


def render(report: RunReport) -> str:
    """The whole page, self-contained: styles, plotly.js, the data and the drawing script."""
    data = {
        "devices": [_device_data(device) for device in report.devices],
        "thresholds": _threshold_steps(report),
        "device_figure": _device_figure(),
        "figures": _federation_figures(report.models, report.evaluations),
    }
    title = escape(report.title)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<div id="errors" class="errors" role="alert" hidden></div>\n<script>{_ERROR_SCRIPT}</script>\n'
        f"<header>\n<h1>{title}</h1>\n{_totals(report)}\n{_rejections(report.summary)}\n</header>\n"
        f"<main>\n{_devices_section(report.devices, report.undrawn_devices)}\n"
        f"{_federation_section(report.models, report.evaluations)}\n</main>\n"
        f"<script>{get_plotlyjs()}</script>\n"
        f'<script type="application/json" id="report-data">{_script_json(data)}</script>\n'
        f"<script>{_DRAW_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_report(report: RunReport, path: Path) -> None:
    """Write the page next to ``path`` first, then move it over: a reader never sees half a page."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(report), encoding="utf-8")
    os.replace(tmp, path)


# -- the page's HTML -------------------------------------------------------------------------


def _totals(report: RunReport) -> str:
    summary = report.summary
    anomalies = summary.get("anomalies", {})
    severities = [*SEVERITIES, *sorted(set(anomalies) - set(SEVERITIES))]
    cards = [
        ("rows read", summary.get("rows_read")),
        ("rows processed", summary.get("rows_processed")),
        ("rows rejected", summary.get("rows_rejected")),
        *((f"{severity} anomalies", anomalies.get(severity, 0)) for severity in severities),
        ("devices", len(report.devices) + report.undrawn_devices),
        ("global versions", summary.get("global_versions", report.models[-1].version if report.models else 0)),
    ]
    items = "".join(
        f'<div class="card {escape(label.split()[0])}"><div class="number">{_count(value)}</div>'
        f'<div class="label">{escape(label)}</div></div>'
        for label, value in cards
    )
    return f'<div class="cards">{items}</div>'


def _rejections(summary: dict[str, Any]) -> str:
    by_reason = summary.get("rejected_by_reason") or {}
    if not by_reason:
        return '<p class="rejections">Rejected rows by reason: no rejected rows.</p>'
    rows = "".join(
        f"<tr><td>{escape(str(reason))}</td><td class='n'>{_count(n)}</td></tr>"
        for reason, n in sorted(by_reason.items(), key=lambda item: -item[1])
    )
    return (
        '<div class="rejections"><p>Rejected rows by reason (not processed; the dead-letter output holds '
        "each one):</p><table><thead><tr><th>reason</th><th>rows</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _devices_section(devices: list[DeviceTrace], undrawn: int) -> str:
    heading = f"<h2>Devices ({len(devices):,})</h2>"
    if undrawn:
        heading = (
            f"<h2>Devices ({len(devices):,} drawn of {len(devices) + undrawn:,})</h2>"
            f'<p class="explain">The report keeps readings of at most {len(devices):,} devices '
            "(FLEAD_REPORT_POINTS / 50): the first to arrive, a device with anomalies taking the place of one "
            "without. The totals above count every device.</p>"
        )
    if not devices:
        return f'<section id="devices">{heading}<p class="empty">No devices in this run.</p></section>'
    options = "".join(
        f'<option value="{i}">{escape(device.device_id)} — {_anomaly_phrase(device)}</option>'
        for i, device in enumerate(devices)
    )
    return (
        f'<section id="devices">{heading}<label class="picker">Device (most anomalies first) '
        f'<select id="device-picker">{options}</select></label>'
        '<div id="chart-device" class="chart device"></div>'
        '<p class="explain">Top: the device\'s readings over time (UTC), one line per field; orange '
        "triangles are warnings, red diamonds critical anomalies, and a dark outline marks the anomaly "
        "that raised an alert (the first of an incident). Bottom: the anomaly score, from 0 (ordinary) to "
        "1 (very unusual), against the global model's thresholds: a score at or above the orange line is "
        "a warning, at or above the red line critical. Long streams are drawn from an evenly spaced subset "
        "of readings; the counts cover every reading. Drag to zoom, double-click to reset, click a legend "
        "entry to hide it. The page's address ends in #device=&lt;id&gt; to link to a device.</p></section>"
    )


def _federation_section(models: list[ModelVersion], evaluations: list[dict[str, Any]]) -> str:
    if models:
        versions = (
            '<div id="chart-models" class="chart"></div><p class="explain">Each global model version that '
            "federated averaging produced, placed at the event time of the newest reading behind it. Top: "
            "its score threshold and the devices' accuracy on the labelled readings of the rounds behind it "
            "(no line without labels). Bottom: how many devices had contributed to it. A long run draws "
            "evenly spaced versions, the newest, and every version that changed the threshold.</p>"
        )
    else:
        versions = '<p class="empty">No global model versions in this run.</p>'
    if evaluations:
        live = (
            '<div id="chart-evaluations" class="chart"></div><p class="explain">How well each evaluated '
            "global version flagged the labelled readings that arrived while it was in force, placed at the "
            "end of that window: precision (share of flagged readings that were anomalies), recall (share "
            "of anomalies flagged) and F1 (their balance). Hover for the counts.</p>"
        )
    else:
        live = '<p class="empty">No live evaluations in this run (they need labelled readings).</p>'
    return (
        '<section id="federation"><h2>Federation</h2><h3>Global model versions</h3>'
        f"{versions}<h3>Live evaluation</h3>{live}</section>"
    )


def _anomaly_phrase(device: DeviceTrace) -> str:
    count = device.anomaly_count
    critical = device.anomalies_by_severity.get("critical", 0)
    phrase = f"{count:,} anomal{'y' if count == 1 else 'ies'}"
    return f"{phrase} ({critical:,} critical)" if critical else phrase


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "—"


# -- the page's data ---------------------------------------------------------------------------


def _device_data(device: DeviceTrace) -> dict[str, Any]:
    """One device as the script reads it: ``t`` holds the first time then each step, in ms."""
    times = [_ms(t) for t in device.times]
    return {
        "id": device.device_id,
        "readings": device.readings,
        "anomalies": dict(sorted(device.anomalies_by_severity.items(), key=_severity_order)),
        "t": times[:1] + [b - a for a, b in pairwise(times)],
        "values": {name: [_compact(v, 5) for v in series] for name, series in device.values.items()},
        "scores": [_compact(s, 3, decimals=True) for s in device.scores],
        "marks": [
            [_ms(m.time), m.field, _compact(m.value, 7), _compact(m.score, 4, decimals=True), m.severity, int(m.alert)]
            for m in device.anomalies
        ],
    }


def _severity_order(item: tuple[str, int]) -> tuple[int, str]:
    """Critical first, then warning, then any other severity by name."""
    return (SEVERITIES.index(item[0]) if item[0] in SEVERITIES else len(SEVERITIES), item[0])


def _threshold_steps(report: RunReport) -> list[list[float | None]]:
    """Where the thresholds change: ``[ms, warning, critical]``, from the global versions.

    Without versions that carry one, the summary's ``score_threshold`` holds from the start
    (``ms`` null); without either, no threshold is drawn.
    """
    steps: list[list[float | None]] = []
    for model in sorted(report.models, key=lambda m: m.created_at):
        if model.threshold is not None and (not steps or steps[-1][1] != model.threshold):
            steps.append([_ms(model.created_at), model.threshold])
    if not steps and report.summary.get("score_threshold") is not None:
        steps.append([None, float(report.summary["score_threshold"])])
    return [[t, _compact(v, 4, decimals=True), _compact(critical_threshold(v), 4, decimals=True)] for t, v in steps]


def _compact(value: float | None, digits: int, decimals: bool = False) -> float | int | None:
    """``value`` to ``digits`` significant digits (or decimals), as an int when whole; NaN as null."""
    if value is None or not math.isfinite(value):
        return None
    rounded = float(round(value, digits) if decimals else f"{value:.{digits}g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 1e15 else rounded


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _iso_ms(text: str) -> int:
    return _ms(datetime.fromisoformat(text).timestamp())


def _script_json(data: Any) -> str:
    """Compact JSON that is safe inside ``<script>``: no ``<`` can close the element."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


# -- the figures ---------------------------------------------------------------------------------


def _device_figure() -> dict[str, Any]:
    """The device chart's layout and one styled, empty trace per kind, for the script to fill."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.68, 0.32])
    figure.add_trace(
        go.Scatter(mode="lines", line={"width": 1.3}, hovertemplate=f"{TIME_HOVER}<br>%{{y}}"), row=1, col=1
    )
    for severity, colour, symbol in (
        ("warning", WARNING_COLOUR, "triangle-up"),
        ("critical", CRITICAL_COLOUR, "diamond"),
    ):
        marker = {"color": colour, "symbol": symbol, "size": 9, "opacity": 0.9, "line": {"color": "#1b1b1b"}}
        hover = (
            f"{TIME_HOVER}<br>%{{customdata[0]}} = %{{y}}<br>score %{{customdata[1]}}<br>{severity}%{{customdata[2]}}"
        )
        figure.add_trace(
            go.Scatter(name=severity, mode="markers", marker=marker, hovertemplate=hover + "<extra></extra>"),
            row=1,
            col=1,
        )
    figure.add_trace(
        go.Scatter(
            name="score",
            mode="lines",
            line={"color": "#4a4a6a", "width": 1},
            hovertemplate=f"{TIME_HOVER}<br>score %{{y}}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    for name, colour in (("warning threshold", WARNING_COLOUR), ("critical threshold", CRITICAL_COLOUR)):
        figure.add_trace(
            go.Scatter(
                name=name,
                mode="lines",
                line={"color": colour, "dash": "dash", "width": 1.5, "shape": "hv"},
                hovertemplate=f"{name} %{{y}}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    figure.update_layout(
        _base_layout(height=640),
        # The title sits below the chart's tool bar, which would cover a long device id.
        title={"text": "", "x": 0.01, "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": 34}},
        title_font_size=16,
        margin={"t": 110},
        colorway=FIELD_COLOURS,
        hovermode="closest",
    )
    figure.update_xaxes(type="date", showspikes=True, spikemode="across", spikethickness=1)
    figure.update_yaxes(title_text="reading", row=1, col=1)
    figure.update_yaxes(title_text="score", range=[0, 1.02], row=2, col=1)
    spec = figure.to_plotly_json()
    return {"layout": spec["layout"], "traces": dict(zip(DEVICE_TRACES, spec["data"], strict=True))}


def _federation_figures(models: list[ModelVersion], evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """Complete figures by chart id; only the ones that have something to show."""
    figures = {}
    if models:
        figures["chart-models"] = _models_figure(models).to_plotly_json()
    if evaluations:
        figures["chart-evaluations"] = _evaluations_figure(evaluations).to_plotly_json()
    return figures


def _models_figure(models: list[ModelVersion]) -> go.Figure:
    times = [_ms(m.created_at) for m in models]
    versions = [[m.version, m.samples] for m in models]
    hover = f"global v%{{customdata[0]}} ({TIME_HOVER})<br>%{{fullData.name}} %{{y}}<br>%{{customdata[1]:,}} samples"
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.65, 0.35])
    for name, values, colour in (
        ("threshold", [m.threshold for m in models], WARNING_COLOUR),
        ("accuracy", [m.accuracy for m in models], FIELD_COLOURS[0]),
    ):
        rounded = [_compact(v, 4, decimals=True) for v in values]
        figure.add_trace(_line(name, times, rounded, colour, versions, hover, step=True), row=1, col=1)
    devices = [m.num_devices for m in models]
    contributing = _line("devices contributing", times, devices, FIELD_COLOURS[1], versions, hover, step=True)
    figure.add_trace(contributing, row=2, col=1)
    figure.update_layout(_base_layout(height=440), hovermode="closest")
    figure.update_xaxes(type="date")
    figure.update_yaxes(title_text="threshold, accuracy", range=[0, 1.02], row=1, col=1)
    figure.update_yaxes(title_text="devices", rangemode="tozero", row=2, col=1)
    return figure


def _evaluations_figure(evaluations: list[dict[str, Any]]) -> go.Figure:
    rows = sorted(evaluations, key=lambda row: row["global_version"])
    times = [_iso_ms(row["window_end"]) for row in rows]
    counts = [[row["global_version"], row.get("n"), row.get("tp"), row.get("fp"), row.get("fn")] for row in rows]
    hover = (
        f"global v%{{customdata[0]}}, window ending {TIME_HOVER}<br>%{{fullData.name}} %{{y}}<br>"
        "%{customdata[1]:,} readings: %{customdata[2]} true alarms, %{customdata[3]} false alarms, "
        "%{customdata[4]} missed"
    )
    figure = go.Figure()
    for name, colour in (("precision", FIELD_COLOURS[0]), ("recall", FIELD_COLOURS[1]), ("F1", "#222222")):
        values = [_compact(row.get(name.lower()), 4, decimals=True) for row in rows]
        figure.add_trace(_line(name, times, values, colour, counts, hover, step=False))
    figure.update_layout(_base_layout(height=360), hovermode="closest")
    figure.update_xaxes(type="date")
    figure.update_yaxes(range=[0, 1.02])
    return figure


def _line(
    name: str, x: list[int], y: list[Any], colour: str, customdata: list[Any], hover: str, *, step: bool
) -> go.Scatter:
    """A step line (a version's value holds until the next one) or points joined by straight lines."""
    return go.Scatter(
        name=name,
        x=x,
        y=y,
        mode="lines" if step else "lines+markers",
        marker={"size": 4},
        line={"color": colour, "width": 1.5, "shape": "hv" if step else "linear"},
        customdata=customdata,
        hovertemplate=hover + "<extra></extra>",
    )


def _base_layout(height: int) -> dict[str, Any]:
    return {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 70, "r": 20, "t": 60, "b": 40},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "font": {"family": "system-ui, sans-serif", "size": 12},
    }


# -- styles and scripts ----------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #f4f5f7; }
header, main { max-width: 1400px; margin: 0 auto; padding: 0 24px; }
h1 { font-size: 22px; margin: 18px 0 12px; }
h2 { font-size: 18px; margin: 24px 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border-radius: 6px; padding: 10px 16px; min-width: 120px;
        box-shadow: 0 1px 2px rgba(0, 0, 0, .12); }
.card .number { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .label { font-size: 12px; color: #555; }
.card.critical .number { color: #c81e1e; }
.card.warning .number { color: #b86a00; }
.rejections { margin: 12px 0 0; font-size: 14px; }
.rejections p { margin: 0 0 4px; }
.rejections table { border-collapse: collapse; background: #fff; min-width: 260px; }
.rejections th, .rejections td { padding: 4px 12px; border-bottom: 1px solid #e3e3e3; text-align: left; }
.rejections td.n { text-align: right; font-variant-numeric: tabular-nums; }
section { background: #fff; border-radius: 6px; padding: 4px 18px 12px; margin: 18px 0;
          box-shadow: 0 1px 2px rgba(0, 0, 0, .12); }
.picker { font-size: 14px; }
.picker select { font-size: 14px; margin-left: 6px; max-width: 90ch; }
.explain { font-size: 13px; color: #444; max-width: 130ch; margin: 4px 0 10px; }
.empty { font-size: 14px; color: #555; font-style: italic; }
.errors { background: #fde8e8; border: 1px solid #c81e1e; color: #7a0f0f; padding: 8px 24px; }
"""

_ERROR_SCRIPT = """
(() => {
  // Any script error shows on the page: an operator sees why a chart is missing.
  const box = document.getElementById("errors");
  function show(message) {
    if (box.hidden) {
      box.hidden = false;
      box.textContent = "Drawing the report failed; some charts may be missing or stale.";
    }
    const line = document.createElement("p");
    line.textContent = message;
    box.appendChild(line);
  }
  window.addEventListener("error", (e) => show(`${e.message} (line ${e.lineno})`));
  window.addEventListener("unhandledrejection", (e) => show(String(e.reason)));
})();
"""

_DRAW_SCRIPT = """
(() => {
  "use strict";
  const page = JSON.parse(document.getElementById("report-data").textContent);
  const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  const templates = page.device_figure.traces;

  function cumulative(steps) {
    let total = 0;
    return steps.map((step) => (total += step));
  }

  // The thresholds in force from start to end, as step lines (index 1: warning, 2: critical).
  function thresholdTraces(start, end) {
    const x = [], warning = [], critical = [];
    for (const [at, warn, crit] of page.thresholds) {
      const t = at === null ? start : at;
      if (t > end) break;
      if (t <= start) x.length = warning.length = critical.length = 0;
      x.push(Math.max(t, start));
      warning.push(warn);
      critical.push(crit);
    }
    if (x.length === 0) return [];
    x.push(end);
    warning.push(warning[warning.length - 1]);
    critical.push(critical[critical.length - 1]);
    return [
      { ...templates["warning threshold"], x, y: warning },
      { ...templates["critical threshold"], x, y: critical },
    ];
  }

  // marks: [ms, field, value, score, severity, alert]
  function markTrace(marks, severity) {
    const own = marks.filter((m) => m[4] === severity);
    const template = templates[severity];
    return {
      ...template,
      x: own.map((m) => m[0]),
      y: own.map((m) => m[2]),
      customdata: own.map((m) => [m[1], m[3], m[5] ? " · alert (first of an incident)" : ""]),
      marker: { ...template.marker, line: { ...template.marker.line, width: own.map((m) => (m[5] ? 2 : 0)) } },
    };
  }

  function deviceTitle(device) {
    const count = Object.values(device.anomalies).reduce((a, b) => a + b, 0);
    const parts = Object.entries(device.anomalies).map(([severity, n]) => `${n.toLocaleString("en")} ${severity}`);
    const shown = device.marks.length < count ? `, ${device.marks.length.toLocaleString("en")} marked` : "";
    return `${device.id}: ${device.readings.toLocaleString("en")} readings, ` +
      `${count.toLocaleString("en")} anomalies${parts.length ? ` (${parts.join(", ")}${shown})` : ""}`;
  }

  function deviceFigure(device) {
    const x = cumulative(device.t);
    const traces = Object.entries(device.values).map(([field, y]) => ({ ...templates.reading, name: field, x, y }));
    traces.push(markTrace(device.marks, "warning"), markTrace(device.marks, "critical"));
    traces.push({ ...templates.score, x, y: device.scores });
    if (x.length) traces.push(...thresholdTraces(x[0], x[x.length - 1]));
    const layout = page.device_figure.layout;
    return [traces, { ...layout, title: { ...layout.title, text: deviceTitle(device) } }];
  }

  const picker = document.getElementById("device-picker");

  function showDevice(index) {
    picker.value = String(index);
    const [traces, layout] = deviceFigure(page.devices[index]);
    return Plotly.react("chart-device", traces, layout, config);
  }

  // #device=<id> in the address picks the device; an unknown id falls back to the first.
  function deviceFromAddress() {
    const match = /^#device=(.*)$/.exec(window.location.hash);
    const id = match ? decodeURIComponent(match[1]) : null;
    return Math.max(0, page.devices.findIndex((device) => device.id === id));
  }

  const drawn = [];
  if (page.devices.length) {
    picker.addEventListener("change", () => {
      const index = Number(picker.value);
      history.replaceState(null, "", `#device=${encodeURIComponent(page.devices[index].id)}`);
      showDevice(index);
    });
    window.addEventListener("hashchange", () => showDevice(deviceFromAddress()));
    drawn.push(showDevice(deviceFromAddress()));
  }
  for (const [id, figure] of Object.entries(page.figures)) {
    drawn.push(Plotly.newPlot(id, figure.data, figure.layout, config));
  }
  // Tests and operators' tooling read this: every chart drew.
  Promise.all(drawn).then(() => { document.body.dataset.rendered = String(drawn.length); });
})();
"""
