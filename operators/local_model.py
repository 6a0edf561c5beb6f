"""Logistic models: a device's online River model, and the plain parameters FedAvg moves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from river import linear_model, optim

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


_SHARED: dict[float, tuple[optim.SGD, optim.losses.Log, optim.schedulers.Constant]] = {}


def _shared_parts(learning_rate: float) -> tuple[optim.SGD, optim.losses.Log, optim.schedulers.Constant]:
    """One optimizer, loss and intercept schedule for every device with this learning rate.

    Plain SGD with a constant rate keeps no per-model state that changes a step (its
    iteration count only feeds schedules, and these are constant), so thousands of devices
    can share them: about 340 bytes less per device.
    """
    if learning_rate not in _SHARED:
        _SHARED[learning_rate] = (
            optim.SGD(learning_rate),
            optim.losses.Log(),
            optim.schedulers.Constant(learning_rate),
        )
    return _SHARED[learning_rate]


class LocalModel:
    """A device's River ``LogisticRegression``, trained one labelled reading at a time.

    Parameters
    ----------
    learning_rate
        SGD step for the weights and the intercept.
    positive_weight
        Sample weight of a reading labelled anomalous; anomalies are rare, and an
        unweighted model learns to say "normal" always.
    """

    __slots__ = ("_model", "learning_rate", "positive_weight")

    def __init__(self, learning_rate: float, positive_weight: float = 1.0) -> None:
        optimizer, loss, intercept_lr = _shared_parts(learning_rate)
        self._model = linear_model.LogisticRegression(optimizer=optimizer, loss=loss, intercept_lr=intercept_lr)
        self.learning_rate = learning_rate
        self.positive_weight = positive_weight

    def __getstate__(self) -> tuple[float, float, dict[str, float], float]:
        """Settings, weights and intercept are the whole state (the optimizer is shared and keeps
        none), so a snapshot holds four values instead of River's object graph."""
        return self.learning_rate, self.positive_weight, self._model.weights, self._model.intercept

    def __setstate__(self, state: tuple[float, float, dict[str, float], float]) -> None:
        learning_rate, positive_weight, weights, intercept = state
        self.__init__(learning_rate, positive_weight)
        self.load(ModelParameters(weights, intercept))

    def logit(self, features: dict[str, float]) -> float:
        # predict_proba_one's result dict costs more than the dot product it wraps (hot path).
        return self._model._raw_dot_one(features)

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

        This is River's ``learn_one`` for this model (log loss, plain SGD, a constant rate,
        no regularization) done in place: the same operations on the same numbers, so the
        weights come out bit for bit the same (a test holds it to ``learn_one``), at a third
        of its time. ``learn_one`` builds a masked copy of the weights, a gradient vector and
        a loss object call for every reading, and on the hot path that was a tenth of a
        replay.
        """
        model = self._model
        if logit is None:
            logit = model._raw_dot_one(features)
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
        clip = model.clip_gradient
        gradient = max(-clip, min(clip, gradient))
        rate = self.learning_rate
        weights = model._weights
        for name, x in features.items():
            weights[name] = weights.get(name, 0.0) - (x * gradient) * rate
        model.intercept -= rate * gradient

    @property
    def trained(self) -> bool:
        """Whether the model has any weight yet: a new model has none, nor a copy of a global
        model that no label trained."""
        return bool(self._model._weights)

    @property
    def parameters(self) -> ModelParameters:
        return ModelParameters(self._model.weights, self._model.intercept)

    def load(self, parameters: ModelParameters) -> None:
        """Start from another model's weights (a new global model), keeping the optimizer."""
        # River exposes the weights read-only; its VectorDict is updated in place rather than
        # replaced, so a device keeps the same long-lived objects round after round.
        weights = self._model._weights
        for name in [name for name in weights if name not in parameters.weights]:
            del weights[name]
        for name, value in parameters.weights.items():
            weights[name] = value
        self._model.intercept = parameters.intercept
