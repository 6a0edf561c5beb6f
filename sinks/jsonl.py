"""JSON Lines files in one directory, one partition per file, exactly once across resumes.

Like Bytewax's ``FileSink``, each file's resume state is its byte length at the last
snapshot: a resumed run truncates back to it before appending, so rows written after
the snapshot of an aborted run are written again once, not twice.

Rows are encoded (:func:`json_lines`) where they are made, before they reach the sink:
a file's partition lives on one worker, and encoded lines cross between processes as
one ``bytes`` rather than as dictionaries to pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from operators.compact_json import dumps

Row = dict[str, Any]


def reset_outputs(directory: Path, file_names: list[str], stale_names: list[str]) -> None:
    """Start a fresh run: every output file exists and is empty, and stale results are gone.

    Partitions are built only when their first row arrives, so without this a file that
    gets no rows in this run would keep an earlier run's rows.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in file_names:
        (directory / name).write_bytes(b"")
    for name in stale_names:
        (directory / name).unlink(missing_ok=True)


def json_lines(rows: list[Row]) -> bytes:
    newline = orjson.OPT_APPEND_NEWLINE
    return b"".join([dumps(row, newline) for row in rows])


class JsonLinesPartition(StatefulSinkPartition[bytes, int]):
    def __init__(self, path: Path, resume_offset: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("r+b" if path.exists() else "w+b")
        self._file.truncate(resume_offset or 0)
        self._file.seek(resume_offset or 0)

    def write_batch(self, values: list[bytes]) -> None:
        self._file.write(b"".join(values))
        self._file.flush()

    def snapshot(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class JsonLinesSink(FixedPartitionedSink[bytes, int]):
    """Appends ``(file name, JSON lines)`` items to ``directory/<file name>``."""

    def __init__(self, directory: Path, file_names: list[str]) -> None:
        self._directory = directory
        self._file_names = sorted(file_names)

    def list_parts(self) -> list[str]:
        return self._file_names

    def part_fn(self, item_key: str) -> int:
        return self._file_names.index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> JsonLinesPartition:
        return JsonLinesPartition(self._directory / for_part, resume_state)
