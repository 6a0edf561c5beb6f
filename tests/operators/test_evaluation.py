import pytest

from operators.evaluation import FINISHED, ConfusionCounts, EvaluationAggregator


def counts_of(pairs: list[tuple[int, int]], start: float = 0.0) -> ConfusionCounts:
    counts = ConfusionCounts()
    for i, (predicted, actual) in enumerate(pairs):
        counts.add(predicted, actual, start + i)
    return counts


def test_metrics_by_hand():
    # tp=3 fp=1 fn=2 tn=4 → precision 3/4, recall 3/5, f1 2·0.75·0.6/1.35 = 2/3, accuracy 7/10
    counts = counts_of([(1, 1)] * 3 + [(1, 0)] + [(0, 1)] * 2 + [(0, 0)] * 4)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (3, 1, 2, 4)
    assert counts.precision == pytest.approx(0.75)
    assert counts.recall == pytest.approx(0.6)
    assert counts.f1 == pytest.approx(2 / 3)
    assert counts.accuracy == pytest.approx(0.7)


def test_no_positives_gives_zeros_not_errors():
    counts = counts_of([(0, 0)] * 3)
    assert (counts.precision, counts.recall, counts.f1) == (0.0, 0.0, 0.0)


def test_merge_adds_counts_and_widens_the_window():
    a = counts_of([(1, 1)], start=100.0)
    a.merge(counts_of([(0, 1), (0, 0)], start=50.0))
    assert (a.tp, a.fn, a.tn, a.n) == (1, 1, 1, 3)
    assert (a.first_timestamp, a.last_timestamp) == (50.0, 100.0)


def test_a_version_is_emitted_once_every_shard_moved_past_it():
    aggregator = EvaluationAggregator(shards=3)
    assert aggregator.add({}, {(0, 1): 3}) == []
    assert aggregator.add({1: counts_of([(1, 1)])}, {(1, 2): 1}) == []
    assert aggregator.add({1: ConfusionCounts()}, {(1, 2): 1}) == []
    [row] = aggregator.add({1: counts_of([(1, 0), (0, 0)], start=10.0)}, {(1, 3): 1})
    assert row["global_version"] == 1
    assert (row["n"], row["tp"], row["fp"], row["tn"], row["fn"]) == (3, 1, 1, 1, 0)
    assert row["window_start"] == "1970-01-01T00:00:00.000Z"
    assert row["window_end"] == "1970-01-01T00:00:11.000Z"
    assert aggregator.open == {}
    assert aggregator.shards_at == {2: 2, 3: 1}


def test_a_move_past_several_versions_completes_each_of_them():
    aggregator = EvaluationAggregator(shards=2)
    aggregator.add({}, {(0, 1): 2})
    assert aggregator.add({1: counts_of([(1, 1)])}, {(1, 4): 1}) == []  # the other shard still holds v1
    [row] = aggregator.add({1: counts_of([(0, 0)])}, {(1, 6): 1})  # past v1 to v5, never scoring with them
    assert (row["global_version"], row["n"]) == (1, 2)
    assert aggregator.shards_at == {4: 1, 6: 1}
    [row] = aggregator.add({4: counts_of([(0, 1)])}, {(4, 6): 1})
    assert (row["global_version"], row["n"]) == (4, 1)


def test_counts_combined_from_several_shards_count_as_that_many_moves():
    aggregator = EvaluationAggregator(shards=3)
    aggregator.add({}, {(0, 1): 3})
    assert aggregator.add({1: counts_of([(1, 1)])}, {(1, 2): 2}) == []
    [row] = aggregator.add({1: counts_of([(0, 0)])}, {(1, 2): 1})
    assert row["n"] == 2


def test_moves_of_one_shard_combined_in_one_item_apply_in_any_order():
    aggregator = EvaluationAggregator(shards=1)
    rows = aggregator.add({1: counts_of([(1, 1)]), 2: counts_of([(0, 0)])}, {(1, 2): 1, (0, 1): 1, (2, 3): 1})
    assert [row["global_version"] for row in rows] == [1, 2]
    assert aggregator.shards_at == {3: 1}


def test_finished_shards_complete_every_version():
    aggregator = EvaluationAggregator(shards=1)
    aggregator.add({}, {(0, 2): 1})
    assert [row["global_version"] for row in aggregator.add({2: counts_of([(1, 1)])}, {(2, FINISHED): 1})] == [2]


def test_finish_emits_the_open_versions_that_scored_something():
    aggregator = EvaluationAggregator(shards=2)
    aggregator.add({2: counts_of([(1, 1)]), 3: ConfusionCounts()}, {(0, 2): 1})
    assert [row["global_version"] for row in aggregator.finish()] == [2]
