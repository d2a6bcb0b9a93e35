"""Training: collected rounds -> logistic regression and a small MLP -> the artifact that replays fastest.

Rounds are split by prompt (whole prompts go to one side): the training prompts fit both models, the
validation prompts choose the model and threshold by replayed output tokens per second
(``core.disco.training.choose``). The artifact records the pair's model fingerprints, the regime, the
validation replay next to the full-length drafts' own (static k), the settings to reproduce it and the
collection's draft length k (``training.k``: the feature ``position`` never reached k, so ``disco``
without a K drafts at most k tokens with it) and what the chosen classifier's replay did at every
threshold (``threshold_replay``), so the coordinator can pick the threshold for its own costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.disco.artifact import PairFingerprint, StopArtifact, build_spec, serialize_weights, write_artifact
from core.disco.classifier import ClassifierKind
from core.disco.replay import ReplayPath
from core.disco.training import (
    CollectedRound,
    FitSettings,
    StepCosts,
    Validation,
    choose,
    fit,
    threshold_replays,
    training_examples,
)


@dataclass(frozen=True)
class TrainInputs:
    """What the collection files say: the pair, the regime, the rounds and the measured step costs."""

    pair: PairFingerprint
    regime: str
    rounds: list[CollectedRound]
    costs: StepCosts
    k: int | None = None  # the collections' draft length (``settings.k``); None if they do not say
    paths: tuple[ReplayPath, ...] = ()  # greedy collections' replay paths (``core.disco.replay``)


# A loaded collection file: its path, header, rounds and step costs (``tools.disco.collect.load_collection``)
LoadedCollection = tuple[Path, Mapping[str, Any], list[CollectedRound], StepCosts]


def merge_collections(
    collections: Sequence[LoadedCollection], replay_paths: Sequence[ReplayPath] = ()
) -> TrainInputs:
    """One training input from collection files: all their rounds and replay paths (a prompt's first
    path kept), the first file's step costs.

    ``ValueError`` unless the files agree on the pair, the regime and the draft length k they were
    collected with (the artifact records that k as the classifier's trained draft length).
    """
    if not collections:
        raise ValueError("no collection files")
    headers = [header for _, header, _, _ in collections]
    first = headers[0]
    if any(h["pair"] != first["pair"] or h["regime"] != first["regime"] for h in headers):
        raise ValueError("the collection files come from different pairs or regimes")
    ks = [_collected_k(path, header) for path, header, _, _ in collections]
    if len(set(ks)) > 1:
        paths = [path for path, *_ in collections]
        listed = ", ".join(f"{path}: k={'?' if k is None else k}" for path, k in zip(paths, ks, strict=True))
        raise ValueError(
            f"the collection files were collected with different draft lengths (--k): {listed}; "
            "train on collections of one k (the artifact records it as disco's default cap)"
        )
    named = first["pair"]
    pair = PairFingerprint(
        named["drafter_fingerprint"],
        named["target_fingerprint"],
        named["drafter_model"],
        named["target_model"],
    )
    rounds = [item for _, _, file_rounds, _ in collections for item in file_rounds]
    unique = {path.prompt_index: path for path in reversed(replay_paths)}
    ordered = tuple(unique[index] for index in sorted(unique))
    return TrainInputs(pair, str(first["regime"]), rounds, collections[0][3], ks[0], ordered)


def validation_of(inputs: TrainInputs, rounds: Sequence[CollectedRound], prompts: range) -> Validation:
    """The validation prompts' replay: exact along their paths when every one of them has a path,
    otherwise on their collected rounds."""
    paths = [path for path in inputs.paths if path.prompt_index in prompts]
    covered = {path.prompt_index for path in paths}
    if paths and covered >= {item.prompt_index for item in rounds}:
        return Validation(rounds, paths, inputs.k or 0)
    return Validation(rounds, (), inputs.k or 0)


def _collected_k(path: Path, header: Mapping[str, Any]) -> int | None:
    """The draft length a collection file's header says it was collected with (``settings.k``; None if
    it does not say); ``ValueError`` for one that is not a positive integer."""
    settings = header.get("settings")
    k = settings.get("k") if isinstance(settings, Mapping) else None
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(
            f"{path}: settings.k (the draft length collected) must be a positive integer, got {k!r}"
        )
    return k


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
    validation_replay = validation_of(inputs, validation_rounds, validation)
    choice = choose(candidates, validation_replay, inputs.costs)
    validation_metrics = {
        "replay": "exact" if validation_replay.exact else "rounds",
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
        **({} if inputs.k is None else {"k": inputs.k}),
    }
    replays = threshold_replays(choice.classifier, validation_replay)
    spec = build_spec(
        choice.classifier,
        inputs.pair,
        inputs.regime,
        validation_metrics,
        training,
        threshold_replay=replays,
    )
    return write_artifact(out, spec, serialize_weights(choice.classifier))
