"""The cached toy models (``tests.support.law_toys``) draw from exactly the torch toy models' laws.

For every context the DSI law tests reach (sd: every context up to the law depth, enumerated, and those a
run of the law tests' requests reached; tli: those reached), sampled and greedy: the drafter's sparse
proposal and the target's probabilities equal, bit for bit, what ``ToyModel``'s Draft and Score return;
the confidences and the residual laws equal the plain reference math of ``tests.support.laws``. Then the
draws: a whole draft under a confidence stop (torch toy's drafts against the law enumerated from the
cache), and a Score's target samples and recovered tokens, from both toys, follow those laws.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from coordinator.dsimodel import SchedulerKnobs
from coordinator.request import AlgorithmName
from coordinator.vocab.canonical import CanonicalVocab
from core.modelcalls import ContextRef, DraftCall, ScoreCall, SparseProbs
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls, run_many
from tests.support.law_toys import CachedToy, Law, ToyLaws
from tests.support.laws import assert_law, reference_proposal, reference_warp
from tests.support.toy_lm import ToyLM, text_lm
from tests.support.toy_service import ToyModel, bare_info
from tests.support.toy_tokenizers import byte_level_toy, sentencepiece_toy
from tests.unit.crossvocab.crossvocab_cases import DRAFTER_RULES, TARGET_RULES, cross_case, make_pair
from tests.unit.dsi.dsi_cases import DRAFTER_SUPPORT, PROMPT, VOCAB, sd_case

SAMPLED, GREEDY = SamplingConfig(1.0), SamplingConfig(0.0)
DraftKey = tuple[SamplingConfig, int, str, tuple[int, ...]]
DEPTH = 6  # context tokens after the prompt: 3 committed and a block of 3 candidates (4 output tokens)
DELAYS = DelayRule(draft_per_token=2, draft_jitter=3, score_base=2, score_jitter=10)
DRAWS = 3000


@pytest.fixture(scope="module")
def target_vocab() -> CanonicalVocab:
    return CanonicalVocab.from_tokenizer(byte_level_toy())


@pytest.fixture(scope="module")
def drafter_vocab() -> CanonicalVocab:
    return CanonicalVocab.from_tokenizer(sentencepiece_toy())


def context_ref(tokens: Sequence[int]) -> ContextRef:
    return ContextRef("law-toys", 0, 0, tuple(tokens))


def draft_call(tokens: Sequence[int], count: int, seed: int, threshold: float) -> DraftCall:
    return DraftCall(context_ref(tokens), count, SAMPLED, seed, frozenset(), threshold, DRAFTER_SUPPORT)


def torch_proposal(model: ToyModel, laws_key: DraftKey) -> SparseProbs | None:
    config, support, mask_id, context = laws_key
    call = DraftCall(context_ref(context), 1, config, 0, frozenset(), 0.0, support, token_mask_id=mask_id)
    outcome = model.draft(call)
    return outcome.draft_probs[0] if outcome.draft_tokens else None


def torch_target_probs(model: ToyModel, config: SamplingConfig, context: Sequence[int]) -> dict[int, float]:
    """The target's probability of each token of its support after ``context``, by one Score each."""
    probs = {}
    for token in model.lm.support:
        call = ScoreCall(context_ref(context), (token,), None, config, 0)
        scored = model.score(call)
        greedy_prob = float(scored.target_samples[0] == token)  # a one-hot row
        probs[token] = scored.candidate_target_probs[0] if scored.candidate_target_probs else greedy_prob
    return {t: p for t, p in probs.items() if p > 0}


def reference_law(lm: ToyLM, context: Sequence[int], config: SamplingConfig) -> dict[int, float]:
    row = lm.logits(list(context))
    probs = reference_warp([float(row[i]) for i in lm.support], config)
    return {t: float(p) for t, p in zip(lm.support, probs, strict=True) if p > 0}


def assert_same_laws(laws: ToyLaws, drafter: ToyModel, target_laws: ToyLaws, target: ToyModel) -> int:
    """Every memoised law against the torch toys (and the reference math); the number compared."""
    compared = 0
    for key, step in list(laws._drafts.items()):
        torch_row = torch_proposal(drafter, key)
        if step.proposal is None:
            assert torch_row is None, key
        else:
            assert torch_row == SparseProbs(step.proposal.ids, step.proposal.probs), key
        compared += 1
    for (config, context), law in list(target_laws._targets.items()):
        assert torch_target_probs(target, config, context) == law.prob_of, context
        if not config.is_greedy:
            expected = reference_law(target_laws.lm, context, config)
            assert law.prob_of.keys() == expected.keys()
            assert np.allclose([law.prob_of[t] for t in expected], list(expected.values()), atol=1e-6)
        compared += 1
    for (config, context, draft), law in list(target_laws._residuals.items()):
        p = target_laws.target(config, context).prob_of
        q = dict(zip(draft.token_ids, draft.probs, strict=True))
        excess = {t: max(p.get(t, 0.0) - q.get(t, 0.0), 0.0) for t in {*p, *q}}
        mass = sum(excess.values())
        expected = {t: e / mass for t, e in excess.items() if e > 0} if mass > 0 else p
        assert law.prob_of.keys() == expected.keys()
        assert np.allclose([law.prob_of[t] for t in expected], list(expected.values()), atol=1e-6)
        compared += 1
    return compared


def sd_contexts() -> Iterator[tuple[int, ...]]:
    for length in range(DEPTH + 1):
        for tail in itertools.product(range(VOCAB), repeat=length):
            yield (*PROMPT, *tail)


