"""TLI, SLEM and SLRS (run as SLEM) under the DSI scheduler, across two toy tokenizers.

The toy replicas of ``tests.support.dsi_toys`` (in process, seeded delays) serve the cross-vocabulary
pair of ``crossvocab_cases``: TLI's output law is the target's with 1, 2 and 4 replicas (sampled), and
greedy output is the target's argmax sequence for every algorithm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from coordinator.dsi.chain import run_algorithm
from coordinator.dsimodel import SchedulerKnobs
from coordinator.request import AlgorithmName
from coordinator.vocab.canonical import CanonicalVocab
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls, run_dsi
from tests.support.frames import first_snapshot, with_seed
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

LAW_TRIALS = 3000  # through asyncio: about 15 s of one core (5 ms a request)
DELAYS = DelayRule(draft_per_token=2, draft_jitter=3, score_base=2, score_jitter=8)


@pytest.fixture(scope="module")
def pair(target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab) -> CrossPair:
    return make_pair(text_lm(target_vocab, TARGET_RULES), text_lm(drafter_vocab, DRAFTER_RULES))


def replicas_of(pair: CrossPair, case: LawCase, replicas: int, seed: int) -> ToyReplicaCalls:
    targets = [ToyModel(pair.target, bare_info(pair.target.vocab_size)) for _ in range(replicas)]
    drafter = ToyModel(pair.drafter, bare_info(pair.drafter.vocab_size), max_support=16)
    alignment = case.frame.alignment
    assert alignment is not None
    drafter.set_token_mask(alignment.mask_id, alignment.mask_bitmap)
    return ToyReplicaCalls(targets, drafter, DELAYS, random.Random(seed))


def dsi_case(case: LawCase) -> LawCase:
    """The case with the algorithm DSI runs (SLRS as SLEM), as ``coordinator.dsi.driver`` sets it."""
    plan = case.frame.plan
    frame = dataclasses.replace(
        case.frame, plan=dataclasses.replace(plan, algorithm=run_algorithm(plan.algorithm))
    )
    return dataclasses.replace(case, frame=frame)


def run_outputs(pair: CrossPair, case: LawCase, replicas: int, seeds: range) -> list[tuple[int, ...]]:
    knobs = SchedulerKnobs(case.k, replicas + 1, plain_steps=replicas > 1)

    async def every() -> list[tuple[int, ...]]:
        outputs = []
        for seed in seeds:
            start = first_snapshot(with_seed(case.frame, seed))
            output, _, _ = await run_dsi(start, replicas_of(pair, case, replicas, seed), knobs)
            outputs.append(output)
        return outputs

    return asyncio.run(every())


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_tli_output_law_is_the_target_law(pair: CrossPair, replicas: int) -> None:
    config = SamplingConfig(1.0)
    case = cross_case(pair, AlgorithmName.TLI, config, 16, 2)
    outputs = run_outputs(pair, case, replicas, range(LAW_TRIALS))
    assert_law(outputs, exact_law(pair.target, config, OUTPUT_TOKENS))


@pytest.mark.parametrize("algorithm", [AlgorithmName.TLI, AlgorithmName.SLEM, AlgorithmName.SLRS])
def test_greedy_equals_the_target_argmax_sequence(pair: CrossPair, algorithm: AlgorithmName) -> None:
    case = dsi_case(cross_case(pair, algorithm, SamplingConfig(0.0), 16, 2))
    expected = greedy_output(pair.target, OUTPUT_TOKENS)
    for replicas in (1, 2, 4):
        assert set(run_outputs(pair, case, replicas, range(6))) == {expected}
