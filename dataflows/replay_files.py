"""Reading replay inputs: JSON Lines files and CSV files, merged into one stream in time order.

- ``*.jsonl`` / ``*.ndjson``: one message per line in the schema of ``design.md`` (a ``*.json``
  file too when it is named on its own; in a directory ``*.json`` is taken for metadata such
  as NAB's label files, and skipped).
- ``*.csv``: a ``timestamp`` column, numeric telemetry columns and an optional label column;
  the device is the ``device_id`` column if there is one, else the path relative to the
  replayed directory without ``.csv`` (the file's stem when a single file is replayed).

Each file is expected in time order (as logs and exports are); files are merged by
timestamp. A rejected row keeps its place in its file's order. A single JSON Lines file
needs no merging, so its lines go out undecoded (:class:`RawMessage`), to be decoded by the
shard that owns their device.

A JSON line's message is the line without its ``\n`` (a blank line is no message); a CSV row
is checked as the message it stands for, its size (its cells' UTF-8 and the commas between
them) against the same limit.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

from operators.messages import (
    InvalidMessage,
    MessageLimits,
    RawMessage,
    Rejection,
    Telemetry,
    decode_message,
    excerpt,
    peek_device_id,
    validate_message,
)

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIX = ".csv"

Record = Telemetry | Rejection | RawMessage


class BytesRead:
    """The bytes of the rows read so far: a JSON line with its line end, a CSV row as its
    cells' characters and the separators between them (its bytes, for ASCII)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


