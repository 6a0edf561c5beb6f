"""report.html: what the page says, and what a real headless Chromium draws from it."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from report.data import AnomalyMark, DeviceTrace, ModelVersion, RunReport
from report.html import CRITICAL_COLOUR, FIELD_COLOURS, WARNING_COLOUR, render, write_report

START = 1_704_067_200.0  # 2024-01-01T00:00:00Z
STEP = 300.0


def synthetic_report(
    devices: int = 4, points: int = 400, versions: int = 40, fields: tuple[str, ...] = ("temperature", "humidity")
) -> RunReport:
    """A fleet of smooth readings with a spike every 97 readings (critical every third), thresholds
    that step up halfway through the versions, and one live evaluation per 10 versions."""
    rng = np.random.default_rng(7)
    traces = [_device(f"pump-{i:02d}", points, fields, rng) for i in range(devices)]
    traces.sort(key=lambda trace: -trace.anomaly_count)
    span = points * STEP
    models = [
        ModelVersion(
            version=v,
            created_at=START + span * v / (versions + 1),
            threshold=0.5 if v <= versions // 2 else 0.6,
            accuracy=None if v < 3 else round(0.9 + 0.1 * math.sin(v), 4),
            num_devices=min(v, devices),
            samples=40 * v,
        )
        for v in range(1, versions + 1)
    ]
    evaluations = [
        {
            "global_version": v,
            "n": 1000,
            "tp": 8,
            "fp": 2,
            "tn": 985,
            "fn": 5,
            "accuracy": 0.993,
            "precision": 0.8,
            "recall": 8 / 13,
            "f1": 0.6957,
            "window_start": _iso(models[v - 10].created_at),
            "window_end": _iso(models[v - 1].created_at),
        }
        for v in range(10, versions + 1, 10)
    ]
    summary = {
        "rows_read": devices * points + 4,
        "rows_processed": devices * points,
        "rows_rejected": 4,
        "rejected_by_reason": {"bad_value": 3, "missing_timestamp": 1},
        "anomalies": {s: sum(t.anomalies_by_severity.get(s, 0) for t in traces) for s in ("critical", "warning")},
        "global_versions": versions,
    }
    return RunReport(summary=summary, devices=traces, models=models, evaluations=evaluations)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _device(device_id: str, points: int, fields: tuple[str, ...], rng: np.random.Generator) -> DeviceTrace:
    times = [START + i * STEP for i in range(points)]
    phase = rng.uniform(0, 6)
    values = {
        name: [20 + 10 * k + 5 * math.sin(i / 40 + phase) + rng.normal(0, 0.4) for i in range(points)]
        for k, name in enumerate(fields)
    }
    scores = [float(s) for s in rng.uniform(0, 0.3, points)]
    marks = []
    for n, i in enumerate(range(int(phase * 10) + 20, points, 97)):
        values[fields[0]][i] += 15
        scores[i] = 0.9 if n % 3 == 0 else 0.6
        severity = "critical" if n % 3 == 0 else "warning"
        marks.append(AnomalyMark(times[i], fields[0], values[fields[0]][i], severity, scores[i], alert=n % 2 == 0))
    if len(fields) > 1:
        values[fields[1]][points // 2] = None  # a reading without that field
    by_severity = {s: sum(m.severity == s for m in marks) for s in ("critical", "warning")}
    return DeviceTrace(device_id, points, by_severity, times, values, scores, marks)


def empty_report() -> RunReport:
    return RunReport(summary={}, devices=[], models=[], evaluations=[])


class _Page(HTMLParser):
    """Every tag's attributes, the picker's options and the page's embedded data."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.options: list[str] = []
        self.data_text = ""
        self._in: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = "option" if tag == "option" else "data" if dict(attrs).get("id") == "report-data" else None
        if self._in == "option":
            self.options.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "option":
            self.options[-1] += data
        elif self._in == "data":
            self.data_text += data


# -- the page's text -------------------------------------------------------------------------------


def test_page_loads_nothing_from_outside() -> None:
    page = _Page(render(synthetic_report()))
    assert [attrs for tag, attrs in page.tags if tag == "script" and "src" in attrs] == []
    assert [tag for tag, _ in page.tags if tag in ("link", "img", "iframe")] == []
    urls = [v for _, attrs in page.tags for v in attrs.values() if v and re.match(r"\s*(https?:)?//", v)]
    assert urls == []


