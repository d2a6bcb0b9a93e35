"""Losslessness with a model-free lookup drafter (point-mass proposals) through the product's round.

The drafter is the lookup service's own engine (``services.lookup.engine.LookupEngine``: prompt lookup
or suffix-tree drafting) on domain types; the target a context-dependent toy LM. Sampled requests go
through the population engine (1e5 trials, chi-square and TV against the target's exact law, the
first round's acceptance against its oracle: a point-mass draft d is accepted up to position j with
probability prod_i target_probs(d_i)); greedy requests through ``run_round`` itself. The prompts repeat
a pattern, so the drafter proposes (the tests check it does), and contain the stop token in some cases
(a draft runs up to it and keeps it).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest

from coordinator.request import AlgorithmName
from core.modelcalls import ContextRef, DraftCall
from core.sampling import SamplingConfig
from services.lookup.engine import LookupEngine
from services.lookup.settings import LookupKind, LookupServiceSettings
from tests.support.frames import toy_endpoint, toy_frame
from tests.support.laws import assert_law, assert_rate, exact_law, greedy_output, next_token_law
from tests.support.population import LawCase, PopulationRun, run_requests
from tests.support.toy_lm import random_lm
from tests.support.toy_service import DirectCalls, ToyModel, bare_info

VOCAB = 6
EOS = 5
NUM_TRIALS = 100_000
PROMPT = (0, 1, 2, 3, 0, 1, 2, 3, 0, 1)


def lookup_engine(kind: LookupKind, eos: Collection[int]) -> LookupEngine:
    settings = LookupServiceSettings(
        kind=kind, target_model_dir=Path("."), ngram_min=1, suffix_min_match=1, suffix_min_score=0.0
    )
    return LookupEngine(settings, bare_info(VOCAB, model_name=kind, eos_token_ids=tuple(eos)))


def lookup_case(
    kind: LookupKind, config: SamplingConfig, *, prompt: tuple[int, ...] = PROMPT, eos: Collection[int] = ()
) -> LawCase:
    frame = toy_frame(
        AlgorithmName.SD,
        config,
        target=toy_endpoint("target", VOCAB, eos=eos),
        drafter=toy_endpoint("drafter", VOCAB, eos=eos),
        max_new_tokens=4,
        target_prompt=prompt,
        drafter_prompt=prompt,
    )
    engine = lookup_engine(kind, eos)
    return LawCase(frame, random_lm(11, VOCAB), None, k=3, lookup=engine.draft)


def first_draft(case: LawCase) -> tuple[int, ...]:
    assert case.lookup is not None
    call = DraftCall(
        ContextRef.whole("probe", case.frame.plan.target_prompt),
        case.k,
        case.frame.params.sampling,
        seed=0,
        stop_token_ids=case.frame.drafter.eos_token_ids if case.frame.drafter else frozenset(),
    )
    outcome = case.lookup(call)
    assert all(
        p.token_ids == (t,) and p.probs == (1.0,)
        for t, p in zip(outcome.draft_tokens, outcome.draft_probs, strict=True)
    )
    return outcome.draft_tokens


def accept_oracle(case: LawCase, draft: tuple[int, ...]) -> list[float]:
    """P(at least j candidates accepted in the first round), j = 0..len(draft)."""
    prompt, config = case.frame.plan.target_prompt, case.frame.params.sampling
    at_least, running = [1.0], 1.0
    for j, token in enumerate(draft):
        running *= next_token_law(case.target, [*prompt, *draft[:j]], config).get(token, 0.0)
        at_least.append(running)
    return at_least


SAMPLED = [
    ("ngram", SamplingConfig(1.0), PROMPT, ()),
    ("suffix", SamplingConfig(0.7, top_p=0.9), PROMPT, ()),
    ("ngram", SamplingConfig(1.3, top_k=4), (2, 5, 0, 2, 5, 0, 2), (EOS,)),
    ("suffix", SamplingConfig(1.0), (2, 5, 0, 2, 5, 0, 2), (EOS,)),
]


@pytest.mark.parametrize(("kind", "config", "prompt", "eos"), SAMPLED)
def test_sampled_output_law_with_a_lookup_drafter(
    kind: LookupKind, config: SamplingConfig, prompt: tuple[int, ...], eos: tuple[int, ...]
) -> None:
    case = lookup_case(kind, config, prompt=prompt, eos=eos)
    draft = first_draft(case)
    assert draft, "the prompt repeats: the drafter must propose"
    if eos:
        assert draft[-1] == EOS, "the stop token ends the draft and is kept"
    population = PopulationRun(case).run(NUM_TRIALS, seed=41)
    law = exact_law(case.target, config, 4, prompt=prompt, eos=eos)
    assert_law(population.outputs, law)
    at_least = accept_oracle(case, draft)
    reached = np.asarray(population.first_accepted)
    for j in range(1, len(draft) + 1):
        if at_least[j - 1] > 0.01:
            trials = int((reached >= j - 1).sum())
            assert_rate(int((reached >= j).sum()), trials, at_least[j] / at_least[j - 1])


@pytest.mark.parametrize("kind", ["ngram", "suffix"])
@pytest.mark.parametrize("eos", [(), (EOS,)])
def test_greedy_output_is_the_targets_argmax_decoding(kind: LookupKind, eos: tuple[int, ...]) -> None:
    prompt = (2, 5, 0, 2, 5, 0, 2) if eos else PROMPT
    case = lookup_case(kind, SamplingConfig(0.0), prompt=prompt, eos=eos)
    assert first_draft(case)
    expected = greedy_output(case.target, 4, prompt=prompt, eos=eos)
    target = ToyModel(case.target, bare_info(VOCAB, eos_token_ids=eos))
    engine = lookup_engine(kind, eos)

    class Calls(DirectCalls):
        async def draft(self, call: DraftCall):  # type: ignore[no-untyped-def]
            return engine.draft(call)

    outputs = run_requests(case, Calls(target), seeds=range(5))
    assert all(output == expected for output in outputs)
    population = PopulationRun(case).run(200, seed=3)
    assert set(population.outputs) == {expected}
