"""Logistic models: a device's online model (River's logistic regression), and the plain parameters FedAvg moves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LOGIT_CAP = 35.0
"""exp() of more than this is 1 or 0 in a double anyway; the cap keeps it from overflowing."""

PROBABILITY_FLOOR = 1e-7
"""Log-loss uses probabilities clipped to [floor, 1 − floor] so that one confident miss is finite."""


def sigmoid(logit: float) -> float:
    logit = max(-LOGIT_CAP, min(LOGIT_CAP, logit))
    return 1.0 / (1.0 + math.exp(-logit))


def log_loss(probability: float, target: int) -> float:
    p = min(1.0 - PROBABILITY_FLOOR, max(PROBABILITY_FLOOR, probability))
    return -math.log(p if target else 1.0 - p)


@dataclass(frozen=True)
class ModelParameters:
    """The weights of a logistic model, as they travel between devices and FedAvg.

    >>> params = ModelParameters({"abs_z": 2.0}, intercept=-4.0)
    >>> round(params.probability({"abs_z": 3.0}), 3)
    0.881
    """

    weights: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0

    def logit(self, features: dict[str, float]) -> float:
        weights = self.weights
        total = self.intercept
        for name, x in features.items():
            total += weights.get(name, 0.0) * x
        return total

    def probability(self, features: dict[str, float]) -> float:
        return sigmoid(self.logit(features))

    def contributions(self, features: dict[str, float], top: int = 3) -> list[dict[str, float | str]]:
        """The terms that pushed this score most, largest |weight·value| first (the intercept is one)."""
        terms = [(name, x, self.weights.get(name, 0.0) * x) for name, x in features.items()]
        terms.append(("intercept", 1.0, self.intercept))
        terms.sort(key=lambda term: abs(term[2]), reverse=True)
        return [
            {"feature": name, "value": round(x, 4), "contribution": round(c, 4)}
            for name, x, c in terms[:top]
            if c != 0.0
        ]


CLIP_GRADIENT = 1e12
"""River's ``LogisticRegression`` default ``clip_gradient``: the bound on a step's gradient."""


class LocalModel:
    """A device's logistic model, trained one labelled reading at a time.

    River's ``LogisticRegression`` with log loss, plain SGD at a constant rate for the weights
    and the intercept, and no regularisation defines it: the weights are a plain dict, and
    every step and score does River's operations on the same numbers in the same order, so
    the weights come out bit for bit the same
    (``tests/operators/test_local_model.py`` holds it to ``learn_one``). The dataflow does not
    import River itself: its linear models bring SciPy's statistics, 0.7 s at every start.

    Parameters
    ----------
    learning_rate
        SGD step for the weights and the intercept.
    positive_weight
        Sample weight of a reading labelled anomalous; anomalies are rare, and an
        unweighted model learns to say "normal" always.
    """

    __slots__ = ("intercept", "learning_rate", "positive_weight", "weights")

    def __init__(self, learning_rate: float, positive_weight: float = 1.0) -> None:
        self.weights: dict[str, float] = {}
        self.intercept = 0.0
        self.learning_rate = learning_rate
        self.positive_weight = positive_weight

    def __getstate__(self) -> tuple[float, float, dict[str, float], float]:
        """Settings, weights and intercept: the whole state, as four values."""
        return self.learning_rate, self.positive_weight, self.weights, self.intercept

    def __setstate__(self, state: tuple[float, float, dict[str, float], float]) -> None:
        self.learning_rate, self.positive_weight, weights, self.intercept = state
        self.weights = dict(weights)

    def logit(self, features: dict[str, float]) -> float:
        """River's ``_raw_dot_one``: the weights' dot product with ``features``, summed in the
        features' order, plus the intercept."""
        weights = self.weights
        total = 0.0
        for name, x in features.items():
            total += weights.get(name, 0.0) * x
        return total + self.intercept

    def probability(self, features: dict[str, float]) -> float:
        return sigmoid(self.logit(features))

    def learn(self, features: dict[str, float], target: int, labelled: bool = True, logit: float | None = None) -> None:
        """One SGD step towards ``target``: a label, or (``labelled=False``) the z-rule's decision.

        Only a label's anomaly weighs ``positive_weight``. The z-rule's decision is already
        what the model is to imitate; weighted up, it would shift the model's boundary below
        the rule's, and the model would flag a band of readings the rule itself calls normal
        (on the benchmark fleet a fifth of all readings, against the rule's 4.7 %).

        ``logit`` is what :meth:`logit` gives for ``features`` now, when the caller has just
        scored them: the step needs it, and it is the costliest part to compute again.

        This is River's ``learn_one`` for this model done in place: ``learn_one`` builds a
        masked copy of the weights, a gradient vector and a loss object call for every
        reading, three times the work.
        """
        if logit is None:
            logit = self.logit(features)
        # river.optim.losses.Log.gradient, with the label as ±1
        sign = 1 if target else -1
        margin = logit * sign
        if margin > 18.0:
            gradient = math.exp(-margin) * -sign
        elif margin < -18.0:
            gradient = float(-sign)
        else:
            gradient = -sign / (math.exp(margin) + 1.0)
        gradient *= self.positive_weight if target and labelled else 1.0
        gradient = max(-CLIP_GRADIENT, min(CLIP_GRADIENT, gradient))
        rate = self.learning_rate
        weights = self.weights
        for name, x in features.items():
            weights[name] = weights.get(name, 0.0) - (x * gradient) * rate
        self.intercept -= rate * gradient

    @property
    def trained(self) -> bool:
        """Whether the model has any weight yet: a new model has none, nor a copy of a global
        model that no label trained."""
        return bool(self.weights)

    @property
    def parameters(self) -> ModelParameters:
        return ModelParameters(dict(self.weights), self.intercept)

    def load(self, parameters: ModelParameters) -> None:
        """Start from another model's weights (a new global model)."""
        self.weights = dict(parameters.weights)
        self.intercept = parameters.intercept
