"""A replay's batches and models in a fixed order: FedAvg's side and the source's side."""

from __future__ import annotations

from operators.fedavg import GlobalModel
from operators.local_model import ModelParameters
from operators.replay_lockstep import IN_FLIGHT, BatchDone, BatchOrder, ReturnedModels, ShardUpdates


def model(version: int) -> GlobalModel:
    return GlobalModel(version, ModelParameters({}, 0.0), 0.5, 1, 1, 1, 0.0)


def test_a_batch_is_released_when_every_shard_reported_it_in_shard_order_whatever_the_arrival_order():
    order = BatchOrder(["a", "b", "c"])
    assert order.offer(ShardUpdates(0, "c", ["c0"])) == []
    assert order.offer(ShardUpdates(1, "a", ["a1"])) == []
    assert order.offer(ShardUpdates(0, "a", ["a0", "a0'"])) == []
    assert order.offer(ShardUpdates(1, "b", [])) == []
    assert order.offer(ShardUpdates(1, "c", ["c1"])) == []  # batch 1 is complete, batch 0 is not
    assert order.offer(ShardUpdates(0, "b", ["b0"])) == [(0, ["a0", "a0'", "b0", "c0"]), (1, ["a1", "c1"])]
    assert order.next_batch == 2
    assert order.reported == {}


def test_a_batch_without_updates_is_released_too():
    order = BatchOrder(["a", "b"])
    order.offer(ShardUpdates(0, "b", []))
    assert order.offer(ShardUpdates(0, "a", [])) == [(0, [])]


def test_the_source_may_run_in_flight_batches_ahead_of_the_last_done():
    returned = ReturnedModels()
    assert [returned.may_emit(n) for n in range(IN_FLIGHT + 1)] == [True] * IN_FLIGHT + [False]
    returned.read([BatchDone(0)])
    assert returned.may_emit(IN_FLIGHT) and not returned.may_emit(IN_FLIGHT + 1)


def test_a_model_goes_to_the_batch_in_flight_after_the_one_that_made_it_and_only_the_newest():
    returned = ReturnedModels()
    returned.read([model(1), model(2), BatchDone(0), model(3)])  # model 3's batch is not done yet
    assert returned.for_batch(IN_FLIGHT - 1) is None
    assert returned.for_batch(IN_FLIGHT) == model(2)
    assert returned.for_batch(IN_FLIGHT) is None  # handed over once
    returned.read([BatchDone(1), BatchDone(2)])
    assert returned.for_batch(IN_FLIGHT + 2) == model(3)


def test_at_the_end_the_rest_goes_out_marked_or_not():
    returned = ReturnedModels()
    returned.read([model(4), BatchDone(6), model(5)])
    assert returned.rest() == model(5)
    assert returned.rest() is None
