import pickle

import pytest

from dataflows.snapshots import SNAPSHOT_FORMAT, ChangedShards, IncompatibleSnapshot, Snapshot, thaw
from dataflows.steps import FedAvgLogic
from operators.device import DetectionSettings
from operators.fedavg import FedAvgAggregator
from operators.sharding import shard_keys


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


def test_federation_state_resumes_only_with_the_shard_count_that_wrote_it():
    def fedavg(shards: int):
        return FedAvgLogic.builder(20, 0.0, DetectionSettings(), shard_keys(shards))

    stored = pickle.loads(pickle.dumps(fedavg(4)(None).snapshot()))
    assert fedavg(4)(stored).order.shards == shard_keys(4)
    with pytest.raises(ChangedShards, match=r"with FLEAD_SHARDS=2: it was written with FLEAD_SHARDS=4\b"):
        fedavg(2)(stored)
