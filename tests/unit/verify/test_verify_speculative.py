"""The coordinator's acceptance rule and output tokens, and the slow oracle against the fast path."""

from __future__ import annotations

import pytest
import torch

from coordinator.verify.speculative import (
    accept_exact_match,
    accept_speculative,
    acceptance_uniforms,
    output_tokens,
    speculative_sample_reference,
)
from core.sampling import (
    SamplingConfig,
    score_candidates,
    sparse_to_dense,
    truncate_support,
    warp_probs,
)


def test_acceptance_uniforms_are_seeded_float64() -> None:
    uniforms = acceptance_uniforms(5, torch.Generator().manual_seed(3))
    assert uniforms.shape == (5,) and uniforms.dtype == torch.float64
    assert torch.equal(
        uniforms, torch.rand(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    )
    assert acceptance_uniforms(0, torch.Generator()).shape == (0,)
    with pytest.raises(ValueError, match=r"^k: "):
        acceptance_uniforms(-1, torch.Generator())


def test_accept_speculative_stops_at_first_rejection() -> None:
    target, draft = [0.9, 0.1, 0.8], [0.3, 0.5, 0.2]
    assert accept_speculative(target, draft, [0.99, 0.1, 0.0]) == 3
    assert accept_speculative(target, draft, [0.99, 0.3, 0.0]) == 1, "0.3 >= 0.1 / 0.5 rejects"
    assert accept_speculative(target, draft, [0.5, 0.19, 0.99]) == 3
    assert accept_speculative([0.0, 1.0], [0.5, 0.5], [0.0, 0.0]) == 0
    assert accept_speculative([], [], []) == 0


def test_accept_speculative_boundary_is_strict() -> None:
    assert accept_speculative([0.3], [0.6], [0.5]) == 0
    assert accept_speculative([0.3], [0.6], [0.5 - 2**-50]) == 1


def test_accept_speculative_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"^candidate_draft_probs: "):
        accept_speculative([0.5], [0.0], [0.1])
    with pytest.raises(ValueError, match="one length k"):
        accept_speculative([0.5, 0.1], [0.5], [0.1])


def test_accept_speculative_equals_the_float64_tensor_rule() -> None:
    """The rule on Python floats decides as ``u < min(1, target / draft)`` on float64 tensors."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(2000):
        k = int(torch.randint(0, 6, (1,), generator=generator))
        target = torch.rand(k, generator=generator, dtype=torch.float64) * (
            torch.rand(k, generator=generator) < 0.9
        )
        draft = torch.rand(k, generator=generator, dtype=torch.float64).clamp(min=1e-6)
        uniforms = acceptance_uniforms(k, generator)
        leading = int(torch.cumprod((uniforms < (target / draft).clamp(max=1.0)).long(), 0).sum())
        assert accept_speculative(target.tolist(), draft.tolist(), uniforms.tolist()) == leading


def test_accept_exact_match() -> None:
    assert accept_exact_match([3, 1, 4], [3, 1, 5, 9]) == 2
    assert accept_exact_match([3, 1, 4], [3, 1, 4, 9]) == 3
    assert accept_exact_match([2], [3, 1]) == 0
    assert accept_exact_match([], [7]) == 0
    with pytest.raises(ValueError, match=r"^target_samples: "):
        accept_exact_match([3, 1], [3])


def test_output_tokens() -> None:
    assert output_tokens([5, 6, 7], 1, [5, 6, 2, 9], [1, 8, 3]) == [5, 8]
    assert output_tokens([5, 6, 7], 3, [5, 6, 7, 9], [1, 8, 3]) == [5, 6, 7, 9], "bonus token"
    assert output_tokens([5, 6, 7], 1, [5, 4, 2, 9], None) == [5, 4], "exact match outputs the target sample"
    assert output_tokens([], 0, [4], []) == [4]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (([1, 2], 3, [0, 0, 0], None), "num_accepted"),
        (([1, 2], 1, [0, 0], None), "target_samples"),
        (([1, 2], 1, [0, 0, 0], [1]), "recovered_tokens"),
    ],
)
def test_output_tokens_validates(
    args: tuple[list[int], int, list[int], list[int] | None], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        output_tokens(*args)


def _fast_round(
    target_logits: torch.Tensor,  # [k+1, vocab]
    candidates: list[int],
    draft_probs: torch.Tensor | None,  # [k, vocab]
    config: SamplingConfig,
    seed: int,
) -> list[int]:
    score = score_candidates(
        target_logits, torch.tensor(candidates), draft_probs, config, torch.Generator().manual_seed(seed)
    )
    if draft_probs is None or score.recovered_tokens is None:
        num_accepted = accept_exact_match(candidates, score.target_samples.tolist())
        return output_tokens(candidates, num_accepted, score.target_samples.tolist(), None)
    uniforms = acceptance_uniforms(len(candidates), torch.Generator().manual_seed(seed + 1)).tolist()
    candidate_draft_probs = draft_probs[torch.arange(len(candidates)), candidates].tolist()
    num_accepted = accept_speculative(score.candidate_target_probs.tolist(), candidate_draft_probs, uniforms)
    recovered = score.recovered_tokens.tolist()
    return output_tokens(candidates, num_accepted, score.target_samples.tolist(), recovered)


def _reference_round(
    target_probs: torch.Tensor, candidates: list[int], draft_probs: torch.Tensor | None, seed: int
) -> list[int]:
    k = len(candidates)
    target_gen = torch.Generator().manual_seed(seed)
    target_uniforms = torch.rand(k + 1, generator=target_gen, dtype=torch.float64).tolist()
    recovered_uniforms = torch.rand(k, generator=target_gen, dtype=torch.float64).tolist()
    coordinator_gen = torch.Generator().manual_seed(seed + 1)
    return speculative_sample_reference(
        target_probs,
        draft_probs,
        candidates,
        acceptance_uniforms=torch.rand(k, generator=coordinator_gen, dtype=torch.float64).tolist(),
        target_uniforms=target_uniforms,
        recovered_uniforms=recovered_uniforms,
    )


@pytest.mark.parametrize("exact_match", [False, True])
@pytest.mark.parametrize(
    ("config", "max_support"),
    [(SamplingConfig(), 10), (SamplingConfig(0.7, top_k=4), 3), (SamplingConfig(1.3, top_p=0.8), 1)],
)
def test_reference_oracle_equals_fast_path(
    config: SamplingConfig, max_support: int, exact_match: bool
) -> None:
    generator = torch.Generator().manual_seed(21)
    vocab, k = 10, 4
    rejected_rounds, accepted_tokens = 0, 0
    for seed in range(300):
        target_logits = 2 * torch.randn((k + 1, vocab), generator=generator, dtype=torch.float64)
        draft_ids, draft_kept = truncate_support(
            warp_probs(
                2 * torch.randn((k, vocab), generator=generator, dtype=torch.float64), SamplingConfig()
            ),
            max_support,
        )
        draft_probs = sparse_to_dense(draft_ids, draft_kept, vocab)
        candidates = torch.multinomial(draft_probs, 1, generator=generator).squeeze(-1).tolist()
        verified_draft_probs = None if exact_match else draft_probs
        fast = _fast_round(target_logits, candidates, verified_draft_probs, config, seed)
        reference = _reference_round(
            warp_probs(target_logits, config), candidates, verified_draft_probs, seed
        )
        assert fast == reference, f"seed {seed}"
        rejected_rounds += len(fast) <= k
        accepted_tokens += len(fast) - 1
    assert rejected_rounds > 0 and accepted_tokens > 0, "acceptances and rejections were both exercised"
