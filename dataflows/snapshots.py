"""Snapshots that say which build's shape they have, so that resuming from another build fails clearly.

Bytewax unpickles a step's snapshot into whatever classes this build has. A state class
whose fields changed would load half-way, or fail in the middle of a run (a device without a
field it needs), so each stateful step's snapshot is stored as its state pickled on its own,
tagged with :data:`SNAPSHOT_FORMAT`, and unpickled only when the tag matches.
"""

from __future__ import annotations

import pickle
from typing import Any

SNAPSHOT_FORMAT = 12
"""The shape of the stateful steps' states. Raise it whenever one of their classes changes its
fields (1: the builds before snapshots were tagged; 2: before the calibrated score's state;
3: before the run report's state; 4: before shards dropped idle devices; 5: before FedAvg's
robust rules, bounds and privacy accountant; 6: before FedAvg held its rules as one object;
7: before a shard kept its devices as arrays; 8: before a round's base lived in the device's
row, the shards chose the run report's devices, and shard keys were spread over workers; 9: before
FedAvg kept the order of a replay's batches; 10: before FedAvg kept its recent change norms in order;
11: before the run report thinned its global versions)."""

StoredSnapshot = tuple[int, bytes]
"""What a builder gets back from a recovery store: the format, and the state's pickle."""


class Snapshot:
    """A step's state as its ``snapshot()`` returns it.

    Bytewax asks for snapshots at every epoch even without a recovery store, and pickles them
    only to write one; so the state is pickled here only then, as the plain tuple
    ``(SNAPSHOT_FORMAT, the state's pickle)`` that :func:`thaw` reads back.
    """

    __slots__ = ("state",)

    def __init__(self, state: object) -> None:
        self.state = state

    def __reduce__(self) -> tuple[type[tuple], tuple[StoredSnapshot]]:
        return tuple, ((SNAPSHOT_FORMAT, pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)),)


class IncompatibleSnapshot(RuntimeError):
    """A recovery store written by a build whose step states had another shape."""


def thaw(stored: object, step: str) -> Any:
    """The state in a stored snapshot, or :class:`IncompatibleSnapshot` naming both formats.

    >>> thaw(pickle.loads(pickle.dumps(Snapshot({"rows": 3}))), "summary")
    {'rows': 3}
    """
    if isinstance(stored, tuple) and len(stored) == 2 and stored[0] == SNAPSHOT_FORMAT:
        return pickle.loads(stored[1])
    found = stored[0] if isinstance(stored, tuple) and stored and isinstance(stored[0], int) else 1
    raise IncompatibleSnapshot(
        f"cannot resume step {step!r} from this recovery store: it was written by a FLEAD build with "
        f"snapshot format {found}, and this build reads format {SNAPSHOT_FORMAT}. Resume with the build "
        "that wrote it, or start over with a new store (python -m bytewax.recovery DIR PARTITIONS)."
    )


class ChangedShards(IncompatibleSnapshot):
    """A recovery store written with another ``FLEAD_SHARDS``: each shard's snapshot holds the
    devices that ``crc32(device_id) % FLEAD_SHARDS`` sent it, so with another count most devices
    would go to a shard that does not hold their state, and start over without a word."""

    def __init__(self, stored: int, configured: int) -> None:
        super().__init__(
            f"cannot resume from this recovery store with FLEAD_SHARDS={configured}: it was written with "
            f"FLEAD_SHARDS={stored}, and each shard's snapshot holds the devices that count put there. "
            f"Resume with FLEAD_SHARDS={stored}, or start over with a new store "
            "(python -m bytewax.recovery DIR PARTITIONS)."
        )
