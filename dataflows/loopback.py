"""The replay-mode return path of global models: an append-only file that the source follows.

``sinks/loopback.py`` appends; :class:`LoopbackReader` here is the reading side.

Bytewax dataflows are acyclic, so a global model cannot flow back to the device stage along
an edge. In production it returns through the ``global-model-updates`` topic; in replay the
FedAvg output is appended to this file and the replay source reads new lines between
batches, like a consumer of that topic. A file rather than an in-memory queue because with
several processes (``-i/-a``) the FedAvg step and the replay source may live in different
processes. Every model carries its version, so a copy read twice (after a resume) is harmless.
After the models of each replay batch comes a line that marks the batch done
(``operators/replay_lockstep.py``).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from operators.fedavg import GlobalModel
from operators.replay_lockstep import BatchDone

LOOPBACK_FILE = ".loopback-global-models.jsonl"
DONE_KEY = "replay_batch_done"
"""The key of a line that marks a replay batch done: ``{"replay_batch_done": 7}``."""


def loopback_path(out_dir: Path) -> Path:
    return out_dir / LOOPBACK_FILE


class LoopbackReader:
    """Reads the models appended since the last call; ``offset`` is its resume state.

    The replay source owns the file: a fresh run (no resume state) empties it before any
    model can exist, so models of an earlier run in the same directory are never read.
    """

    def __init__(self, path: Path, offset: int | None) -> None:
        self.path = path
        if offset is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            offset = 0
        self.offset = offset

    def poll(self) -> list[GlobalModel | BatchDone]:
        try:
            if self.path.stat().st_size <= self.offset:
                return []
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        return [_item(orjson.loads(line)) for line in chunk[:complete].splitlines() if line]


def loopback_line(item: GlobalModel | BatchDone) -> bytes:
    """One line of the loopback file, as :meth:`LoopbackReader.poll` reads it back."""
    row = {DONE_KEY: item.batch} if type(item) is BatchDone else item.as_row()
    return orjson.dumps(row) + b"\n"


def _item(row: dict) -> GlobalModel | BatchDone:
    return BatchDone(row[DONE_KEY]) if DONE_KEY in row else GlobalModel.from_row(row)
