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
