"""Training DISCO's classifier: a planted rule is recovered; collection follows the target's greedy path."""

from __future__ import annotations

import torch

from core.disco.classifier import ClassifierKind
from core.disco.training import (
    CollectedRound,
    FitSettings,
    StepCosts,
    choose,
    fit,
    replay_rate,
    training_examples,
)
from core.sampling import SamplingConfig
from tests.support.laws import greedy_output
from tests.support.toy_lm import random_lm
from tests.support.toy_service import ToyModel, bare_info
from tools.disco.collect import CollectSettings, collect
from tools.disco.train import split

K = 6
PLANTED = 0.4  # a draft token is accepted iff its probability exceeds this


def planted_rounds(seed: int, prompts: range, per_prompt: int = 20) -> list[CollectedRound]:
    """Rounds whose acceptance the planted rule decides; the other features are noise."""
    generator = torch.Generator().manual_seed(seed)
    rounds = []
    for prompt in prompts:
        for _ in range(per_prompt):
            features = torch.rand(K, 6, generator=generator)
            features[:, 0] = torch.rand(K, generator=generator) ** 0.5  # mostly confident tokens
            features[:, 4] *= 3.0
            features[:, 5] = torch.arange(K, dtype=torch.float32)
            labels = (features[:, 0] > PLANTED).float()
            accepted = int(labels.cumprod(0).sum())
            rows = tuple(tuple(float(v) for v in row) for row in features.tolist())
            rounds.append(CollectedRound(prompt, rows, tuple(labels.tolist()), accepted))
    return rounds


def test_training_recovers_a_planted_rule_and_replays_faster_than_full_drafts() -> None:
    rounds = planted_rounds(1, range(30))
    train, validation = split(rounds, range(0, 20), range(20, 30))
    features, labels = training_examples(train)
    assert features.shape[0] < len(train) * K  # only tokens up to the first rejection
    costs = StepCosts(draft_seconds=0.1, target_seconds=1.0)
    candidates = [fit(kind, features, labels, FitSettings(seed=0)) for kind in ClassifierKind]
    held_out = torch.tensor([f for r in planted_rounds(2, range(5)) for f in r.features])
    truth = held_out[:, 0] > PLANTED
    for classifier in candidates:
        agreement = ((classifier.continue_probs(held_out) >= 0.5) == truth).float().mean()
        assert agreement > 0.97, (classifier.kind, float(agreement))
    choice = choose(candidates, validation, costs)
    assert choice.replay.rate > 1.1 * choice.static.rate
    oracle = replay_rate(validation, [[f[0] <= PLANTED for f in r.features] for r in validation], costs)
    assert choice.replay.rate >= 0.97 * oracle.rate
    again = choose(
        [fit(kind, features, labels, FitSettings(seed=0)) for kind in ClassifierKind], validation, costs
    )
    assert again.classifier.threshold == choice.classifier.threshold  # seeded: reproducible
    assert all(torch.equal(again.classifier.weights[n], t) for n, t in choice.classifier.weights.items())


def test_greedy_collection_follows_the_targets_path() -> None:
    vocab = 6
    target, drafter = random_lm(1, vocab), random_lm(2, vocab)
    settings = CollectSettings(k=3, max_new_tokens=7, sampling=SamplingConfig(0.0))
    collection = collect(
        ToyModel(drafter, bare_info(vocab)), ToyModel(target, bare_info(vocab)), [(0, [0])], settings
    )
    for item in collection.rounds:
        assert len(item.features) == len(item.labels) == 3
        assert item.accepted == int(torch.tensor(item.labels).cumprod(0).sum())
    assert collection.outputs[0] == list(greedy_output(target, 7, prompt=(0,)))
    assert sum(r.accepted + 1 for r in collection.rounds) >= 7


def test_sampled_collection_labels_are_acceptance_probabilities() -> None:
    vocab = 6
    target, drafter = random_lm(1, vocab), random_lm(2, vocab)
    settings = CollectSettings(k=2, max_new_tokens=5, sampling=SamplingConfig(1.0), seed=3)
    collection = collect(
        ToyModel(drafter, bare_info(vocab)),
        ToyModel(target, bare_info(vocab)),
        [(0, [0]), (1, [1])],
        settings,
    )
    labels = [label for r in collection.rounds for label in r.labels]
    assert all(0.0 <= label <= 1.0 for label in labels) and any(0.0 < label < 1.0 for label in labels)
