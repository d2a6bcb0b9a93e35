"""The drafter's loop (``core.drafting``): where a draft ends, and drafting within a token mask."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from core.drafting import DraftRule, draft_rows, draw_within
from core.sampling import SamplingConfig, draft_token, warp_probs

VOCAB = 8


def table(seed: int) -> Tensor:  # [VOCAB + 1, VOCAB]: logits after each previous token (row VOCAB: start)
    return 2.0 * torch.randn(VOCAB + 1, VOCAB, generator=torch.Generator().manual_seed(seed))


def draft(
    logits_table: Tensor,
    rule: DraftRule,
    config: SamplingConfig,
    seed: int,
    *,
    rows: int = 1,
    mask: Tensor | None = None,
) -> tuple[list[tuple[int, ...]], int]:
    """Drafts ``rows`` rows from the start row of a previous-token table; returns the drafts and the
    number of ``advance`` calls."""
    advanced = 0

    def advance(active: Tensor, tokens: Tensor) -> Tensor:
        nonlocal advanced
        advanced += 1
        assert active.shape == tokens.shape
        return logits_table[tokens]

    first = logits_table[VOCAB].expand(rows, VOCAB)
    generator = torch.Generator().manual_seed(seed)
    drafts = draft_rows(first, advance, rule, config=config, max_support=4, generator=generator, mask=mask)
    return [drafts.row(i)[0] for i in range(rows)], advanced


def test_one_row_draws_as_draft_token_step_by_step() -> None:
    logits = table(1)
    config = SamplingConfig(0.9, top_k=5)
    (tokens,), advanced = draft(logits, DraftRule(5), config, seed=3)
    generator = torch.Generator().manual_seed(3)
    expected, row = [], logits[VOCAB]
    for _ in range(5):
        drafted = draft_token(row, config, 4, generator)
        expected.append(drafted.token)
        row = logits[drafted.token]
    assert list(tokens) == expected and advanced == 4  # no forward after the last draft token


def test_proposals_are_the_exact_truncated_distributions() -> None:
    logits = table(2)
    generator = torch.Generator().manual_seed(0)
    drafts = draft_rows(
        logits[VOCAB].unsqueeze(0),
        lambda rows, tokens: logits[tokens],
        DraftRule(3),
        config=SamplingConfig(1.0),
        max_support=4,
        generator=generator,
    )
    tokens, proposals = drafts.row(0)
    previous = VOCAB
    for token, proposal in zip(tokens, proposals, strict=True):
        warped = warp_probs(logits[previous].unsqueeze(0), SamplingConfig(1.0))[0]
        top = torch.topk(warped, 4)
        assert proposal.token_ids == tuple(top.indices.tolist())
        assert proposal.probs == pytest.approx((top.values / top.values.sum()).tolist())
        assert token in proposal.token_ids
        previous = token


@pytest.mark.parametrize("config", [SamplingConfig(0.0), SamplingConfig(1.0)], ids=["greedy", "sampled"])
def test_a_stop_token_is_kept_as_the_last_draft_token(config: SamplingConfig) -> None:
    logits = table(3)
    (free,), _ = draft(logits, DraftRule(6), config, seed=5)
    stop = free[2]
    first_stop = free.index(stop)
    (stopped,), advanced = draft(logits, DraftRule(6, stop_token_ids=frozenset({stop})), config, seed=5)
    assert stopped == free[: first_stop + 1] and stopped[-1] == stop
    assert advanced == first_stop  # drafting stops there: no forward after the stop token


@pytest.mark.parametrize("config", [SamplingConfig(0.0), SamplingConfig(1.0)], ids=["greedy", "sampled"])
def test_a_low_confidence_token_is_kept_as_the_last_draft_token(config: SamplingConfig) -> None:
    logits = table(4)
    (free,), _ = draft(logits, DraftRule(6), config, seed=6)
    unit = SamplingConfig(1.0) if config.is_greedy else config  # greedy confidence: temperature-1 probs
    rows = [VOCAB, *free[:-1]]
    confidence = [
        float(warp_probs(logits[r].unsqueeze(0), unit)[0, t]) for r, t in zip(rows, free, strict=True)
    ]
    cut = next(j for j in range(1, 6) if confidence[j] < min(confidence[:j]))
    threshold = (confidence[cut] + min(confidence[:cut])) / 2
    rule = DraftRule(6, confidence_threshold=threshold)
    (stopped,), advanced = draft(logits, rule, config, seed=6)
    assert stopped == free[: cut + 1]
    assert advanced == cut


def test_rows_stop_independently_and_count_bounds_every_row() -> None:
    logits = table(5)
    config = SamplingConfig(1.0)
    drafts, _ = draft(logits, DraftRule(4, stop_token_ids=frozenset({0, 1})), config, seed=7, rows=400)
    lengths = {len(d) for d in drafts}
    assert lengths == {1, 2, 3, 4}
    for tokens in drafts:
        assert all(t not in (0, 1) for t in tokens[:-1])
        assert len(tokens) == 4 or tokens[-1] in (0, 1)


def test_no_mass_within_the_mask_ends_the_draft_before_drawing() -> None:
    logits = table(6)
    logits[:, 2:] = -math.inf
    logits[:, 0] = 0.0
    logits[0, :2] = -math.inf  # after token 0 only tokens 2.. remain, all -inf: no row can draw
    logits[0, 2] = 1.0
    mask = torch.zeros(VOCAB, dtype=torch.bool)
    mask[[0, 1]] = True
    drafts, _ = draft(logits, DraftRule(5), SamplingConfig(1.0), seed=8, rows=300, mask=mask)
    assert {d[-1] for d in drafts} <= {0, 1}
    assert all(d[-1] == 0 or len(d) == 5 for d in drafts)  # a drawn 0 leaves no mass within the mask
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    has_mass, batch = draw_within(logits[[0, 0]], mask, SamplingConfig(1.0), 4, generator)
    assert not has_mass.any() and batch.tokens.numel() == 0
    assert torch.equal(generator.get_state(), state), "nothing is drawn"


def test_an_all_zero_mask_drafts_nothing_without_drawing() -> None:
    logits = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(16, dtype=torch.bool)
    for config in (SamplingConfig(), SamplingConfig(0.0)):
        generator = torch.Generator().manual_seed(3)
        state = generator.get_state()
        drafts = draft_rows(
            logits,
            lambda rows, tokens: logits,
            DraftRule(3),
            config=config,
            max_support=4,
            generator=generator,
            mask=mask,
        )
        assert drafts.row(0) == ((), ())
        assert torch.equal(generator.get_state(), state)


def test_drafting_within_a_mask_samples_the_renormalised_distribution() -> None:
    logits = torch.randn(32, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(32, dtype=torch.bool)
    mask[[3, 7, 8, 20, 31]] = True
    config = SamplingConfig(temperature=0.8, top_k=3)
    has_mass, drafted = draw_within(logits.unsqueeze(0), mask, config, 8, torch.Generator().manual_seed(4))
    assert has_mass.tolist() == [True]
    masked = logits.masked_fill(~mask, -math.inf)
    expected = draft_token(masked, config, 8, torch.Generator().manual_seed(4))
    assert int(drafted.tokens[0]) == expected.token
    kept = drafted.support_probs[0] > 0
    assert torch.equal(drafted.support_ids[0][kept], expected.support_ids)
    assert torch.equal(drafted.support_probs[0][kept], expected.support_probs)
    # top-k applies after the mask: three allowed tokens, the three best of the allowed logits.
    best_allowed = sorted([3, 7, 8, 20, 31], key=lambda i: -float(logits[i]))[:3]
    assert sorted(expected.support_ids.tolist()) == sorted(best_allowed)
    assert float(expected.support_probs.sum()) == pytest.approx(1.0, abs=1e-6)


def test_greedy_within_a_mask_is_the_masked_argmax_with_renormalised_confidence() -> None:
    logits = torch.tensor([[5.0, 1.0, 2.0, 0.0]])
    mask = torch.tensor([False, True, True, False])
    _, drafted = draw_within(logits, mask, SamplingConfig(0.0), 4, torch.Generator())
    assert drafted.tokens.tolist() == [2]
    assert drafted.support_ids.tolist() == [[2]] and drafted.support_probs.tolist() == [[1.0]]
    assert float(drafted.confidence[0]) == pytest.approx(math.exp(2) / (math.exp(1) + math.exp(2)))
    _, unmasked = draw_within(logits, None, SamplingConfig(0.0), 4, torch.Generator())
    assert unmasked.tokens.tolist() == [0]
