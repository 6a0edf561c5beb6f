"""The replay input: rows of files in time order, in numbered batches that carry the global models.

Each batch goes to every shard, and the source keeps step with FedAvg through the loopback
(``operators/replay_lockstep.py``), so that the same input gives the same results with any
number of workers and processes.

When the rows run out, the source closes the devices' partial rounds one slice of a shard
per batch (``close_rounds``), :data:`CLOSING_SLICES` slices per shard, rather than leaving
them all to the end of the input, where every device of the fleet would send its last update
at the same moment: at 10,000 one-field devices that burst alone raised the peak RSS from
~3 KiB to ~8 KiB per device, and closing a whole shard at once still made 78 MB of the peak
of a replay of 100,000 devices in 4 shards.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows import stopping
from dataflows.loopback import LoopbackReader
from dataflows.replay_files import BytesRead, Record, read_replay
from dataflows.snapshots import IncompatibleSnapshot
from dataflows.thread_state import hold_thread_state
from operators.messages import MessageLimits
from operators.replay_lockstep import ReturnedModels
from operators.run_totals import SourceProgress
from operators.sharding import ShardBatch, numbered_batches

ReplayItem = Record | SourceProgress | ShardBatch
ReplayPosition = tuple[int, int, int, int]
"""Rows emitted so far, the loopback offset, the slices whose rounds were closed, and the
batches emitted: the rows are in a fixed order, so a resume re-reads the files and skips
what was already emitted."""

CLOSING_SLICES = 16
"""Slices per shard in which the rounds are closed when the rows run out: with 100,000 devices
in 2 shards, one slice is about 3,100 devices' updates."""


class _ReplayPartition(StatefulSourcePartition[ReplayItem, ReplayPosition]):
    def __init__(
        self,
        path: Path,
        limits: MessageLimits,
        batch_size: int,
        loopback: Path,
        resume: ReplayPosition | None,
        on_fresh_start: Callable[[], None],
        shard_keys: list[str],
    ) -> None:
        if resume is None:
            on_fresh_start()
        elif len(resume) != len(ReplayPosition.__args__):
            raise IncompatibleSnapshot(
                f"cannot resume the replay from this recovery store: its position {resume!r} was written by "
                "an earlier FLEAD build. Resume with the build that wrote it, or start over with a new store."
            )
        position = resume if resume is not None else (0, None, 0, 0)
        rows_done, loopback_offset, self._slices_closed, self._batches = position
        self._shard_keys = shard_keys
        self._bytes = BytesRead()
        self._records = read_replay(path, limits, undecoded=True, tally=self._bytes)
        if rows_done:
            print(f"flead: resuming the replay of {path} after row {rows_done:,}", flush=True)
            next(islice(self._records, rows_done - 1, rows_done), None)
        self._bytes_reported = self._bytes.total
        self._rows_done = rows_done
        self._batch_size = batch_size
        self._loopback = LoopbackReader(loopback, loopback_offset)
        # The batches before a resume were done: the recovery store commits an epoch only
        # once every step, FedAvg included, has taken what the source emitted in it.
        self._returned = ReturnedModels(done=self._batches - 1)
        self._next_rows: list[Record] | None = None
        """Rows read ahead while waiting for FedAvg, not yet emitted (nor counted in the position)."""

    def next_batch(self) -> list[ReplayItem]:
        if stopping.requested():
            raise StopIteration
        returned = self._returned
        returned.read(self._loopback.poll())
        batch = self._batches
        if not returned.may_emit(batch):
            if self._next_rows is None:  # FedAvg is behind: read the next rows while waiting for it
                self._next_rows = self._read_rows()
            return []
        if self._slices_closed < len(self._shard_keys) * CLOSING_SLICES:
            model = returned.for_batch(batch)
            rows = self._next_rows if self._next_rows is not None else self._read_rows()
            self._next_rows = None
            self._batches += 1
            if rows:
                self._rows_done += len(rows)
                read, self._bytes_reported = self._bytes.total - self._bytes_reported, self._bytes.total
                return [SourceProgress(len(rows), read), *numbered_batches(rows, self._shard_keys, batch, model)]
            shard, part = divmod(self._slices_closed, CLOSING_SLICES)
            self._slices_closed += 1
            closing = numbered_batches([], self._shard_keys, batch, model)
            closing[shard].close_rounds = (part, CLOSING_SLICES)
            return closing
        if returned.done < batch - 1:
            return []  # every batch is out: wait for the last ones to be done
        model = returned.rest()
        if model is None:
            raise StopIteration
        return [ShardBatch(key, [], model=model) for key in self._shard_keys]

    def _read_rows(self) -> list[Record]:
        return list(islice(self._records, self._batch_size))

    def snapshot(self) -> ReplayPosition:
        return self._rows_done, self._loopback.offset, self._slices_closed, self._batches


class ReplaySource(FixedPartitionedSource[ReplayItem, ReplayPosition]):
    """One partition reads every file, so the merged stream keeps one global time order.

    ``on_fresh_start`` runs when the partition starts without resume state, before it
    emits anything: the place to clear an earlier run's outputs.
    """

    def __init__(
        self,
        path: Path,
        limits: MessageLimits,
        batch_size: int,
        loopback: Path,
        on_fresh_start: Callable[[], None],
        shard_keys: list[str],
    ) -> None:
        self._path = path
        self._limits = limits
        self._batch_size = batch_size
        self._loopback = loopback
        self._on_fresh_start = on_fresh_start
        self._shard_keys = shard_keys

    def list_parts(self) -> list[str]:
        return ["replay"]

    def build_part(self, step_id: str, for_part: str, resume_state: ReplayPosition | None) -> _ReplayPartition:
        hold_thread_state()
        return _ReplayPartition(
            self._path,
            self._limits,
            self._batch_size,
            self._loopback,
            resume_state,
            self._on_fresh_start,
            self._shard_keys,
        )
