"""The coordinator's side of speculative sampling: acceptance and the output tokens of a round.

Vocabulary and papers as in ``core.sampling`` (arXiv 2211.17192, 2302.01318). The target
returns, per candidate (draft token sent for scoring), ``candidate_target_probs`` and samples; the
coordinator keeps ``candidate_draft_probs`` (the drafter's exact proposal at the draft token) and draws its
own acceptance uniforms, so the decision needs only O(k) scalars:

- speculative mode: accept candidate i iff ``u_i < min(1, target_prob_i / draft_prob_i)``, stop at the first
  rejection and output the recovered token there, or the bonus token if all k were accepted;
- exact-match mode: accept candidate i iff the target's own sample at i equals it; at the first mismatch
  output that target sample (lossless for any drafter; greedy verification at temperature 0).

A round has at most a few dozen candidates, so the rule runs on Python floats (float64, as the ratios and
uniforms are). ``speculative_sample_reference`` is a slow, plainly written oracle for tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def acceptance_uniforms(k: int, generator: torch.Generator) -> Tensor:  # [k] float64
    """Draws the k acceptance uniforms of one round: ``torch.rand(k, generator=generator, dtype=float64)``."""
    if k < 0:
        raise ValueError(f"k: must be >= 0, got {k}")
    return torch.rand(k, generator=generator, dtype=torch.float64, device=generator.device)


def accept_speculative(
    candidate_target_probs: Sequence[float],  # [k]
    candidate_draft_probs: Sequence[float],  # [k], all > 0
    uniforms: Sequence[float],  # [k]
) -> int:
    """Number of leading candidates with ``u_i < min(1, target_prob_i / draft_prob_i)`` (float64).

    A draft token was sampled from its proposal, so its draft probability must be positive; a
    non-positive one raises ``ValueError``.
    """
    if not len(candidate_target_probs) == len(candidate_draft_probs) == len(uniforms):
        raise ValueError(
            "candidate_target_probs, candidate_draft_probs and uniforms: must have one length k, got "
            f"{len(candidate_target_probs)}, {len(candidate_draft_probs)} and {len(uniforms)}"
        )
    if any(draft_prob <= 0 for draft_prob in candidate_draft_probs):
        raise ValueError("candidate_draft_probs: must all be > 0 (each draft token was sampled from them)")
    accepted = 0
    for target_prob, draft_prob, uniform in zip(
        candidate_target_probs, candidate_draft_probs, uniforms, strict=True
    ):
        if not float(uniform) < min(1.0, float(target_prob) / float(draft_prob)):
            break
        accepted += 1
    return accepted


def accept_exact_match(
    candidate_tokens: Sequence[int],  # [k]
    target_samples: Sequence[int],  # [k+1] (or [k])
) -> int:
    """Number of leading candidates equal to the target's sample at the same position."""
    k = len(candidate_tokens)
    if len(target_samples) < k:
        raise ValueError(f"target_samples: must have at least k = {k} entries, got {len(target_samples)}")
    accepted = 0
    for candidate, sample in zip(candidate_tokens, target_samples, strict=False):
        if int(candidate) != int(sample):
            break
        accepted += 1
    return accepted


def output_tokens(
    candidate_tokens: Sequence[int],
    num_accepted: int,
    target_samples: Sequence[int],
    recovered_tokens: Sequence[int] | None,
) -> list[int]:
    """Output tokens of a round: the accepted candidates, then the recovered / target-sample / bonus token.

    ``recovered_tokens`` is None in exact-match mode, where the target sample at the first mismatch is
    output instead. ``target_samples`` has k+1 entries; the last is the bonus token.
    """
    k = len(candidate_tokens)
    if not 0 <= num_accepted <= k:
        raise ValueError(f"num_accepted: must lie in [0, {k}], got {num_accepted}")
    if len(target_samples) != k + 1:
        raise ValueError(f"target_samples: must have k+1 = {k + 1} entries, got {len(target_samples)}")
    if recovered_tokens is not None and len(recovered_tokens) != k:
        raise ValueError(f"recovered_tokens: must have k = {k} entries, got {len(recovered_tokens)}")
    accepted = [int(token) for token in candidate_tokens[:num_accepted]]
    if num_accepted < k and recovered_tokens is not None:
        return [*accepted, int(recovered_tokens[num_accepted])]
    return [*accepted, int(target_samples[num_accepted])]


def _inverse_cdf(probs: Sequence[float], uniform: float) -> int:
    """Smallest index whose cumulative mass exceeds ``uniform * total`` (a zero entry is never chosen)."""
    total = float(sum(probs))
    threshold = uniform * total
    cumulative = 0.0
    last_positive = 0
    for index, prob in enumerate(probs):
        if prob <= 0:
            continue
        last_positive = index
        cumulative += prob
        if cumulative > threshold:
            return index
    return last_positive


def speculative_sample_reference(
    target_probs: Tensor,  # [k+1, vocab] warped target distributions
    draft_probs: Tensor | None,  # [k, vocab] dense proposals; None selects exact-match mode
    candidate_tokens: Sequence[int],
    *,
    acceptance_uniforms: Sequence[float],  # k uniforms (speculative mode)
    target_uniforms: Sequence[float],  # k+1 uniforms for target samples 0..k
    recovered_uniforms: Sequence[float],  # k uniforms for the residuals (speculative mode)
) -> list[int]:
    """Slow oracle: one round of speculative sampling, position by position, on dense Python floats.

    Given the same uniforms as the fast path (``score_candidates`` draws ``target_uniforms`` then
    ``recovered_uniforms``; the coordinator draws ``acceptance_uniforms``), it returns the same output
    tokens up to float-rounding ties.
    """
    k = len(candidate_tokens)
    target_rows = [[float(x) for x in row] for row in target_probs.tolist()]
    draft_rows = None if draft_probs is None else [[float(x) for x in row] for row in draft_probs.tolist()]
    output: list[int] = []
    for i, token in enumerate(candidate_tokens):
        target_row = target_rows[i]
        if draft_rows is None:
            sampled = _inverse_cdf(target_row, target_uniforms[i])
            if sampled != token:
                return [*output, sampled]
        else:
            target_prob, draft_prob = target_row[token], draft_rows[i][token]
            if not acceptance_uniforms[i] < min(1.0, target_prob / draft_prob):
                excess = [max(t - d, 0.0) for t, d in zip(target_row, draft_rows[i], strict=True)]
                residual = excess if sum(excess) > 0 else target_row
                return [*output, _inverse_cdf(residual, recovered_uniforms[i])]
        output.append(int(token))
    assert len(output) == k
    return [*output, _inverse_cdf(target_rows[k], target_uniforms[k])]
