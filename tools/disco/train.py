"""Training: collected rounds -> logistic regression and a small MLP -> the artifact that replays fastest.

Rounds are split by prompt (whole prompts go to one side): the training prompts fit both models, the
validation prompts choose the model and threshold by replayed output tokens per second
(``core.disco.training.choose``). The artifact records the pair's model fingerprints, the regime, the
validation replay next to the full-length drafts' own (static k) and the settings to reproduce it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from core.disco.artifact import PairFingerprint, StopArtifact, build_spec, serialize_weights, write_artifact
from core.disco.classifier import ClassifierKind
from core.disco.training import CollectedRound, FitSettings, StepCosts, choose, fit, training_examples


@dataclass(frozen=True)
class TrainInputs:
    """What the collection files say: the pair, the regime, the rounds and the measured step costs."""

    pair: PairFingerprint
    regime: str
    rounds: list[CollectedRound]
    costs: StepCosts


def split(
    rounds: Sequence[CollectedRound], train: range, validation: range
) -> tuple[list[CollectedRound], list[CollectedRound]]:
    """The rounds of the training and of the validation prompts (``ValueError`` if either is empty)."""
    train_rounds = [r for r in rounds if r.prompt_index in train]
    validation_rounds = [r for r in rounds if r.prompt_index in validation]
    if not train_rounds or not validation_rounds:
        raise ValueError(
            f"no rounds for the training prompts {train} or the validation prompts {validation} "
            f"({len(train_rounds)} and {len(validation_rounds)} rounds)"
        )
    return train_rounds, validation_rounds


def train_artifact(
    inputs: TrainInputs, out: Path, *, train: range, validation: range, settings: FitSettings
) -> StopArtifact:
    """Fits both models, chooses by replay on validation and writes the artifact into ``out``."""
    train_rounds, validation_rounds = split(inputs.rounds, train, validation)
    features, labels = training_examples(train_rounds)
    candidates = [fit(kind, features, labels, settings) for kind in ClassifierKind]
    choice = choose(candidates, validation_rounds, inputs.costs)
    validation_metrics = {
        "replayed_tokens_per_second": choice.replay.rate,
        "static_tokens_per_second": choice.static.rate,
        "replay_speedup_over_static": choice.replay.rate / choice.static.rate if choice.static.rate else 0.0,
        "mean_drafted": choice.replay.mean_drafted,
        "mean_accepted": choice.replay.mean_accepted,
        "static_mean_drafted": choice.static.mean_drafted,
        "rounds": choice.replay.rounds,
    }
    training = {
        **asdict(settings),
        "train_prompts": [train.start, train.stop - 1],
        "validation_prompts": [validation.start, validation.stop - 1],
        "examples": int(labels.shape[0]),
        "costs": asdict(inputs.costs),
    }
    spec = build_spec(choice.classifier, inputs.pair, inputs.regime, validation_metrics, training)
    return write_artifact(out, spec, serialize_weights(choice.classifier))