def test_plotly_js_is_inlined_once() -> None:
    page = render(synthetic_report())
    assert page.count("plotly.js v") == 1


def test_picker_lists_every_device_most_anomalies_first_with_its_count() -> None:
    report = synthetic_report(devices=6)
    page = _Page(render(report))
    assert [option.split(" — ")[0] for option in page.options] == [d.device_id for d in report.devices]
    first = report.devices[0]
    assert (
        page.options[0]
        == f"{first.device_id} — {first.anomaly_count} anomalies ({first.anomalies_by_severity['critical']} critical)"
    )
    assert "<h2>Devices (6)</h2>" in render(report)


def test_header_shows_totals_and_rejections_by_reason() -> None:
    report = synthetic_report(devices=2, points=100)
    page = render(report)
    assert '<div class="number">204</div><div class="label">rows read</div>' in page
    assert '<div class="number">4</div><div class="label">rows rejected</div>' in page
    critical = report.summary["anomalies"]["critical"]
    assert f'<div class="number">{critical}</div><div class="label">critical anomalies</div>' in page
    assert "<td>bad_value</td><td class='n'>3</td>" in page
    assert "<td>missing_timestamp</td><td class='n'>1</td>" in page


def test_no_rejections_are_said_plainly() -> None:
    report = synthetic_report(devices=1, points=50)
    report.summary["rejected_by_reason"] = {}
    assert "no rejected rows" in render(report)


def test_embedded_device_data_gives_back_the_times_and_rounded_values() -> None:
    report = synthetic_report(devices=1, points=50)
    data = json.loads(_Page(render(report)).data_text)
    device, trace = data["devices"][0], report.devices[0]
    assert list(np.cumsum(device["t"])) == [round(t * 1000) for t in trace.times]
    assert device["values"]["humidity"][25] is None
    assert device["values"]["temperature"] == pytest.approx(trace.values["temperature"], rel=1e-4)
    assert device["scores"] == pytest.approx(trace.scores, abs=5e-4)
    assert len(device["marks"]) == len(trace.anomalies)


def test_a_device_id_cannot_break_out_of_the_page() -> None:
    report = synthetic_report(devices=1, points=20)
    report.devices[0].device_id = "</script><b>pump"
    page = _Page(render(report))
    assert [tag for tag, _ in page.tags if tag == "b"] == []
    assert json.loads(page.data_text)["devices"][0]["id"] == "</script><b>pump"


def test_default_run_sized_report_stays_under_10_mb() -> None:
    report = synthetic_report(devices=13, points=7_000, versions=2_500, fields=("value",))
    assert len(render(report).encode()) < 10_000_000


def test_empty_report_says_what_is_missing() -> None:
    page = render(empty_report())
    assert "<title>FLEAD run report</title>" in page
    assert "No devices in this run." in page
    assert "No global model versions in this run." in page
    assert "No live evaluations in this run" in page
    assert "no rejected rows" in page


def test_write_report_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old")
    write_report(synthetic_report(devices=1, points=20), path)
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


# -- in a real browser -------------------------------------------------------------------------------

CHROMIUM = os.environ.get("FLEAD_CHROMIUM") or shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH and FLEAD_CHROMIUM not set (.ci/run installs it)"
)


def chromium(url: str, *args: str) -> tuple[str, str]:
    """Headless Chromium on ``url``: (stdout, stderr); stderr carries the page's console."""
    command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    done = subprocess.run([*command, *args, url], capture_output=True, text=True, timeout=90, check=True)
    return done.stdout, done.stderr


@dataclass
class Drawn:
    """What Chromium made of a page: its DOM after the scripts ran, its console, a screenshot."""

    dom: str
    console: list[str]
    screenshot: Path

    def errors_shown(self) -> str:
        return re.search(r'<div id="errors"[^>]*>(.*?)</div>', self.dom, re.S).group(1)

    def chart(self, chart_id: str) -> str:
        """The DOM from a chart's element to the next chart's."""
        start = self.dom.index(f'id="{chart_id}"')
        end = self.dom.find('id="chart-', start + 1)
        return self.dom[start : end if end > 0 else len(self.dom)]