def replay_files(path: Path) -> list[Path]:
    """The files a replay of ``path`` reads, in a stable order."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (*JSON_LINES_SUFFIXES, CSV_SUFFIX))
    if not files:
        raise FileNotFoundError(f"no .jsonl, .ndjson or .csv files under {path}")
    return files


def read_replay(
    path: Path, limits: MessageLimits, undecoded: bool = False, tally: BytesRead | None = None
) -> Iterator[Record]:
    """Every row of every file under ``path``, valid or rejected, merged in timestamp order.

    With ``undecoded``, the lines of a single JSON Lines file come as :class:`RawMessage`
    where their device id can be read without decoding them. ``tally`` counts the rows' bytes
    as they are read (a merge reads one row ahead in each file).
    """
    files = replay_files(path)
    root = path if path.is_dir() else path.parent
    tally = tally or BytesRead()
    if len(files) == 1:
        return _read_file(files[0], root, limits, single=path.is_file(), decode=not undecoded, tally=tally)
    streams = [_timed(_read_file(file, root, limits, path.is_file(), True, tally)) for file in files]
    return (record for _, record in heapq.merge(*streams, key=lambda pair: pair[0]))


def _timed(records: Iterator[Record]) -> Iterator[tuple[float, Record]]:
    """Pair each record with a merge time; a rejection takes the time of the row before it."""
    last = float("-inf")
    for record in records:
        if isinstance(record, Telemetry):
            last = record.timestamp
        yield last, record


def _read_file(
    file: Path, root: Path, limits: MessageLimits, single: bool, decode: bool, tally: BytesRead
) -> Iterator[Record]:
    if file.suffix.lower() == CSV_SUFFIX:
        device_id = file.stem if single else file.relative_to(root).with_suffix("").as_posix()
        return _read_csv(file, device_id, limits, tally)
    return _read_json_lines(file, limits, decode, tally)


READ_CHUNK_BYTES = 1 << 16


def _read_json_lines(file: Path, limits: MessageLimits, decode: bool, tally: BytesRead) -> Iterator[Record]:
    """Each line decoded, or (``decode=False``) undecoded when its device id can be read plainly.

    Lines are read 64 KiB at a time; an undecoded line is stamped with the time its chunk
    was read (the reading of a line is its ingestion in a replay).
    """
    source = f"file:{file}"
    new_raw_message = tuple.__new__
    line_number = 0
    with file.open("rb") as lines:
        while chunk := lines.readlines(READ_CHUNK_BYTES):
            read_at = time.time()
            tally.total += sum(map(len, chunk))
            for line in chunk:
                line_number += 1
                if line.isspace():
                    continue
                if line[-1] == 10:  # b"\n": the message is the line without it
                    line = line[:-1]
                device_id = None if decode else peek_device_id(line)
                if device_id is not None:
                    yield new_raw_message(RawMessage, (device_id, line, source, line_number, read_at))
                    continue
                record = decode_message(line, source, limits)
                if isinstance(record, Rejection):
                    record.source = f"{source}:{line_number}"
                yield record


CSV_FIELD_LIMIT = (1 << 31) - 1
"""The csv module's own limit on a cell (131,072 characters by default, past which it raises);
rows are measured against ``FLEAD_MAX_MESSAGE_BYTES`` instead, as messages are."""


def _read_csv(file: Path, default_device_id: str, limits: MessageLimits, tally: BytesRead) -> Iterator[Record]:
    source = f"file:{file}"
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with file.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        try:
            columns = CsvColumns(header, limits)
        except InvalidMessage as exc:
            yield Rejection(exc.reason, excerpt(",".join(header)), f"{source}:1", time.time(), exc.detail)
            return
        for row_number in itertools.count(2):
            try:
                row = next(reader, None)
            except csv.Error as exc:  # not expected with these settings: the row is lost, not the file
                yield Rejection("invalid_row", "", f"{source}:{row_number}", time.time(), str(exc)[:200])
                continue
            if row is None:
                return
            tally.total += sum(map(len, row)) + len(row)
            if not row:
                continue
            try:
                _check_row_size(row, limits.max_bytes)
                if columns.fields is None:
                    columns.infer_fields(row)
                yield columns.telemetry(row, default_device_id, limits)
            except InvalidMessage as exc:
                yield Rejection(exc.reason, excerpt(",".join(row)), f"{source}:{row_number}", time.time(), exc.detail)


def _check_row_size(row: list[str], max_bytes: int) -> None:
    """A row is as large as its cells' UTF-8 and the commas between them (its text unquoted)."""
    characters = sum(map(len, row)) + len(row) - 1
    if characters * 4 <= max_bytes:  # 4 bytes a character at most: no need to encode
        return
    size = characters if characters > max_bytes else len(",".join(row).encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidMessage("oversized_message", f"a row of {size} bytes or more > {max_bytes}")


class CsvColumns:
    """Which CSV column is the time, the device, the label, and the telemetry fields.

    Without an explicit field list, the telemetry fields are the columns whose first
    data row holds numbers, except the time, device and label columns.
    """

    def __init__(self, header: list[str], limits: MessageLimits) -> None:
        names = [name.strip() for name in header]
        if "timestamp" not in names:
            raise InvalidMessage("missing_timestamp", "the CSV header has no timestamp column")
        self.index = {name: i for i, name in enumerate(names)}
        self.timestamp = self.index["timestamp"]
        self.device = self.index.get("device_id")
        self.label = self.index.get(limits.label_key)
        self.reserved = {"timestamp", "device_id", limits.label_key}
        self.fields: list[tuple[str, int]] | None = None
        if limits.fields is not None:
            missing = sorted(limits.fields - set(names))
            if missing:
                raise InvalidMessage("missing_field", f"the CSV header has no column {missing[0]}")
            self.fields = [(name, self.index[name]) for name in sorted(limits.fields)]

    def infer_fields(self, row: list[str]) -> None:
        fields = []
        for name, i in self.index.items():
            if name in self.reserved or i >= len(row):
                continue
            try:
                float(row[i])
            except ValueError:
                continue
            fields.append((name, i))
        if not fields:
            raise InvalidMessage("missing_data", "no numeric telemetry column in the first row")
        self.fields = fields

    def telemetry(self, row: list[str], default_device_id: str, limits: MessageLimits) -> Telemetry:
        """The row as the message it stands for, checked by the one validation every input
        goes through (``operators/messages.py``)."""
        if len(row) < len(self.index):
            raise InvalidMessage("invalid_row", f"{len(row)} columns, the header has {len(self.index)}")
        message: dict[str, object] = {
            "device_id": row[self.device] if self.device is not None else default_device_id,
            "timestamp": row[self.timestamp].strip(),
            "data": {name: _cell_number(row[i]) for name, i in self.fields or ()},
        }
        if self.label is not None and row[self.label].strip():
            message[limits.label_key] = _cell_number(row[self.label])
        now = time.time()
        reading = validate_message(message, limits, now)
        reading.ingested_at = now
        return reading


def _cell_number(text: str) -> float | str:
    """A cell's number, or its text for the validation to refuse."""
    try:
        return float(text)
    except ValueError:
        return text
