import pickle
import tracemalloc
from typing import ClassVar

import numpy as np

from operators.row_arrays import Column, RowArrays


class _Pairs(RowArrays):
    columns: ClassVar[dict[str, Column]] = {"pair": Column((2,), np.float64, -1.0), "count": Column((), np.int64, 0)}


def test_rows_keep_their_values_as_the_arrays_grow_and_unused_rows_stay_a_small_share():
    pairs = _Pairs(capacity=4)
    for expected_row in range(10_000):
        row = pairs.new_row()
        assert row == expected_row
        assert pairs.pair[row].tolist() == [-1.0, -1.0] and pairs.count[row] == 0
        pairs.pair[row] = (row, -row)
        pairs.count[row] = row
        assert pairs.used <= pairs.capacity <= max(pairs.used + 64, pairs.used * 9 // 8 + 1)
    assert pairs.pair[:10_000, 0].tolist() == list(range(10_000))
    assert pairs.count[:10_000].tolist() == list(range(10_000))


def test_released_rows_are_reset_and_handed_out_again_before_the_arrays_grow():
    pairs = _Pairs(capacity=4)
    rows = [pairs.new_row() for _ in range(4)]
    pairs.count[rows] = 7
    pairs.release(rows[1:3])
    assert pairs.count.tolist() == [7, 0, 0, 7]
    assert sorted(pairs.new_row() for _ in range(2)) == rows[1:3]
    assert pairs.capacity == 4


def test_a_growth_does_not_hold_the_old_arrays_beside_the_new_ones():
    """A growth holds no second copy of the arrays: a shard's largest are tens of megabytes."""

    class Rings(RowArrays):
        columns: ClassVar[dict[str, Column]] = {"ring": Column((100,), np.float64, 0.0)}

    tracemalloc.start()
    try:
        rings = Rings(capacity=8192)  # 6.25 MiB
        for _ in range(8192):
            rings.new_row()
        tracemalloc.reset_peak()
        rings.new_row()  # grows by an eighth
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rings.capacity == 9216
    assert peak - current < 2**20


def test_arrays_that_cannot_grow_in_place_are_copied_with_their_rows():
    pairs = _Pairs(capacity=4)
    for row in range(4):
        pairs.new_row()
        pairs.count[row] = row + 1
        pairs.pair[row] = (row, row)
    held = pairs.count  # numpy refuses to resize an array referenced elsewhere
    restored = pickle.loads(pickle.dumps(pairs))  # unpickled arrays do not own their memory
    for grown in (pairs, restored):
        assert grown.new_row() == 4
        assert grown.count[:5].tolist() == [1, 2, 3, 4, 0]
        assert grown.pair[:5].tolist() == [[0, 0], [1, 1], [2, 2], [3, 3], [-1, -1]]
        assert (grown.pair[5:] == -1).all() and (grown.count[5:] == 0).all()
    assert held.tolist() == [1, 2, 3, 4]
