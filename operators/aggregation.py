"""The arithmetic of federated averaging, as a pure function over vectors and sample counts."""

from __future__ import annotations

from collections.abc import Sequence


def fedavg(weights: Sequence[Sequence[float]], samples: Sequence[int]) -> list[float]:
    """``Σ n_k·w_k / Σ n_k`` over clients k, coordinate by coordinate.

    >>> [round(w, 3) for w in fedavg(
    ...     [[0.45, 0.35, 0.25], [0.55, 0.25, 0.20], [0.48, 0.32, 0.23]], [500, 400, 300])]
    [0.491, 0.309, 0.228]
    """
    if len(weights) != len(samples):
        raise ValueError(f"{len(weights)} weight vectors but {len(samples)} sample counts")
    total = sum(samples)
    if total <= 0:
        raise ValueError("the sample counts must add up to more than 0")
    dimension = len(weights[0])
    averaged = [0.0] * dimension
    for vector, n in zip(weights, samples, strict=True):
        if len(vector) != dimension:
            raise ValueError(f"weight vectors differ in length: {len(vector)} != {dimension}")
        for i, w in enumerate(vector):
            averaged[i] += n * w
    return [w / total for w in averaged]


# The robust rules below are siblings of ``fedavg`` (Flower's ``aggregate_median`` and
# ``aggregate_trimmed_avg``). They are unweighted over clients, as Flower's are: a weight by
# samples is exactly what a device that floods the fleet inflates, and FedAvgAggregator
# already bounds each device's weight (a cap) before FedAvg. ``samples`` is taken for the
# same signature, and only a client with no samples is left out.


def _columns(vectors: Sequence[Sequence[float]], samples: Sequence[int]) -> list[list[float]]:
    """The vectors of the clients with samples, coordinate by coordinate (checked like ``fedavg``)."""
    if len(vectors) != len(samples):
        raise ValueError(f"{len(vectors)} weight vectors but {len(samples)} sample counts")
    kept = [vector for vector, n in zip(vectors, samples, strict=True) if n > 0]
    if not kept:
        raise ValueError("at least one client must have more than 0 samples")
    dimension = len(kept[0])
    for vector in kept:
        if len(vector) != dimension:
            raise ValueError(f"weight vectors differ in length: {len(vector)} != {dimension}")
    return [sorted(column) for column in zip(*kept, strict=True)]


def trimmed_mean(vectors: Sequence[Sequence[float]], samples: Sequence[int], trim_fraction: float) -> list[float]:
    """Coordinate by coordinate, the mean of the clients' values after dropping the lowest and the
    highest ``⌊trim_fraction·K⌋`` of the K clients (unweighted; a client with 0 samples is left out).

    Five clients, one of them far off, trimmed by 0.2: the lowest and the highest value of each
    coordinate go, and the mean of the three left is taken:

    >>> trimmed_mean([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -500.0]],
    ...              [10, 10, 10, 10, 10], 0.2)
    [3.0, 20.0]
    """
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be at least 0 and below 0.5, got {trim_fraction}")
    columns = _columns(vectors, samples)
    cut = int(trim_fraction * len(columns[0]))
    return [sum(kept) / len(kept) for kept in (column[cut : len(column) - cut] for column in columns)]


def coordinate_median(vectors: Sequence[Sequence[float]], samples: Sequence[int]) -> list[float]:
    """Coordinate by coordinate, the median of the clients' values (unweighted; the mean of the
    two middle values for an even number of clients; a client with 0 samples is left out).

    >>> coordinate_median([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [100.0, -500.0]], [10, 10, 10, 10])
    [2.5, 15.0]
    """
    columns = _columns(vectors, samples)
    middle = len(columns[0]) // 2
    if len(columns[0]) % 2:
        return [column[middle] for column in columns]
    return [(column[middle - 1] + column[middle]) / 2 for column in columns]


AGGREGATION_RULES = ("fedavg", "trimmed_mean", "median")
"""The names ``FLEAD_AGGREGATION`` accepts."""