def draw(report: RunReport, folder: Path, address: str = "") -> Drawn:
    """One Chromium run (they take seconds): the DOM and a screenshot together."""
    path, shot = folder / "report.html", folder / "report.png"
    write_report(report, path)
    dom, log = chromium(
        path.as_uri() + address, "--dump-dom", f"--screenshot={shot}", "--window-size=1400,1800", "--hide-scrollbars"
    )
    return Drawn(dom, [line for line in log.splitlines() if "CONSOLE" in line], shot)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Drawn:
    """The page with a device picked by its address (a name that needs escaping there)."""
    report = synthetic_report()
    report.devices[-1].device_id = "pump 9/b"
    return draw(report, tmp_path_factory.mktemp("report"), f"#device={quote('pump 9/b', safe='')}")


@needs_chromium
def test_chromium_draws_every_chart_without_errors(drawn: Drawn) -> None:
    assert drawn.console == []
    assert drawn.errors_shown() == ""
    assert 'data-rendered="3"' in drawn.dom
    for chart in ("chart-device", "chart-models", "chart-evaluations"):
        assert 'class="main-svg"' in drawn.chart(chart), chart


@needs_chromium
def test_the_address_picks_any_device(drawn: Drawn) -> None:
    title = re.search(r'class="gtitle"[^>]*>([^<]*)<', drawn.chart("chart-device")).group(1)
    assert re.fullmatch(r"pump 9/b: 400 readings, \d+ anomalies \(\d+ critical, \d+ warning\)", unescape(title))


@needs_chromium
def test_the_screenshot_shows_the_charts(drawn: Drawn) -> None:
    pixels = read_png(drawn.screenshot)
    colours = {tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::7]}
    assert len(colours) > 300  # lines, markers and text antialiased against the background
    for colour in (FIELD_COLOURS[0], WARNING_COLOUR, CRITICAL_COLOUR):
        assert _pixels_near(pixels, colour) > 50, colour


@needs_chromium
def test_chromium_draws_an_empty_report_without_errors(tmp_path: Path) -> None:
    drawn = draw(empty_report(), tmp_path)
    assert drawn.console == []
    assert drawn.errors_shown() == ""
    assert 'data-rendered="0"' in drawn.dom
    assert "No devices in this run." in drawn.dom


def _pixels_near(pixels: np.ndarray, colour: str) -> int:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    distance = np.abs(pixels[:, :, :3].astype(int) - rgb).sum(axis=2)
    return int((distance < 24).sum())


def read_png(path: Path) -> np.ndarray:
    """An 8-bit RGB(A), non-interlaced PNG as a (height, width, channels) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, compressed = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            compressed.append(chunk)
        pos += 12 + length
    assert (depth, colour_type in (2, 6), interlace) == (8, True, 0)
    channels = 3 if colour_type == 2 else 4
    lines = np.frombuffer(zlib.decompress(b"".join(compressed)), np.uint8).reshape(height, 1 + width * channels)
    rows = np.zeros((height, width * channels), np.uint8)
    above = np.zeros(width * channels, np.uint8)
    for y, (kind, line) in enumerate(zip(lines[:, 0], lines[:, 1:], strict=True)):
        rows[y] = _unfilter(int(kind), line, above, channels)
        above = rows[y]
    return rows.reshape(height, width, channels)


def _unfilter(kind: int, line: np.ndarray, above: np.ndarray, channels: int) -> np.ndarray:
    """Undo one row's PNG filter; uint8 arithmetic wraps modulo 256 as the format wants."""
    if kind == 0:
        return line
    if kind == 1:
        return line.reshape(-1, channels).cumsum(axis=0, dtype=np.uint8).ravel()
    if kind == 2:
        return line + above
    row = bytearray(len(line))  # Average and Paeth depend on the row's own previous bytes
    raw, up = line.tolist(), above.tolist()
    for i, value in enumerate(raw):
        left = row[i - channels] if i >= channels else 0
        if kind == 3:
            row[i] = (value + (left + up[i]) // 2) & 255
            continue
        corner = up[i - channels] if i >= channels else 0
        p = left + up[i] - corner
        pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
        row[i] = (value + (left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner)) & 255
    return np.frombuffer(bytes(row), np.uint8)
