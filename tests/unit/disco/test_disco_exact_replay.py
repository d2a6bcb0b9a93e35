"""The exact greedy replay: a stop rule replayed along a traced path runs the rounds the loop runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.disco.classifier import StopClassifier
from core.disco.replay import ReplayPath, path_scores, replay_path
from core.disco.training import (
    CollectedRound,
    StepCosts,
    Validation,
    choose,
    classifier_scorer,
    never_stops,
    threshold_replays,
)
from core.modelcalls import ContextRef, DraftCall, ScoreCall
from core.sampling import SamplingConfig
from tests.support.laws import greedy_output
from tests.support.toy_lm import random_lm
from tests.support.toy_service import ToyModel, bare_info
from tests.unit.disco.helpers import artifact_of, random_mlp
from tools.disco.collect import CollectSettings, collect, load_paths, save_collection, trace_path
from tools.disco.train import TrainInputs, validation_of

VOCAB, K, LENGTH = 6, 4, 24
GREEDY = SamplingConfig(0.0)


def toy_pair() -> tuple[ToyModel, ToyModel]:
    return ToyModel(random_lm(2, VOCAB), bare_info(VOCAB)), ToyModel(random_lm(1, VOCAB), bare_info(VOCAB))


def live_rounds(
    drafter: ToyModel, target: ToyModel, prompt: list[int], call: DraftCall
) -> list[tuple[int, int, int]]:
    """The coordinator's greedy loop with a stop rule: (drafted, accepted, committed) per round."""
    output: list[int] = []
    rounds = []
    while len(output) < LENGTH:
        context = [*prompt, *output]
        cap = min(K, LENGTH - len(output))
        drafted = drafter.draft(
            DraftCall(
                ContextRef.whole("live/drafter", context),
                cap,
                GREEDY,
                0,
                confidence_threshold=call.confidence_threshold,
                stop_classifier_id=call.stop_classifier_id,
                stop_classifier_threshold=call.stop_classifier_threshold,
            )
        ).draft_tokens
        scored = target.score(ScoreCall(ContextRef.whole("live/target", context), drafted, None, GREEDY, 0))
        accepted = next(
            (j for j, (d, t) in enumerate(zip(drafted, scored.target_samples, strict=False)) if d != t),
            len(drafted),
        )
        committed = [*drafted[:accepted], scored.target_samples[accepted]][: LENGTH - len(output)]
        output.extend(committed)
        rounds.append((len(drafted), accepted, len(committed)))
    assert tuple(output) == greedy_output(target.lm, LENGTH, prompt=tuple(prompt))
    return rounds


def traced(drafter: ToyModel, target: ToyModel, prompt: list[int]) -> ReplayPath:
    output = list(greedy_output(target.lm, LENGTH, prompt=tuple(prompt)))
    return trace_path(drafter, 0, prompt, output, K)


def replayed(path: ReplayPath, scorer: object, threshold: float) -> list[tuple[int, int, int]]:
    scores = path_scores(path, K, scorer)  # type: ignore[arg-type]
    return [(r.drafted, r.accepted, r.committed) for r in replay_path(path, scores, threshold, K)]


@pytest.mark.parametrize("prompt", [[0], [3, 1], [5]])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
def test_a_confidence_stop_replays_exactly(prompt: list[int], threshold: float) -> None:
    drafter, target = toy_pair()
    path = traced(drafter, target, prompt)
    assert not all(path.matches) and any(path.matches)  # rejections and acceptances both
    live = live_rounds(
        drafter,
        target,
        prompt,
        DraftCall(ContextRef.whole("x", [0]), K, GREEDY, 0, confidence_threshold=threshold),
    )

    def confidence(rows: list[tuple[float, ...]]) -> list[float]:
        return [row[0] for row in rows]

    assert replayed(path, confidence, threshold) == live
    assert sum(committed for _, _, committed in live) == LENGTH


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_classifier_stop_replays_exactly(seed: int) -> None:
    drafter, target = toy_pair()
    classifier = random_mlp(seed, threshold=0.5)
    artifact = artifact_of(classifier)
    drafter.stop_classifiers.register("c", artifact.spec_json, artifact.weights)
    path = traced(drafter, target, [2])
    live = live_rounds(
        drafter,
        target,
        [2],
        DraftCall(
            ContextRef.whole("x", [0]), K, GREEDY, 0, stop_classifier_id="c", stop_classifier_threshold=0.5
        ),
    )
    assert replayed(path, classifier_scorer(artifact.classifier), 0.5) == live
    assert len({drafted for drafted, _, _ in live}) > 1  # the classifier did stop some drafts early


