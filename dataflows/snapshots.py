"""Snapshots that say which build's shape they have, so that resuming from another build fails clearly.

Bytewax unpickles a step's snapshot into whatever classes this build has. A state class
whose fields changed would load half-way, or fail in the middle of a run (a device without a
field it needs), so each stateful step's snapshot is its state pickled on its own, tagged
with :data:`SNAPSHOT_FORMAT`, and unpickled only when the tag matches.
"""

from __future__ import annotations

import pickle
from typing import Any

SNAPSHOT_FORMAT = 2
"""The shape of the stateful steps' states. Raise it whenever one of their classes changes its
fields (1: the builds before snapshots were tagged)."""

Snapshot = tuple[int, bytes]


class IncompatibleSnapshot(RuntimeError):
    """A recovery store written by a build whose step states had another shape."""


def freeze(state: object) -> Snapshot:
    return SNAPSHOT_FORMAT, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def thaw(snapshot: object, step: str) -> Any:
    """The state inside ``snapshot``, or :class:`IncompatibleSnapshot` naming both formats.

    >>> thaw(freeze({"rows": 3}), "summary")
    {'rows': 3}
    """
    if isinstance(snapshot, tuple) and len(snapshot) == 2 and snapshot[0] == SNAPSHOT_FORMAT:
        return pickle.loads(snapshot[1])
    found = snapshot[0] if isinstance(snapshot, tuple) and snapshot and isinstance(snapshot[0], int) else 1
    raise IncompatibleSnapshot(
        f"cannot resume step {step!r} from this recovery store: it was written by a FLEAD build with "
        f"snapshot format {found}, and this build reads format {SNAPSHOT_FORMAT}. Resume with the build "
        "that wrote it, or start over with a new store (python -m bytewax.recovery DIR PARTITIONS)."
    )
