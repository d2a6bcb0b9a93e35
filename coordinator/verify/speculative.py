"""The coordinator's side of speculative sampling: acceptance and the output tokens of a round.

Vocabulary and papers as in ``core.sampling`` (arXiv 2211.17192, 2302.01318). The target
returns, per candidate (draft token sent for scoring), ``candidate_target_probs`` and samples; the
coordinator keeps ``candidate_draft_probs`` (the drafter's exact proposal at the draft token) and draws its
own acceptance uniforms, so the decision needs only O(k) scalars:

- speculative mode: accept candidate i iff ``u_i < min(1, target_prob_i / draft_prob_i)``, stop at the first
  rejection and output the recovered token there, or the bonus token if all k were accepted;
- exact-match mode: accept candidate i iff the target's own sample at i equals it; at the first mismatch
  output that target sample (lossless for any drafter; greedy verification at temperature 0).

The ``*_batch`` functions take any leading batch dims; the scalar functions wrap them.
``speculative_sample_reference`` is a slow, plainly written oracle for tests.
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


def _leading_true(accepted: Tensor) -> Tensor:  # [..., k] bool -> [...] int64
    return torch.cumprod(accepted.to(torch.int64), dim=-1).sum(dim=-1)


def count_accepted_speculative(
    candidate_target_probs: Tensor,  # [..., k]
    candidate_draft_probs: Tensor,  # [..., k], all > 0
    uniforms: Tensor,  # [..., k]
) -> Tensor:  # [...] int64
    """Number of leading candidates with ``u_i < min(1, target_prob_i / draft_prob_i)`` (float64)."""
    assert candidate_target_probs.shape == candidate_draft_probs.shape == uniforms.shape, (
        "candidate_target_probs, candidate_draft_probs and uniforms must share one shape [..., k], got "
        f"{tuple(candidate_target_probs.shape)}, {tuple(candidate_draft_probs.shape)}, "
        f"{tuple(uniforms.shape)}"
    )
    ratio = candidate_target_probs.to(torch.float64) / candidate_draft_probs.to(torch.float64)
    return _leading_true(uniforms.to(torch.float64) < ratio.clamp(max=1.0))


def accept_speculative(
    candidate_target_probs: Tensor,  # [k]
    candidate_draft_probs: Tensor,  # [k]
    uniforms: Tensor,  # [k] float64
) -> int:
    """Number of leading candidates accepted by the speculative-sampling rule.

    A draft token was sampled from its proposal, so its draft probability must be positive; a
    non-positive one raises ``ValueError``.
    """
    assert candidate_target_probs.dim() == 1, (
        f"candidate_target_probs must be [k], got {tuple(candidate_target_probs.shape)}"
    )
    if bool((candidate_draft_probs <= 0).any()):
        raise ValueError("candidate_draft_probs: must all be > 0 (each draft token was sampled from them)")
    return int(count_accepted_speculative(candidate_target_probs, candidate_draft_probs, uniforms).item())


def count_accepted_exact_match(
    candidate_tokens: Tensor,  # [..., k]
    target_samples: Tensor,  # [..., k+1] (or [..., k])
) -> Tensor:  # [...] int64
    """Number of leading candidates equal to the target's sample at the same position."""
    k = candidate_tokens.shape[-1]
    assert target_samples.shape[:-1] == candidate_tokens.shape[:-1] and target_samples.shape[-1] >= k, (
        f"target_samples must be [..., k+1] for candidate_tokens {tuple(candidate_tokens.shape)}, "
        f"got {tuple(target_samples.shape)}"
    )
    return _leading_true(candidate_tokens.to(torch.int64) == target_samples[..., :k].to(torch.int64))


def accept_exact_match(
    candidate_tokens: Tensor,  # [k]
    target_samples: Tensor,  # [k+1]
) -> int:
    """Number of leading candidates accepted by exact match against the target's samples."""
    assert candidate_tokens.dim() == 1, f"candidate_tokens must be [k], got {tuple(candidate_tokens.shape)}"
    return int(count_accepted_exact_match(candidate_tokens, target_samples).item())


def correction_tokens_batch(
    num_accepted: Tensor,  # [...] int64, each in [0, k]
    target_samples: Tensor,  # [..., k+1]
    recovered_tokens: Tensor | None,  # [..., k]; None in exact-match mode
) -> Tensor:  # [...] int64
    """The token output after the accepted ones: recovered (or target sample) at a rejection, else bonus."""
    k = target_samples.shape[-1] - 1
    assert target_samples.shape[:-1] == num_accepted.shape, (
        f"target_samples must be [..., k+1] over num_accepted {tuple(num_accepted.shape)}, "
        f"got {tuple(target_samples.shape)}"
    )
    index = num_accepted.to(torch.int64).unsqueeze(-1)
    at_stop = target_samples.to(torch.int64).gather(-1, index).squeeze(-1)
    if recovered_tokens is None or k == 0:
        return at_stop
    assert recovered_tokens.shape == (*num_accepted.shape, k), (
        f"recovered_tokens must be [..., k] = {(*num_accepted.shape, k)}, got {tuple(recovered_tokens.shape)}"
    )
    recovered = recovered_tokens.to(torch.int64).gather(-1, index.clamp(max=k - 1)).squeeze(-1)
    return torch.where(num_accepted < k, recovered, at_stop)


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
