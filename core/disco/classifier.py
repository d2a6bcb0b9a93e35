"""The stop classifier: standardized features -> logistic regression or a one-hidden-layer MLP.

It gives each draft token the probability that the target accepts it (``continue_probs``); the drafter
stops after a token whose probability is below the threshold, keeping that token as the draft's last
(``core.drafting``), exactly as the confidence stop does. The decision reads only the drafter's own
features, so it never depends on the target: verification stays lossless whatever the weights are.

Weights (by name, the safetensors layout of ``core.disco.artifact``): ``mean`` and ``std`` [F] (the
standardization), ``layer0.weight`` [H or 1, F] and ``layer0.bias``, and for an MLP ``layer1.weight``
[1, H] and ``layer1.bias`` (ReLU between the layers).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

# (features [r, F]) -> [r] bool: the rows whose draft ends with the token just drawn
StopRule = Callable[[Tensor], Tensor]


class ClassifierKind(enum.Enum):
    LOGISTIC = "logistic"
    MLP = "mlp"


def expected_weights(kind: ClassifierKind) -> tuple[str, ...]:
    """The tensor names a classifier of ``kind`` holds."""
    names = ("mean", "std", "layer0.weight", "layer0.bias")
    return names + (("layer1.weight", "layer1.bias") if kind is ClassifierKind.MLP else ())


def check_weights(kind: ClassifierKind, weights: Mapping[str, Tensor], features: int) -> None:
    """Raises ``ValueError`` when ``weights`` are not a classifier of ``kind`` over ``features`` inputs."""
    names = expected_weights(kind)
    if set(weights) != set(names):
        raise ValueError(f"a {kind.value} classifier holds tensors {sorted(names)}, got {sorted(weights)}")
    for name in ("mean", "std"):
        if tuple(weights[name].shape) != (features,):
            raise ValueError(f"{name} must have shape ({features},), got {tuple(weights[name].shape)}")
    if not bool((weights["std"] > 0).all()):
        raise ValueError("std must be positive")
    first = weights["layer0.weight"]
    width = 1 if kind is ClassifierKind.LOGISTIC else first.shape[0]
    if tuple(first.shape) != (width, features) or tuple(weights["layer0.bias"].shape) != (width,):
        raise ValueError(f"layer0 must map {features} features to {width}, got {tuple(first.shape)}")
    if kind is ClassifierKind.MLP and (
        tuple(weights["layer1.weight"].shape) != (1, width) or tuple(weights["layer1.bias"].shape) != (1,)
    ):
        raise ValueError(f"layer1 must map {width} hidden units to 1")
    for name, tensor in weights.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} holds non-finite values")


@dataclass(frozen=True)
class StopClassifier:
    """A checked classifier and its default threshold (tensors are float32 and never changed)."""

    kind: ClassifierKind
    weights: Mapping[str, Tensor]
    threshold: float

    @classmethod
    def build(
        cls, kind: ClassifierKind, weights: Mapping[str, Tensor], features: int, threshold: float
    ) -> StopClassifier:
        """Checks and copies the weights to float32; ``ValueError`` names what is wrong."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        floats = {name: tensor.detach().to(torch.float32).clone() for name, tensor in weights.items()}
        check_weights(kind, floats, features)
        return cls(kind, floats, threshold)

    @property
    def parameters(self) -> int:
        return sum(int(t.numel()) for name, t in self.weights.items() if name.startswith("layer"))

    def continue_probs(self, features: Tensor) -> Tensor:  # [r, F] -> [r] float32
        """The probability the classifier gives each row's draft token of being accepted."""
        w = self.weights
        x = (features.to(torch.float32) - w["mean"]) / w["std"]
        x = x @ w["layer0.weight"].T + w["layer0.bias"]
        if self.kind is ClassifierKind.MLP:
            x = torch.relu(x) @ w["layer1.weight"].T + w["layer1.bias"]
        return torch.sigmoid(x[:, 0])

    def stop_rule(self, threshold: float = 0.0) -> StopRule:
        """Stop after a token whose continue probability is below ``threshold`` (0: the classifier's own)."""
        cut = threshold or self.threshold

        def stops(features: Tensor) -> Tensor:
            return self.continue_probs(features) < cut

        return stops
