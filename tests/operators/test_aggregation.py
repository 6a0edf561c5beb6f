"""The robust siblings of FedAvg, checked against hand calculations."""

import pytest

from operators.aggregation import coordinate_median, fedavg, trimmed_mean


def test_trimmed_mean_drops_the_same_share_at_each_end_of_every_coordinate():
    # Ten clients, 0.2 of them trimmed at each end: the two lowest and the two highest of each
    # coordinate go, whichever clients they come from.
    # Coordinate 0: -50, 1..8, 90 -> -50, 1, 8 and 90 go -> the mean of 2..7 = 27 / 6 = 4.5.
    # Coordinate 1: -900, 10..80, 500 (the outliers' clients swapped) -> the mean of 20..70 = 45.
    first = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -50.0, 90.0]
    second = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 500.0, -900.0]
    vectors = [[x, y] for x, y in zip(first, second, strict=True)]
    assert trimmed_mean(vectors, [5] * 10, 0.2) == pytest.approx([4.5, 45.0])


def test_trimmed_mean_is_unweighted_and_cuts_down_to_whole_clients():
    # 0.1 of 4 clients is 0.4 of one: nothing is cut, and samples do not weigh.
    assert trimmed_mean([[0.0], [1.0], [2.0], [100.0]], [1, 1, 1, 1000], 0.1) == [103 / 4]
    # 0.25 of 4 is one client at each end: the mean of 1 and 2.
    assert trimmed_mean([[0.0], [1.0], [2.0], [100.0]], [1, 1, 1, 1000], 0.25) == [1.5]


def test_trimmed_mean_without_trimming_is_the_unweighted_mean():
    assert trimmed_mean([[1.0, 2.0], [3.0, 6.0]], [1, 9], 0.0) == [2.0, 4.0]


def test_median_of_an_odd_and_an_even_number_of_clients():
    assert coordinate_median([[1.0, 9.0], [5.0, 3.0], [100.0, -7.0]], [1, 1, 1]) == [5.0, 3.0]
    assert coordinate_median([[1.0], [5.0], [7.0], [100.0]], [1, 1, 1, 1]) == [6.0]


def test_a_client_without_samples_is_left_out_by_every_rule():
    vectors, samples = [[1.0], [2.0], [3.0], [1000.0]], [1, 1, 1, 0]
    assert fedavg(vectors, samples) == [2.0]
    assert coordinate_median(vectors, samples) == [2.0]
    assert trimmed_mean(vectors, samples, 0.0) == [2.0]


def test_one_wild_client_moves_the_median_and_the_trimmed_mean_little_and_fedavg_far():
    honest = [[1.0], [1.1], [0.9], [1.0], [1.05], [0.95], [1.0], [1.0], [1.0]]
    vectors, samples = [*honest, [100.0]], [10] * 9 + [1000]
    assert fedavg(vectors, samples)[0] == pytest.approx((90.0 + 100_000.0) / 1090)
    assert coordinate_median(vectors, samples) == [1.0]
    # 0.1 of 10: the lowest (0.9) and the highest (100) go; the other eight add up to 8.1.
    assert trimmed_mean(vectors, samples, 0.1)[0] == pytest.approx(8.1 / 8)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: trimmed_mean([[1.0]], [1, 2], 0.1), "sample counts"),
        (lambda: coordinate_median([[1.0], [1.0, 2.0]], [1, 1]), "length"),
        (lambda: coordinate_median([[1.0]], [0]), "more than 0"),
        (lambda: trimmed_mean([[1.0]], [1], 0.5), "trim_fraction"),
    ],
)
def test_inconsistent_inputs_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
