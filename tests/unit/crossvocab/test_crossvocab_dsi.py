"""TLI, SLEM and SLRS (run as SLEM) under the DSI scheduler, across two toy tokenizers.

The toy replicas of ``tests.support.dsi_toys`` (in process, seeded random delays on a virtual clock)
serve the cross-vocabulary pair of ``crossvocab_cases``: TLI's output law is the target's with 1, 2 and 4
replicas (sampled; 100,000 trials each through cached toy models, ``tests.support.law_toys``, and 1,000
through the torch toy models), and greedy output is the target's argmax sequence for every algorithm.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from coordinator.dsi.chain import run_algorithm
from coordinator.dsimodel import SchedulerKnobs
from coordinator.request import AlgorithmName
from coordinator.vocab.canonical import CanonicalVocab
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls, run_many
from tests.support.law_toys import CachedToy, ToyLaws
from tests.support.laws import assert_law, exact_law, greedy_output
from tests.support.population import LawCase
from tests.support.toy_lm import text_lm
from tests.support.toy_service import ToyModel, bare_info
from tests.unit.crossvocab.crossvocab_cases import (
    DRAFTER_RULES,
    OUTPUT_TOKENS,
    TARGET_RULES,
    CrossPair,
    cross_case,
    make_pair,
)

# Trials per law test: through the cached toys (tests.support.law_toys, the same laws as the torch toys;
# 0.25-0.5 ms of CPU a request for 1-4 replicas, delays on a virtual clock: 25-50 s a test), and through
# the torch toy models (the production model-call path, about 1-1.4 ms a request).
LAW_TRIALS = 100_000
TORCH_LAW_TRIALS = 1_000
DRAFTER_SUPPORT = 16
DELAYS = DelayRule(draft_per_token=2, draft_jitter=3, score_base=2, score_jitter=8)


@pytest.fixture(scope="module")
def pair(target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab) -> CrossPair:
    return make_pair(text_lm(target_vocab, TARGET_RULES), text_lm(drafter_vocab, DRAFTER_RULES))


MakeCalls = Callable[[int], ToyReplicaCalls]


def replicas_of(pair: CrossPair, case: LawCase, replicas: int) -> MakeCalls:
    """Per seed: ``replicas`` torch toy target replicas and a torch toy drafter, TLI's mask registered."""
    alignment = case.frame.alignment
    assert alignment is not None

    def make(seed: int) -> ToyReplicaCalls:
        targets = [ToyModel(pair.target, bare_info(pair.target.vocab_size)) for _ in range(replicas)]
        drafter = ToyModel(pair.drafter, bare_info(pair.drafter.vocab_size), max_support=DRAFTER_SUPPORT)
        drafter.set_token_mask(alignment.mask_id, alignment.mask_bitmap)
        return ToyReplicaCalls(targets, drafter, DELAYS, random.Random(seed))

    return make


def cached_replicas_of(pair: CrossPair, case: LawCase, replicas: int) -> MakeCalls:
    """The same over cached toys: the laws shared by every seed, the mask built once."""
    alignment = case.frame.alignment
    assert alignment is not None
    target_laws, drafter_laws = ToyLaws(pair.target), ToyLaws(pair.drafter, DRAFTER_SUPPORT)
    masked = ToyModel(pair.drafter, bare_info(pair.drafter.vocab_size))
    masked.set_token_mask(alignment.mask_id, alignment.mask_bitmap)
    mask = masked.state.masks[alignment.mask_id]

    def make(seed: int) -> ToyReplicaCalls:
        targets = [CachedToy(target_laws, bare_info(pair.target.vocab_size)) for _ in range(replicas)]
        drafter = CachedToy(drafter_laws, bare_info(pair.drafter.vocab_size))
        drafter.state.masks[alignment.mask_id] = mask
        return ToyReplicaCalls(targets, drafter, DELAYS, random.Random(seed))

    return make


def dsi_case(case: LawCase) -> LawCase:
    """The case with the algorithm DSI runs (SLRS as SLEM), as ``coordinator.dsi.driver`` sets it."""
    plan = case.frame.plan
    frame = dataclasses.replace(
        case.frame, plan=dataclasses.replace(plan, algorithm=run_algorithm(plan.algorithm))
    )
    return dataclasses.replace(case, frame=frame)


def run_outputs(case: LawCase, make_calls: MakeCalls, replicas: int, seeds: range) -> list[tuple[int, ...]]:
    knobs = SchedulerKnobs(case.k, replicas + 1, plain_steps=replicas > 1)
    outputs, counters = run_many(case.frame, make_calls, knobs, seeds)
    if len(seeds) >= 100 and not case.frame.params.sampling.is_greedy:
        assert 0 < counters.accepted_tokens < counters.draft_tokens, "acceptances and rejections both happen"
        if replicas > 1:
            assert counters.plain_steps > 0 and counters.verifications_preempted > 0
    return outputs


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_tli_output_law_is_the_target_law(pair: CrossPair, replicas: int) -> None:
    config = SamplingConfig(1.0)
    case = cross_case(pair, AlgorithmName.TLI, config, 16, 2)
    outputs = run_outputs(case, cached_replicas_of(pair, case, replicas), replicas, range(LAW_TRIALS))
    assert_law(outputs, exact_law(pair.target, config, OUTPUT_TOKENS))


@pytest.mark.parametrize("replicas", [1, 4])
def test_tli_output_law_through_the_torch_toy_models(pair: CrossPair, replicas: int) -> None:
    config = SamplingConfig(1.0)
    case = cross_case(pair, AlgorithmName.TLI, config, 16, 2)
    outputs = run_outputs(case, replicas_of(pair, case, replicas), replicas, range(TORCH_LAW_TRIALS))
    assert_law(outputs, exact_law(pair.target, config, OUTPUT_TOKENS))


@pytest.mark.parametrize("algorithm", [AlgorithmName.TLI, AlgorithmName.SLEM, AlgorithmName.SLRS])
def test_greedy_equals_the_target_argmax_sequence(pair: CrossPair, algorithm: AlgorithmName) -> None:
    case = dsi_case(cross_case(pair, algorithm, SamplingConfig(0.0), 16, 2))
    expected = greedy_output(pair.target, OUTPUT_TOKENS)
    for replicas in (1, 2, 4):
        outputs = run_outputs(case, replicas_of(pair, case, replicas), replicas, range(6))
        assert set(outputs) == {expected}
