"""Small classifiers and artifacts for the DISCO tests."""

from __future__ import annotations

import torch

from core.disco.artifact import PairFingerprint, StopArtifact, build_spec, parse_artifact, serialize_weights
from core.disco.classifier import ClassifierKind, StopClassifier
from core.disco.features import FEATURE_NAMES

F = len(FEATURE_NAMES)
PAIR = PairFingerprint("d" * 32, "t" * 32, "drafter", "target")


def token_prob_classifier(threshold: float = 0.5, sharpness: float = 40.0) -> StopClassifier:
    """Continue probability sigmoid(sharpness * (token_prob - 0.5)): stops after tokens under ~0.5."""
    weight = torch.zeros(1, F)
    weight[0, 0] = sharpness
    weights = {
        "mean": torch.zeros(F),
        "std": torch.ones(F),
        "layer0.weight": weight,
        "layer0.bias": torch.tensor([-sharpness * 0.5]),
    }
    return StopClassifier.build(ClassifierKind.LOGISTIC, weights, F, threshold)


def random_mlp(seed: int, threshold: float = 0.5, hidden: int = 5) -> StopClassifier:
    generator = torch.Generator().manual_seed(seed)
    weights = {
        "mean": torch.zeros(F),
        "std": torch.ones(F),
        "layer0.weight": 3 * torch.randn(hidden, F, generator=generator),
        "layer0.bias": torch.randn(hidden, generator=generator),
        "layer1.weight": torch.randn(1, hidden, generator=generator),
        "layer1.bias": torch.randn(1, generator=generator),
    }
    return StopClassifier.build(ClassifierKind.MLP, weights, F, threshold)


def artifact_of(
    classifier: StopClassifier,
    pair: PairFingerprint = PAIR,
    trained_k: int | None = None,
    regime: str = "greedy",
) -> StopArtifact:
    """An artifact of ``classifier``; ``trained_k`` goes to ``training.k`` (None: a spec without it)."""
    training: dict[str, int] = {"seed": 0} if trained_k is None else {"seed": 0, "k": trained_k}
    spec = build_spec(classifier, pair, regime, {"replayed_tokens_per_second": 1.0}, training)
    return parse_artifact(spec, serialize_weights(classifier))
