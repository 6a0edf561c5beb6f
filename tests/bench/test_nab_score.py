"""NAB's scoring rule on series small enough to score by hand."""

import math

import pytest

from bench.nab_score import PROFILES, Corpus, at_threshold, best, probation_rows, scaled_sigmoid, series_rows

STANDARD = PROFILES["standard"]
EARLIEST = scaled_sigmoid(-1.0)


def test_the_scaled_sigmoid_at_the_edges_of_a_window():
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661: the window's first row
    assert scaled_sigmoid(0.0) == 0.0  # its end
    assert scaled_sigmoid(1.0) == pytest.approx(-EARLIEST)  # one window length past it
    assert scaled_sigmoid(3.0) == -1.0 and scaled_sigmoid(10.0) == -1.0


def test_the_probationary_period_is_15_percent_capped_at_750_rows():
    assert probation_rows(100) == 15
    assert probation_rows(22_695) == 750


def corpus_of(scores: list[float], windows: list[tuple[int, int]]) -> Corpus:
    return Corpus.of({"s": (scores, windows)})


def test_a_detection_on_a_windows_first_row_is_perfect():
    # 100 rows: rows 0-14 probationary, one window over rows 50-59
    scores = [0.0] * 100
    scores[50] = 1.0
    corpus = corpus_of(scores, [(50, 59)])
    result = best(corpus, STANDARD)
    assert result.raw == pytest.approx(1.0)  # A_TP · σ(−1)/σ(−1)
    assert result.score == pytest.approx(100.0)


def test_never_flagging_scores_zero_and_a_miss_costs_a_fn():
    corpus = corpus_of([0.0] * 100, [(50, 59)])
    assert at_threshold(corpus, STANDARD, 0.5).raw == -1.0
    assert at_threshold(corpus, STANDARD, 0.5).score == 0.0


def test_a_late_detection_earns_less_and_only_the_first_in_a_window_counts():
    scores = [0.0] * 100
    scores[55] = scores[57] = 1.0  # row 55 of the window 50-59: position −(59 − 55 + 1)/10 = −0.5
    result = at_threshold(corpus_of(scores, [(50, 59)]), STANDARD, 0.5)
    assert result.raw == pytest.approx(scaled_sigmoid(-0.5) / EARLIEST)  # 0.84828 / 0.98661 = 0.8598
    # normalised: (raw − null) / (perfect − null) with null −1 and perfect 1
    assert result.score == pytest.approx(100 * (result.raw + 1) / 2)


def test_false_positives_cost_a_fp_times_the_sigmoid_continued_past_the_window():
    scores = [0.0] * 100
    scores[20] = 1.0  # before any window: the full cost, −0.11
    scores[64] = 1.0  # 5 rows after the window 50-59 ends: |59 − 64| / (10 − 1) = 0.556 past it
    scores[90] = 1.0  # 31 rows after: 3.44 window lengths: the full cost
    rows = series_rows("s", scores, [(50, 59)])
    assert [row.fp_value for row in rows if row.score == 1.0] == pytest.approx([-1.0, scaled_sigmoid(5 / 9), -1.0])
    result = at_threshold(corpus_of(scores, [(50, 59)]), STANDARD, 0.5)
    # the window is missed (−1) and each false positive costs 0.11 times its sigmoid
    assert result.raw == pytest.approx(-1.0 + 0.11 * (-1.0 + scaled_sigmoid(5 / 9) - 1.0))


def test_detections_in_the_probationary_period_neither_earn_nor_cost():
    scores = [0.0] * 100
    scores[5] = 1.0
    assert at_threshold(corpus_of(scores, [(50, 59)]), STANDARD, 0.5).raw == -1.0


def test_the_best_threshold_is_chosen_over_the_whole_corpus_per_profile():
    # one series with its window flagged early at 0.6 and a false positive at 0.9;
    # a second series with a false positive at 0.7 and its window flagged at 0.8
    a = [0.0] * 100
    a[50], a[30] = 0.6, 0.9
    b = [0.0] * 100
    b[30], b[51] = 0.7, 0.8
    corpus = Corpus.of({"a": (a, [(50, 59)]), "b": (b, [(50, 59)])})
    tp_a, tp_b = 1.0, scaled_sigmoid(-(59 - 51 + 1) / 10) / EARLIEST
    # at 0.6 every detection counts: two windows found, two false positives
    assert best(corpus, STANDARD).threshold == 0.6
    assert best(corpus, STANDARD).raw == pytest.approx(tp_a + tp_b - 2 * 0.11)
    # reward low FN: misses cost 2; the same threshold, normalised against null −4 and perfect 2
    low_fn = best(corpus, PROFILES["reward_low_fn"])
    assert low_fn.score == pytest.approx(100 * (tp_a + tp_b - 0.22 + 4) / 6)
