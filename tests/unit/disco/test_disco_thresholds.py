"""The stop threshold follows the deployment's costs: what each threshold did on the validation rounds
replays exactly at any costs, travels in the artifact, and the coordinator picks the threshold for the
drafter step, verification and round costs it has measured."""

from __future__ import annotations

import json

import pytest
import torch

from coordinator.lookahead.costs import CostEstimates
from coordinator.lookahead.disco import StopClassifierRef
from coordinator.lookahead.policy import RoundObservation
from core.disco.artifact import DiscoArtifactError, build_spec, parse_artifact, serialize_weights
from core.disco.thresholds import best_threshold
from core.disco.training import (
    THRESHOLDS,
    CollectedRound,
    StepCosts,
    classifier_stops,
    replay_rate,
    threshold_replays,
)
from tests.unit.disco.helpers import PAIR, artifact_of, token_prob_classifier

K = 6


def rounds(seed: int, count: int = 200) -> list[CollectedRound]:
    """Greedy rounds whose tokens are accepted while their probability stays above a per-round level."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for index in range(count):
        features = torch.rand(K, 6, generator=generator)
        features[:, 0] = torch.rand(K, generator=generator) ** 0.4
        features[:, 5] = torch.arange(K, dtype=torch.float32)
        level = float(torch.rand((), generator=generator)) * 0.6
        labels = (features[:, 0] > level).float()
        accepted = int(labels.cumprod(0).sum())
        rows = tuple(tuple(float(v) for v in row) for row in features.tolist())
        made.append(CollectedRound(index, rows, tuple(labels.tolist()), accepted))
    return made


@pytest.mark.parametrize(
    "costs",
    [
        StepCosts(0.02, 1.0),
        StepCosts(0.3, 1.0),
        StepCosts(0.1, 0.5, tuple(0.3 + 0.05 * (j + 1) for j in range(K))),
    ],
)
def test_the_threshold_replays_equal_the_round_replay_at_any_costs(costs: StepCosts) -> None:
    validation = rounds(1)
    classifier = token_prob_classifier()
    replays = threshold_replays(classifier, validation)
    assert [r.threshold for r in replays] == list(THRESHOLDS)
    assert all(sum(r.drafted) == len(validation) for r in replays)
    probs = classifier_stops(classifier, validation)
    for replay in replays:
        stops = [[p < replay.threshold for p in row] for row in probs]
        expected = replay_rate(validation, stops, costs).rate
        assert replay.rate(costs.draft_seconds, costs.verify) == pytest.approx(expected, rel=1e-12)


def test_a_dearer_drafter_step_or_round_moves_the_best_threshold_the_right_way() -> None:
    replays = threshold_replays(token_prob_classifier(), rounds(2))

    def flat(drafted: int) -> float:
        return 1.0

    cheap, dear = best_threshold(replays, 0.01, flat), best_threshold(replays, 0.5, flat)
    assert cheap < dear  # a dear drafter step: stop sooner
    assert best_threshold(replays, 0.2, flat, round_seconds=5.0) <= best_threshold(replays, 0.2, flat)

    def mean_drafted(threshold: float) -> float:
        (replay,) = [r for r in replays if r.threshold == threshold]
        return sum(n * count for n, count in enumerate(replay.drafted, start=1)) / sum(replay.drafted)

    assert mean_drafted(dear) < mean_drafted(cheap)


def test_the_replays_travel_in_the_artifact_and_a_bad_one_is_refused() -> None:
    classifier = token_prob_classifier()
    replays = threshold_replays(classifier, rounds(3))
    spec = build_spec(classifier, PAIR, "greedy", {}, {"seed": 0}, threshold_replay=replays)
    weights = serialize_weights(classifier)
    assert parse_artifact(spec, weights).threshold_replay == replays
    assert artifact_of(classifier).threshold_replay == ()  # an artifact without them loads
    for bad, message in [
        ("many", "threshold_replay must be a list"),
        ([3], r"threshold_replay\[0\] must be an object"),
        ([{"threshold": 1.5, "tokens": 3, "drafted": [1]}], r"threshold_replay\[0\].threshold .* got 1.5"),
        ([{"threshold": 0.5, "tokens": -1, "drafted": [1]}], r"\.tokens must be a non-negative integer"),
        ([{"threshold": 0.5, "tokens": 3, "drafted": [1, -2]}], r"\.drafted \(rounds per draft length\)"),
    ]:
        changed = json.loads(spec)
        changed["threshold_replay"] = bad
        with pytest.raises(DiscoArtifactError, match=message):
            parse_artifact(json.dumps(changed), weights)


def observe(estimates: CostEstimates, step: float, verify: float, per_token: float) -> None:
    """Rounds whose drafter steps take ``step`` and whose verification of n tokens takes
    ``verify + per_token * n``, with 5 ms of wire a round."""
    for drafted in (1, 2, 3, 4, 5, 6) * 3:
        seconds = verify + per_token * (drafted + 1)
        compute = drafted * step + seconds
        estimates.observe(
            RoundObservation(
                drafted,
                drafted - 1,
                drafted * step,
                drafted,
                drafted,
                seconds,
                drafted + 1,
                compute + 0.005,
                drafted,
            )
        )


def test_the_coordinator_picks_the_threshold_for_the_costs_it_measured() -> None:
    classifier = token_prob_classifier(threshold=0.55)
    replays = threshold_replays(classifier, rounds(4))
    ref = StopClassifierRef("disco-x", 0.55, K, replays)
    estimates = CostEstimates()
    assert ref.for_costs(estimates, max_k=K) == ref  # nothing measured yet: the artifact's threshold
    assert StopClassifierRef("disco-x", 0.55, K).for_costs(estimates, max_k=K).threshold == 0.55
    observe(estimates, step=0.01, verify=1.0, per_token=0.0)
    cheap = ref.for_costs(estimates, max_k=K)
    assert cheap.threshold == best_threshold(replays, 0.01, lambda n: 1.0, 0.005)

    dear_estimates = CostEstimates(decay=0.0)
    observe(dear_estimates, step=0.4, verify=0.5, per_token=0.1)
    dear = ref.for_costs(dear_estimates, max_k=K)
    assert dear.threshold == best_threshold(replays, 0.4, lambda n: 0.5 + 0.1 * (n + 1), 0.005)
    assert cheap.threshold < dear.threshold
    assert (dear.classifier_id, dear.trained_k, dear.replays) == ("disco-x", K, replays)
