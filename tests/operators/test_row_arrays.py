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
        assert pairs.used <= pairs.capacity <= max(pairs.used + 64, pairs.used * 5 // 4 + 1)
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
