"""Training DISCO's classifier: a planted rule is recovered; collection follows the target's greedy path."""

from __future__ import annotations

from pathlib import Path

import pytest
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
from core.modelcalls import DraftCall, DraftOutcome, ForwardStats, ScoreCall, ScoreOutcome
from core.sampling import SamplingConfig
from tests.support.laws import greedy_output
from tests.support.toy_lm import random_lm
from tests.support.toy_service import ToyModel, bare_info
from tools.disco.collect import (
    Collection,
    CollectSettings,
    collect,
    load_collection,
    measure_verify_seconds,
    save_collection,
)
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


def test_replay_charges_each_verification_by_its_width() -> None:
    """A draft of j tokens costs j drafter steps and the target's verification of that width; a width
    beyond the measured ones costs the widest; without a table every verification costs the same."""
    rounds = [CollectedRound(0, tuple((0.9,) * 6 for _ in range(4)), (1.0, 1.0, 1.0, 0.0), 3)]
    costs = StepCosts(draft_seconds=0.1, target_seconds=9.0, verify_seconds=(0.5, 0.6, 0.8))
    assert costs.verify(1) == 0.5 and costs.verify(3) == 0.8 and costs.verify(4) == 0.8
    first = replay_rate(rounds, [[True, False, False, False]], costs)
    assert first.rate == 2 / (0.1 + 0.5)  # one token drafted and accepted, plus the target's own
    third = replay_rate(rounds, [[False, False, True, False]], costs)
    assert third.rate == 4 / (0.3 + 0.8)
    flat = replay_rate(rounds, [[False, False, True, False]], StepCosts(0.1, 1.0))
    assert flat.rate == 4 / (0.3 + 1.0)


class TimedTarget:
    """A target whose verification takes 0.1 s plus 0.05 s per token fed (the context's first feed: 5 s)."""

    def __init__(self) -> None:
        self.cached: tuple[int, ...] = ()
        self.widths: list[int] = []

    def draft(self, call: DraftCall) -> DraftOutcome:
        raise AssertionError("only scored")

    def score(self, call: ScoreCall) -> ScoreOutcome:
        context = tuple(call.context.tokens)
        fed = len(call.candidate_tokens) + (1 if context == self.cached else len(context))
        self.cached = context
        self.widths.append(len(call.candidate_tokens))
        seconds = 0.1 + 0.05 * fed if fed <= len(call.candidate_tokens) + 1 else 5.0
        samples = (*call.candidate_tokens, 0)
        return ScoreOutcome((), samples, (), ForwardStats(compute_seconds=seconds))


def test_collection_measures_the_verification_cost_of_each_draft_width() -> None:
    target = TimedTarget()
    table = measure_verify_seconds(target, [3, 1, 4, 1, 5], k=4, repeats=3)
    # width j feeds j + 1 tokens; the prefill is not counted
    assert table == pytest.approx((0.2, 0.25, 0.3, 0.35))
    assert target.widths == [4] + [1, 2, 3, 4] * 3  # one prefill, then the widths interleaved


def test_a_collection_file_keeps_the_verification_costs(tmp_path: Path) -> None:
    collection = Collection([], draft_seconds=0.2, draft_forwards=2, target_seconds=2.0, target_calls=2)
    collection.verify_seconds = (0.5, 0.7)
    path = tmp_path / "rounds.json"
    save_collection(path, collection, {"regime": "greedy"})
    _, _, costs = load_collection(path)
    assert costs == StepCosts(0.1, 1.0, (0.5, 0.7))