def test_full_length_drafts_replay_exactly() -> None:
    drafter, target = toy_pair()
    path = traced(drafter, target, [4])
    live = live_rounds(drafter, target, [4], DraftCall(ContextRef.whole("x", [0]), K, GREEDY, 0))
    assert replayed(path, never_stops, 0.5) == live


def test_a_path_without_a_continuation_after_a_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="continuation"):
        ReplayPath(0, ((0.5,) * 6, (0.5,) * 6), (True, False), {})


def test_greedy_collection_traces_paths_that_survive_the_file(tmp_path: Path) -> None:
    drafter, target = toy_pair()
    settings = CollectSettings(k=K, max_new_tokens=LENGTH, sampling=GREEDY)
    collection = collect(drafter, target, [(0, [0]), (1, [3, 1])], settings)
    assert [path.prompt_index for path in collection.paths] == [0, 1]
    assert collection.paths[1] == replace(traced(*toy_pair(), [3, 1]), prompt_index=1)
    save_collection(tmp_path / "rounds.json", collection, {"regime": "greedy"})
    assert load_paths(tmp_path / "rounds.json") == collection.paths
    sampled = collect(
        *toy_pair(), [(0, [0])], CollectSettings(k=K, max_new_tokens=8, sampling=SamplingConfig(1.0))
    )
    assert sampled.paths == []


def test_training_validates_along_paths_when_every_validation_prompt_has_one() -> None:
    """The fixed rounds overstate an early stop: the path replay charges the rounds it really runs."""
    drafter, target = toy_pair()
    settings = CollectSettings(k=K, max_new_tokens=LENGTH, sampling=GREEDY)
    collection = collect(drafter, target, [(0, [0]), (1, [3, 1]), (2, [5])], settings)
    inputs = TrainInputs(
        PAIR_STUB, "greedy", collection.rounds, StepCosts(0.1, 1.0), K, tuple(collection.paths)
    )
    rounds = [r for r in collection.rounds if r.prompt_index in range(1, 3)]
    exact = validation_of(inputs, rounds, range(1, 3))
    assert exact.exact and [p.prompt_index for p in exact.paths] == [1, 2]
    partial = TrainInputs(
        PAIR_STUB, "greedy", collection.rounds, StepCosts(0.1, 1.0), K, tuple(collection.paths[:2])
    )
    assert not validation_of(partial, rounds, range(1, 3)).exact
    classifier = random_mlp(4)
    replays = threshold_replays(classifier, exact)
    assert all(r.tokens == 2 * LENGTH for r in replays)  # every threshold covers the whole outputs
    assert all(sum(r.drafted) == len(replayed_rounds(exact, classifier, r.threshold)) for r in replays)
    choice = choose([classifier], exact, StepCosts(0.1, 1.0))
    assert choice.static.rate > 0 and choice.replay.rate >= choice.static.rate


def replayed_rounds(validation: Validation, classifier: StopClassifier, threshold: float) -> list[object]:
    return [
        item
        for path in validation.paths
        for item in replay_path(path, path_scores(path, K, classifier_scorer(classifier)), threshold, K)
    ]


def test_rounds_replay_is_kept_without_paths() -> None:
    rounds = [CollectedRound(0, tuple((0.9,) * 6 for _ in range(3)), (1.0, 1.0, 0.0), 2)]
    validation = Validation(rounds)
    assert not validation.exact
    assert validation.outcomes(never_stops)(0.5) == [(3, 2, 3)]


PAIR_STUB = artifact_of(random_mlp(0)).pair