@pytest.mark.parametrize("config", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_sd_cached_laws_equal_the_torch_toys(config: SamplingConfig) -> None:
    case = sd_case(config, 4)
    for context in sd_contexts():
        case.drafter_laws.draft_step(config, VOCAB, context)
        case.target_laws.target(config, context)
        step = case.drafter_laws.draft_step(config, VOCAB, context)
        assert step.proposal is not None
        if not config.is_greedy:  # the confidence: the untruncated warped probability
            expected = reference_law(case.drafter, context, config)
            assert all(abs(step.confidence[t] - expected[t]) < 1e-12 for t in step.proposal.ids)
            proposal = reference_proposal(
                [float(x) for x in case.drafter.logits(list(context))], config, VOCAB
            )
            assert np.allclose([step.proposal.prob_of[t] for t in range(VOCAB)], proposal, atol=1e-12)
    run_many(
        case.frame, lambda seed: case.cached_calls(2, DELAYS, seed), SchedulerKnobs(3, 3, True), range(300)
    )
    drafter = ToyModel(case.drafter, bare_info(VOCAB), max_support=DRAFTER_SUPPORT)
    target = ToyModel(case.target, bare_info(VOCAB))
    assert assert_same_laws(case.drafter_laws, drafter, case.target_laws, target) >= 2 * len(
        list(sd_contexts())
    )


@pytest.mark.parametrize("config", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_tli_cached_laws_equal_the_torch_toys(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab, config: SamplingConfig
) -> None:
    pair = make_pair(text_lm(target_vocab, TARGET_RULES), text_lm(drafter_vocab, DRAFTER_RULES))
    case = cross_case(pair, AlgorithmName.TLI, config, 16, 2)
    alignment = case.frame.alignment
    assert alignment is not None
    target_laws, drafter_laws = ToyLaws(pair.target), ToyLaws(pair.drafter, DRAFTER_SUPPORT)
    drafter = ToyModel(pair.drafter, bare_info(pair.drafter.vocab_size), max_support=DRAFTER_SUPPORT)
    drafter.set_token_mask(alignment.mask_id, alignment.mask_bitmap)
    target = ToyModel(pair.target, bare_info(pair.target.vocab_size))

    def make(seed: int) -> ToyReplicaCalls:
        cached = CachedToy(drafter_laws, drafter.info)
        cached.state.masks = drafter.state.masks
        targets = [CachedToy(target_laws, target.info) for _ in range(2)]
        return ToyReplicaCalls(targets, cached, DELAYS, random.Random(seed))

    run_many(case.frame, make, SchedulerKnobs(2, 3, True), range(300))
    assert any(key[2] for key in drafter_laws._drafts), "the drafter drafted under TLI's mask"
    assert assert_same_laws(drafter_laws, drafter, target_laws, target) > (5 if config.is_greedy else 30)


def draft_law(
    laws: ToyLaws, context: tuple[int, ...], count: int, threshold: float
) -> dict[tuple[int, ...], float]:
    """The law of a whole draft (confidence stops kept as the last token), enumerated from the cache."""
    law: dict[tuple[int, ...], float] = {}

    def walk(drafted: tuple[int, ...], mass: float) -> None:
        step = laws.draft_step(SAMPLED, DRAFTER_SUPPORT, (*context, *drafted))
        assert step.proposal is not None
        for token, p in step.proposal.prob_of.items():
            longer = (*drafted, token)
            if len(longer) == count or step.confidence[token] < threshold:
                law[longer] = law.get(longer, 0.0) + mass * p
            else:
                walk(longer, mass * p)

    walk((), 1.0)
    return law


def test_drafts_of_both_toys_follow_the_cached_draft_law() -> None:
    case = sd_case(SAMPLED, 4)
    context, threshold = (*PROMPT, 1), 0.5
    law = draft_law(case.drafter_laws, context, 3, threshold)
    assert min(len(d) for d in law) < 3, "confidence stops end some drafts"
    models = {
        "torch": ToyModel(case.drafter, bare_info(VOCAB), max_support=DRAFTER_SUPPORT),
        "cached": CachedToy(case.drafter_laws, bare_info(VOCAB)),
    }
    for model in models.values():
        drafts = []
        for seed in range(DRAWS):
            call = draft_call(context, 3, seed, threshold)
            drafts.append(model.draft(call).draft_tokens)
        assert_law(drafts, law)


def test_scores_of_both_toys_follow_the_cached_laws() -> None:
    case = sd_case(SAMPLED, 4)
    context = (*PROMPT, 2)
    proposal = case.drafter_laws.draft_step(SAMPLED, DRAFTER_SUPPORT, context).proposal
    assert proposal is not None
    draft = SparseProbs(proposal.ids, proposal.probs)
    candidate = proposal.ids[0]
    target_law = case.target_laws.target(SAMPLED, context).prob_of
    bonus_law = case.target_laws.target(SAMPLED, (*context, candidate)).prob_of
    residual: Law = case.target_laws.residual(SAMPLED, context, draft)
    models = {
        "torch": ToyModel(case.target, bare_info(VOCAB)),
        "cached": CachedToy(case.target_laws, bare_info(VOCAB)),
    }
    for model in models.values():
        outcomes = [
            model.score(ScoreCall(context_ref(context), (candidate,), (draft,), SAMPLED, s))
            for s in range(DRAWS)
        ]
        assert {o.candidate_target_probs for o in outcomes} == {(target_law[candidate],)}
        assert_law([o.target_samples[0] for o in outcomes], target_law)
        assert_law([o.target_samples[1] for o in outcomes], bonus_law)
        assert_law([o.recovered_tokens[0] for o in outcomes], residual.prob_of)
