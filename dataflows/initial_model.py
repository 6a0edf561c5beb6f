"""``FLEAD_INITIAL_MODEL``: a deployment that starts from a global model kept in a file.

The warm start of a new site, or the rollback of a fleet to a version that behaved. The
file's model is published as the first global version of the run, numbered after every
version that exists (a rollback to version 10 on a topic that reached 50 makes version 51
with version 10's weights), so it is in the tables and on the topic like any version; every
shard adopts it before its first readings, so the devices' first rounds start from it; and
FedAvg goes on from it. It applies to a start without recovery state: a resumed run goes on
from its snapshot, and the file's model, once published, is not published again.
"""

from __future__ import annotations

from dataclasses import replace

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.fedavg import GlobalModel


def starting_model(from_file: GlobalModel, newest: GlobalModel | None) -> GlobalModel:
    """``from_file`` renumbered after the newest version that exists (``newest``, if any).

    >>> from operators.local_model import ModelParameters
    >>> kept = GlobalModel(10, ModelParameters({}, 0.0), None, 1, 1, 1, 0.0)
    >>> starting_model(kept, None).version, starting_model(kept, replace(kept, version=50)).version
    (11, 51)
    """
    after = max(from_file.version, newest.version if newest is not None else 0)
    return replace(from_file, version=after + 1)


class InitialModelSource(FixedPartitionedSource[GlobalModel, bool]):
    """Emits ``model`` once; its resume state says whether it has."""

    def __init__(self, model: GlobalModel) -> None:
        self._model = model

    def list_parts(self) -> list[str]:
        return ["initial_model"]

    def build_part(self, step_id: str, for_part: str, resume_state: bool | None) -> _InitialModelPartition:
        return _InitialModelPartition(self._model, bool(resume_state))


class _InitialModelPartition(StatefulSourcePartition[GlobalModel, bool]):
    def __init__(self, model: GlobalModel, emitted: bool) -> None:
        self._model = model
        self._emitted = emitted

    def next_batch(self) -> list[GlobalModel]:
        if self._emitted:
            raise StopIteration
        self._emitted = True
        return [self._model]

    def snapshot(self) -> bool:
        return self._emitted
