import pickle

import pytest

from dataflows.snapshots import SNAPSHOT_FORMAT, IncompatibleSnapshot, Snapshot, thaw
from operators.fedavg import FedAvgAggregator


def test_a_state_survives_its_snapshot_as_bytewax_stores_it():
    aggregator = FedAvgAggregator(every_updates=20, version=7)
    stored = pickle.loads(pickle.dumps(Snapshot(aggregator)))
    assert stored[0] == SNAPSHOT_FORMAT
    resumed = thaw(stored, "fedavg")
    assert resumed == aggregator


def test_a_snapshot_of_another_format_is_refused_naming_the_step_and_both_formats():
    state = pickle.dumps(FedAvgAggregator(every_updates=20))
    with pytest.raises(
        IncompatibleSnapshot, match=rf"step 'fedavg'.* format {SNAPSHOT_FORMAT + 1}.* format {SNAPSHOT_FORMAT}\b"
    ):
        thaw((SNAPSHOT_FORMAT + 1, state), "fedavg")


def test_a_snapshot_from_before_formats_were_tagged_is_refused():
    with pytest.raises(IncompatibleSnapshot, match=r"snapshot format 1, .*new store"):
        thaw(FedAvgAggregator(every_updates=20), "fedavg")


def test_a_state_is_pickled_only_when_its_snapshot_is():
    # Bytewax asks every step for a snapshot at each epoch, with or without a recovery store.
    snapshot = Snapshot(lambda: None)  # a lambda cannot be pickled
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(snapshot)
