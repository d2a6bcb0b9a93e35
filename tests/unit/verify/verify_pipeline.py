"""The full speculative pipeline on toy LMs: drafter, target Score step and coordinator, round by round.

``run_vectorised`` runs many independent generations at once through the batch forms of the functions
(``draft_tokens_batch``, ``score_candidates_batch``, ``count_accepted_*``); ``run_literal`` runs one
generation through the per-sequence functions exactly as the services call them. With one trial and the
same seed both draw the same uniforms in the same order. Generators: the drafter's is seeded with
``seed``, the target's with ``seed + 1``, the coordinator's with ``seed + 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from coordinator.verify.speculative import (
    accept_exact_match,
    accept_speculative,
    acceptance_uniforms,
    correction_tokens_batch,
    count_accepted_exact_match,
    count_accepted_speculative,
    output_tokens,
)
from core.restrict import (
    draft_token_tli,
    has_intersection_mass,
    intersection_mask,
    map_sparse_to_target,
    restrict_logits,
)
from core.sampling import (
    SamplingConfig,
    draft_token,
    draft_tokens_batch,
    score_candidates,
    score_candidates_batch,
    sparse_to_dense,
)
from tests.unit.verify.verify_toys import (
    NUM_OUTPUT_TOKENS,
    ToyLM,
    assert_law,
    chi_square_pvalue,
    encode_sequences,
    exact_output_law,
)

# (context [b, length], positions [b], generator) -> (draft tokens [b], dense draft_probs [b, target_vocab],
# drafted [b] bool: False where no draft token could be proposed; those rows' other outputs are ignored).
DrafterStep = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class PipelineRun:
    outputs: Tensor  # [N, NUM_OUTPUT_TOKENS] first output tokens of each generation
    first_round_accepted: Tensor  # [N] candidates accepted in the first round
    first_round_drafts: Tensor  # [N] draft tokens proposed in the first round
    rejections: Tensor  # [N] rounds that ended with a rejected candidate (a recovered token)


def generators(seed: int) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    """(drafter, target, coordinator) generators of one run."""
    return tuple(torch.Generator().manual_seed(seed + offset) for offset in range(3))  # type: ignore[return-value]


def sd_drafter_step(drafter: ToyLM, config: SamplingConfig, max_support: int) -> DrafterStep:
    """Same-vocabulary drafting through ``draft_tokens_batch``."""

    def step(context: Tensor, positions: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        batch = draft_tokens_batch(drafter.next_logits(context, positions), config, max_support, generator)
        dense = sparse_to_dense(batch.support_ids, batch.support_probs, drafter.vocab)
        return batch.tokens, dense, torch.ones_like(batch.tokens, dtype=torch.bool)

    return step


def tli_drafter_step(
    drafter: ToyLM, drafter_to_target: Tensor, config: SamplingConfig, max_support: int, target_vocab: int
) -> DrafterStep:
    """TLI drafting: restrict to the intersection, draft, map the proposal into target ids."""
    mask = intersection_mask(drafter_to_target, drafter.vocab)

    def step(context: Tensor, positions: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        restricted = restrict_logits(drafter.next_logits(context, positions), mask)
        drafted = has_intersection_mass(restricted)
        safe_logits = torch.where(drafted.unsqueeze(-1), restricted, 0.0)
        batch = draft_tokens_batch(safe_logits, config, max_support, generator)
        support_probs = batch.support_probs * drafted.unsqueeze(-1)
        target_ids, probs = map_sparse_to_target(batch.support_ids, support_probs, drafter_to_target)
        dense = sparse_to_dense(target_ids.clamp(min=0), probs, target_vocab)
        return drafter_to_target[batch.tokens].clamp(min=0), dense, drafted

    return step


def run_vectorised(
    target: ToyLM,
    target_config: SamplingConfig,
    drafter_step: DrafterStep,
    *,
    k: int,
    num_trials: int,
    seed: int,
    exact_match: bool = False,
) -> PipelineRun:
    """Runs num_trials independent generations until each has NUM_OUTPUT_TOKENS output tokens."""
    drafter_gen, target_gen, coordinator_gen = generators(seed)
    tokens = torch.zeros((num_trials, NUM_OUTPUT_TOKENS + k + 1), dtype=torch.int64)
    lengths = torch.zeros(num_trials, dtype=torch.int64)
    rejections = torch.zeros(num_trials, dtype=torch.int64)
    first_round: tuple[Tensor, Tensor] | None = None
    while bool((lengths < NUM_OUTPUT_TOKENS).any()):
        active = torch.nonzero(lengths < NUM_OUTPUT_TOKENS).squeeze(-1)
        context, positions = tokens[active], lengths[active]
        num_accepted, num_drafts = _vectorised_round(
            target, target_config, drafter_step, context, positions,
            k=k, exact_match=exact_match, gens=(drafter_gen, target_gen, coordinator_gen),
        )  # fmt: skip
        tokens[active], lengths[active] = context, positions + num_accepted + 1
        rejections[active] += (num_accepted < num_drafts).to(torch.int64)
        if first_round is None:
            first_round = (num_accepted, num_drafts)
    assert first_round is not None
    return PipelineRun(tokens[:, :NUM_OUTPUT_TOKENS], *first_round, rejections)


def _vectorised_round(
    target: ToyLM,
    target_config: SamplingConfig,
    drafter_step: DrafterStep,
    context: Tensor,  # [b, length], updated in place with the output tokens
    positions: Tensor,  # [b]
    *,
    k: int,
    exact_match: bool,
    gens: tuple[torch.Generator, torch.Generator, torch.Generator],
) -> tuple[Tensor, Tensor]:  # (num_accepted [b], num_drafts [b])
    drafter_gen, target_gen, coordinator_gen = gens
    b, rows = context.shape[0], torch.arange(context.shape[0])
    candidates = torch.zeros((b, k), dtype=torch.int64)
    draft_probs = torch.zeros((b, k, target.vocab))
    drafting = torch.ones(b, dtype=torch.bool)
    num_drafts = torch.zeros(b, dtype=torch.int64)
    for j in range(k):
        draft, probs, drafted = drafter_step(context, positions + j, drafter_gen)
        drafting &= drafted
        num_drafts += drafting
        candidates[:, j], draft_probs[:, j] = draft, probs
        context[rows, positions + j] = draft
    target_logits = torch.stack([target.next_logits(context, positions + j) for j in range(k + 1)], dim=1)
    score = score_candidates_batch(
        target_logits, candidates, None if exact_match else draft_probs, target_config, target_gen
    )
    if exact_match:
        num_accepted = count_accepted_exact_match(candidates, score.target_samples)
    else:
        uniforms = acceptance_uniforms(b * k, coordinator_gen).reshape(b, k)
        candidate_draft_probs = draft_probs.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)
        num_accepted = count_accepted_speculative(
            score.candidate_target_probs, candidate_draft_probs, uniforms
        )
    num_accepted = torch.minimum(num_accepted, num_drafts)
    if bool((num_drafts == k).all()):
        correction = correction_tokens_batch(num_accepted, score.target_samples, score.recovered_tokens)
    else:
        correction = _short_round_correction(
            num_accepted, num_drafts, score.target_samples, score.recovered_tokens
        )
    context[rows, positions + num_accepted] = correction
    return num_accepted, num_drafts


def _short_round_correction(
    num_accepted: Tensor,  # [b]
    num_drafts: Tensor,  # [b]
    target_samples: Tensor,  # [b, k+1]
    recovered_tokens: Tensor | None,  # [b, k]
) -> Tensor:  # [b]
    """Correction token when rows proposed fewer than k drafts (TLI fallback): only the first drafts count."""
    at_stop = target_samples.gather(-1, num_accepted.unsqueeze(-1)).squeeze(-1)
    if recovered_tokens is None:
        return at_stop
    index = num_accepted.clamp(max=recovered_tokens.shape[-1] - 1).unsqueeze(-1)
    recovered = recovered_tokens.gather(-1, index).squeeze(-1)
    return torch.where(num_accepted < num_drafts, recovered, at_stop)


def run_literal(
    target: ToyLM,
    target_config: SamplingConfig,
    draft_one: Callable[[list[int], torch.Generator], tuple[int, Tensor, Tensor] | None],
    *,
    k: int,
    seed: int,
    exact_match: bool = False,
) -> list[int]:
    """One generation through the per-sequence functions; returns its first NUM_OUTPUT_TOKENS tokens.

    ``draft_one(context, generator)`` returns (draft token, support ids, support probs) in target ids, or
    None when no draft token can be proposed (the round stops drafting there).
    """
    drafter_gen, target_gen, coordinator_gen = generators(seed)
    output: list[int] = []
    while len(output) < NUM_OUTPUT_TOKENS:
        drafts: list[int] = []
        dense_rows: list[Tensor] = []
        for _ in range(k):
            proposal = draft_one(output + drafts, drafter_gen)
            if proposal is None:
                break
            token, support_ids, support_probs = proposal
            drafts.append(token)
            dense_rows.append(sparse_to_dense(support_ids[None], support_probs[None], target.vocab)[0])
        target_logits = torch.stack(
            [target.logits_after(output + drafts[:j]) for j in range(len(drafts) + 1)]
        )
        candidates = torch.tensor(drafts, dtype=torch.int64)
        dense = None if exact_match else torch.stack(dense_rows) if drafts else torch.zeros((0, target.vocab))
        score = score_candidates(target_logits, candidates, dense, target_config, target_gen)
        if exact_match or score.recovered_tokens is None:
            num_accepted = accept_exact_match(candidates, score.target_samples)
            recovered = None
        else:
            candidate_draft_probs = torch.tensor(
                [float(row[t]) for row, t in zip(dense_rows, drafts, strict=True)]
            )
            uniforms = acceptance_uniforms(len(drafts), coordinator_gen)
            num_accepted = accept_speculative(score.candidate_target_probs, candidate_draft_probs, uniforms)
            recovered = score.recovered_tokens.tolist()
        output += output_tokens(drafts, num_accepted, score.target_samples.tolist(), recovered)
    return output[:NUM_OUTPUT_TOKENS]


def sd_draft_one(
    drafter: ToyLM, config: SamplingConfig, max_support: int
) -> Callable[[list[int], torch.Generator], tuple[int, Tensor, Tensor] | None]:
    def draft_one(context: list[int], generator: torch.Generator) -> tuple[int, Tensor, Tensor] | None:
        drafted = draft_token(drafter.logits_after(context), config, max_support, generator)
        return drafted.token, drafted.support_ids, drafted.support_probs

    return draft_one


def tli_draft_one(
    drafter: ToyLM, drafter_to_target: Tensor, config: SamplingConfig, max_support: int
) -> Callable[[list[int], torch.Generator], tuple[int, Tensor, Tensor] | None]:
    def draft_one(context: list[int], generator: torch.Generator) -> tuple[int, Tensor, Tensor] | None:
        result = draft_token_tli(
            drafter.logits_after(context), drafter_to_target, config, max_support, generator
        )
        if result is None:
            return None
        return result.drafted.token, result.drafted.support_ids, result.drafted.support_probs

    return draft_one


def assert_output_law(run: PipelineRun, target: ToyLM, target_config: SamplingConfig) -> None:
    """The run's output tokens follow the target's exact joint law after its warpers."""
    assert_law(encode_sequences(run.outputs, target.vocab), exact_output_law(target, target_config))


def assert_acceptance_oracle(run: PipelineRun, accept_law: np.ndarray) -> None:
    """First-round accepted counts follow the oracle; each position's conditional rate within 5 sigma."""
    k = len(accept_law) - 1
    counts = np.bincount(run.first_round_accepted.numpy(), minlength=k + 1).astype(np.float64)
    assert chi_square_pvalue(counts, accept_law) >= 1e-4, f"accepted {counts} vs oracle {accept_law}"
    reached, expected_reached = counts[::-1].cumsum()[::-1], accept_law[::-1].cumsum()[::-1]
    for position in range(1, k + 1):
        trials = reached[position - 1]
        if expected_reached[position - 1] == 0:
            assert trials == 0, f"position {position} was reached although the oracle says it cannot be"
            continue
        oracle = expected_reached[position] / expected_reached[position - 1]
        if trials < 100:
            continue
        rate = reached[position] / trials
        sigma = math.sqrt(max(oracle * (1 - oracle), 1e-12) / trials)
        assert abs(rate - oracle) <= 5 * sigma + 1e-9, f"position {position}: rate {rate:.4f} vs {oracle:.4f}"


def greedy_decode(target: ToyLM) -> list[int]:
    """The target's first tokens under argmax decoding."""
    context: list[int] = []
    for _ in range(NUM_OUTPUT_TOKENS):
        context.append(int(torch.argmax(target.logits_after(context))))
    return context
