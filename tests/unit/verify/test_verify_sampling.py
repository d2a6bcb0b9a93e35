"""Warpers, sparse proposals, sampler, residuals, Score and draft steps (``core.sampling``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidArgumentError
from core.sampling import (
    MIN_TEMPERATURE,
    SamplingConfig,
    draft_token,
    draft_tokens_batch,
    inverse_cdf,
    residual_probs,
    sample,
    score_candidates,
    score_candidates_batch,
    sparse_to_dense,
    truncate_support,
    warp_probs,
)
from tests.support.laws import assert_law, reference_proposal, reference_warp

logit_rows = st.lists(
    st.floats(min_value=-20, max_value=20, allow_nan=False, allow_subnormal=False), min_size=2, max_size=12
)
sampling_configs = st.builds(
    SamplingConfig,
    temperature=st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.5, 3.0]),
    top_k=st.integers(min_value=0, max_value=14),
    top_p=st.sampled_from([0.05, 0.3, 0.5, 0.8, 0.95, 1.0]),
)
prob_rows = st.lists(
    st.floats(min_value=0, max_value=1, allow_subnormal=False), min_size=2, max_size=12
).filter(lambda row: sum(row) > 1e-3)


def normalised(row: list[float]) -> torch.Tensor:
    probs = torch.tensor(row, dtype=torch.float64)
    return probs / probs.sum()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 1e-4}, "temperature"),
        ({"temperature": 5e-324}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
    ],
)
def test_sampling_config_rejects_bad_values_naming_the_field_value_and_range(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        SamplingConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == f"sampling.{field}"
    assert info.value.message.startswith(f"sampling.{field}: must ")
    assert f"got {kwargs[field]!r}" in info.value.message or f"got {kwargs[field]}" in info.value.message
    allowed = {"temperature": f">= {MIN_TEMPERATURE}", "top_k": ">= 0", "top_p": "(0, 1]"}[field]
    assert allowed in info.value.message


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_smallest_temperature_samples_and_scores_finite_laws(dtype: torch.dtype) -> None:
    """Every accepted temperature works end to end: large logits at ``MIN_TEMPERATURE`` stay finite."""
    config = SamplingConfig(temperature=MIN_TEMPERATURE)
    logits = torch.tensor([[3.0e4, 3.0e4 - 0.01, -3.0e4, 0.0], [-1.0, -1.002, -1.5, -math.inf]]).to(dtype)
    probs = warp_probs(logits, config)
    assert bool(torch.isfinite(probs).all())
    assert torch.allclose(probs.sum(dim=-1), torch.ones(2))
    drafted = draft_token(logits[1], config, 4, torch.Generator().manual_seed(0))
    assert drafted.token in (0, 1, 2) and math.isfinite(drafted.confidence)
    scored = score_candidates(logits, torch.tensor([1]), probs[:1], config, torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(scored.candidate_target_probs).all())


def test_sampling_config_defaults_and_greedy() -> None:
    assert SamplingConfig() == SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)
    assert not SamplingConfig().is_greedy
    assert SamplingConfig(temperature=0.0).is_greedy


def test_warp_greedy_is_one_hot_at_first_maximum() -> None:
    logits = torch.tensor([[1.0, 3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    probs = warp_probs(logits, SamplingConfig(temperature=0.0, top_k=1, top_p=0.1))
    assert probs.tolist() == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_warp_output_dtype(dtype: torch.dtype, expected: torch.dtype, temperature: float) -> None:
    logits = torch.randn((3, 5), generator=torch.Generator().manual_seed(0)).to(dtype)
    assert warp_probs(logits, SamplingConfig(temperature=temperature)).dtype == expected


def test_warp_top_k_keeps_ties_with_the_kth_largest() -> None:
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0, 3.0]])
    probs = warp_probs(logits, SamplingConfig(top_k=2))
    assert (probs[0] > 0).tolist() == [True, False, False, False, True]
    probs = warp_probs(logits, SamplingConfig(top_k=3))
    assert (probs[0] > 0).tolist() == [True, True, True, False, True]


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (0.1, [True, False, False, False]),
        (0.7, [True, True, False, False]),
        (0.85, [True, True, True, False]),
    ],
)
def test_warp_top_p_keeps_smallest_set_reaching_the_mass(top_p: float, kept: list[bool]) -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64).log()
    probs = warp_probs(logits, SamplingConfig(top_p=top_p))
    assert (probs[0] > 0).tolist() == kept
    expected = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64) * torch.tensor(kept)
    torch.testing.assert_close(probs[0], expected / expected.sum())


def test_warp_handles_masked_logits() -> None:
    logits = torch.tensor([[-math.inf, 0.0, 1.0, -math.inf]])
    for config in [SamplingConfig(), SamplingConfig(0.5, top_k=3, top_p=0.9), SamplingConfig(0.0)]:
        probs = warp_probs(logits, config)
        assert torch.isfinite(probs).all()
        assert probs[0, 0] == 0 and probs[0, 3] == 0
        assert probs.sum().item() == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(row=logit_rows, config=sampling_configs)
def test_warp_matches_plain_reference(row: list[float], config: SamplingConfig) -> None:
    probs = warp_probs(torch.tensor([row], dtype=torch.float64), config)[0].numpy()
    np.testing.assert_allclose(probs, reference_warp(row, config), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(row=logit_rows, config=sampling_configs)
def test_warp_invariants(row: list[float], config: SamplingConfig) -> None:
    logits = torch.tensor([row], dtype=torch.float32)
    probs = warp_probs(logits, config)[0]
    assert (probs >= 0).all()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert probs[torch.argmax(logits[0])] > 0, "the most likely token is always kept"
    order = torch.argsort(logits[0], descending=True, stable=True)
    assert (probs[order][1:] <= probs[order][:-1]).all(), "warping keeps the order of the logits"
    if not config.is_greedy and config.top_k > 0:
        kth = torch.sort(logits[0], descending=True).values[min(config.top_k, len(row)) - 1]
        assert ((probs > 0) <= (logits[0] >= kth)).all(), "top-k support"


@settings(max_examples=100, deadline=None)
@given(row=logit_rows, top_p=st.floats(min_value=0.01, max_value=0.99))
def test_warp_top_p_mass_and_minimality(row: list[float], top_p: float) -> None:
    logits = torch.tensor([row], dtype=torch.float64)
    untruncated = warp_probs(logits, SamplingConfig())[0]
    kept = warp_probs(logits, SamplingConfig(top_p=top_p))[0] > 0
    assert untruncated[kept].sum().item() >= top_p - 1e-12
    smallest_kept = untruncated[kept].min()
    without_last_ties = kept & (untruncated > smallest_kept)
    assert untruncated[without_last_ties].sum().item() < top_p + 1e-12


def test_truncate_support_sorted_renormalised_and_padded() -> None:
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.0, 0.0, 1.0, 0.0]])
    token_ids, kept = truncate_support(probs, 2)
    assert token_ids[0].tolist() == [1, 3]
    torch.testing.assert_close(kept[0], torch.tensor([4 / 7, 3 / 7]))
    assert token_ids[1, 0].item() == 2 and kept[1].tolist() == [1.0, 0.0]
    assert token_ids[1, 1].item() != 2, "padding ids are distinct from real ones"


def test_truncate_support_leaves_fitting_rows_bit_identical() -> None:
    probs = warp_probs(
        torch.randn((4, 9), generator=torch.Generator().manual_seed(3)), SamplingConfig(top_k=3)
    )
    token_ids, kept = truncate_support(probs, 5)
    assert kept.shape == (4, 5)
    assert torch.equal(kept, probs.gather(-1, token_ids))
    token_ids, kept = truncate_support(probs, 20)
    assert kept.shape == (4, 9)


def test_truncate_support_rejects_empty_support() -> None:
    with pytest.raises(ValueError, match=r"^max_support: "):
        truncate_support(torch.ones((1, 3)) / 3, 0)


@settings(max_examples=100, deadline=None)
@given(row=prob_rows, max_support=st.integers(min_value=1, max_value=14))
def test_truncate_support_invariants(row: list[float], max_support: int) -> None:
    probs = normalised(row)[None]
    token_ids, kept = truncate_support(probs, max_support)
    assert token_ids.shape == kept.shape == (1, min(max_support, len(row)))
    assert len(set(token_ids[0].tolist())) == token_ids.shape[1]
    assert kept.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (kept[0][1:] <= kept[0][:-1]).all(), "sorted by probability"
    positive = kept[0] > 0
    assert (probs[0][token_ids[0][positive]] > 0).all(), "support is a subset of the original support"
    ratio = kept[0][positive] / probs[0][token_ids[0][positive]]
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio)), "proportional to the original"
    dropped = torch.ones(len(row), dtype=torch.bool)
    dropped[token_ids[0]] = False
    if dropped.any():
        assert probs[0][dropped].max() <= kept[0][positive].min() / ratio[0] + 1e-15, "keeps the most likely"


def test_sparse_to_dense_round_trip() -> None:
    probs = warp_probs(
        torch.randn((3, 7), generator=torch.Generator().manual_seed(1)), SamplingConfig(top_k=3)
    )
    token_ids, kept = truncate_support(probs, 4)
    assert torch.equal(sparse_to_dense(token_ids, kept, 7), probs)


def test_inverse_cdf_edges_never_pick_zero_probability() -> None:
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0, 0.0]] * 4, dtype=torch.float32)
    uniforms = torch.tensor([0.0, 0.25, 1.0 - 2.0**-53, 1.0], dtype=torch.float64)
    assert inverse_cdf(probs, uniforms).tolist() == [1, 3, 3, 3]


def test_inverse_cdf_scales_by_row_total() -> None:
    probs = torch.tensor([[2.0, 6.0], [2.0, 6.0]])
    assert inverse_cdf(probs, torch.tensor([0.2499, 0.2501], dtype=torch.float64)).tolist() == [0, 1]


def test_sample_draws_one_float64_uniform_per_row() -> None:
    probs = torch.tensor([[0.2, 0.3, 0.5]] * 5)
    generator = torch.Generator().manual_seed(11)
    tokens = sample(probs, generator)
    replay = torch.Generator().manual_seed(11)
    uniforms = torch.rand(5, generator=replay, dtype=torch.float64)
    assert torch.equal(tokens, inverse_cdf(probs, uniforms))
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=replay))


def test_sample_follows_its_distribution_and_avoids_zeros() -> None:
    law = np.array([0.0, 0.1, 0.0, 0.45, 0.05, 0.4, 0.0])
    probs = torch.tensor(law, dtype=torch.float32).expand(100_000, -1)
    tokens = sample(probs, torch.Generator().manual_seed(2)).numpy()
    assert_law(tokens.tolist(), dict(enumerate(law.tolist())))


def test_residual_example_and_no_mass_row() -> None:
    target = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    draft = torch.tensor([[0.2, 0.6, 0.2], [0.2, 0.3, 0.5]])
    residual, has_mass = residual_probs(target, draft)
    torch.testing.assert_close(residual[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(residual[1], target[1])
    assert has_mass.tolist() == [True, False]


@settings(max_examples=100, deadline=None)
@given(target_row=prob_rows, draft_row=prob_rows)
def test_residual_invariants(target_row: list[float], draft_row: list[float]) -> None:
    size = min(len(target_row), len(draft_row))
    target, draft = normalised(target_row[:size])[None], normalised(draft_row[:size])[None]
    residual, has_mass = residual_probs(target, draft)
    assert (residual >= 0).all()
    assert residual.sum().item() == pytest.approx(1.0, abs=1e-12)
    if has_mass.item():
        assert ((residual > 0) <= (target > draft)).all(), "residual lives where target exceeds draft"
        excess = (target - draft).clamp(min=0)
        torch.testing.assert_close(residual, excess / excess.sum())
    else:
        assert (target <= draft).all()


def test_score_candidates_values_and_draw_order() -> None:
    generator = torch.Generator().manual_seed(0)
    target_logits = torch.randn((4, 6), generator=generator)
    candidates = torch.tensor([1, 4, 2])
    draft_probs = warp_probs(torch.randn((3, 6), generator=generator), SamplingConfig())
    config = SamplingConfig(temperature=0.8, top_k=4)
    result = score_candidates(
        target_logits, candidates, draft_probs, config, torch.Generator().manual_seed(9)
    )
    target_probs = warp_probs(target_logits, config)
    assert torch.equal(result.candidate_target_probs, target_probs[torch.arange(3), candidates])
    replay = torch.Generator().manual_seed(9)
    assert torch.equal(result.target_samples, sample(target_probs, replay))
    assert result.recovered_tokens is not None
    assert torch.equal(
        result.recovered_tokens, sample(residual_probs(target_probs[:3], draft_probs)[0], replay)
    )
    exact = score_candidates(target_logits, candidates, None, config, torch.Generator().manual_seed(9))
    assert exact.recovered_tokens is None and torch.equal(exact.target_samples, result.target_samples)


def test_score_candidates_without_candidates_gives_only_the_bonus_token() -> None:
    logits = torch.tensor([[0.0, 5.0, 0.0]])
    result = score_candidates(
        logits, torch.zeros(0, dtype=torch.int64), torch.zeros((0, 3)), SamplingConfig(0.0), torch.Generator()
    )
    assert result.target_samples.tolist() == [1]
    assert result.candidate_target_probs.shape == (0,)


def test_score_candidates_batch_of_one_equals_single_call() -> None:
    generator = torch.Generator().manual_seed(4)
    target_logits, candidates = torch.randn((3, 5), generator=generator), torch.tensor([0, 3])
    draft_probs = warp_probs(torch.randn((2, 5), generator=generator), SamplingConfig())
    single = score_candidates(
        target_logits, candidates, draft_probs, SamplingConfig(), torch.Generator().manual_seed(1)
    )
    batch = score_candidates_batch(
        target_logits[None],
        candidates[None],
        draft_probs[None],
        SamplingConfig(),
        torch.Generator().manual_seed(1),
    )
    assert torch.equal(single.target_samples, batch.target_samples[0])
    assert single.recovered_tokens is not None and batch.recovered_tokens is not None
    assert torch.equal(single.recovered_tokens, batch.recovered_tokens[0])


def test_score_candidates_asserts_shapes() -> None:
    with pytest.raises(AssertionError, match="candidate_tokens"):
        score_candidates(torch.zeros((3, 5)), torch.tensor([1]), None, SamplingConfig(), torch.Generator())
    with pytest.raises(AssertionError, match="draft_probs"):
        score_candidates(
            torch.zeros((3, 5)),
            torch.tensor([1, 2]),
            torch.zeros((2, 4)),
            SamplingConfig(),
            torch.Generator(),
        )


def test_draft_token_greedy_point_mass_without_draws() -> None:
    logits = torch.tensor([0.0, 2.0, 2.0, 1.0])
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    drafted = draft_token(logits, SamplingConfig(temperature=0.0), 3, generator)
    assert drafted.token == 1
    assert drafted.support_ids.tolist() == [1] and drafted.support_probs.tolist() == [1.0]
    assert drafted.confidence == pytest.approx(torch.softmax(logits, -1)[1].item())
    assert torch.equal(generator.get_state(), state)


def test_draft_token_excludes_padding_and_reports_confidence() -> None:
    logits = torch.tensor([-math.inf, 1.0, -math.inf, 0.0, -math.inf])
    config = SamplingConfig(temperature=0.7)
    drafted = draft_token(logits, config, 4, torch.Generator().manual_seed(0))
    assert drafted.support_ids.tolist() == [1, 3]
    assert drafted.token in (1, 3)
    warped = warp_probs(logits[None], config)[0]
    torch.testing.assert_close(drafted.support_probs, warped[[1, 3]])
    assert drafted.confidence == pytest.approx(warped[drafted.token].item())


def test_draft_token_confidence_is_untruncated() -> None:
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    drafted = draft_token(logits, SamplingConfig(), 1, torch.Generator())
    assert drafted.token == 0 and drafted.support_probs.tolist() == [1.0]
    assert drafted.confidence == pytest.approx(torch.softmax(logits, -1)[0].item())


@pytest.mark.parametrize(
    ("config", "max_support"),
    [(SamplingConfig(), 8), (SamplingConfig(0.6, top_p=0.9), 3), (SamplingConfig(1.4, top_k=5), 2)],
)
def test_draft_tokens_follow_the_sparse_proposal(config: SamplingConfig, max_support: int) -> None:
    logits = torch.randn(8, generator=torch.Generator().manual_seed(8))
    batch = draft_tokens_batch(
        logits.expand(100_000, -1), config, max_support, torch.Generator().manual_seed(3)
    )
    proposal = reference_proposal(logits.tolist(), config, max_support)
    assert_law(batch.tokens.tolist(), dict(enumerate(proposal.tolist())))
    single = draft_token(logits, config, max_support, torch.Generator().manual_seed(3))
    assert single.token == batch.tokens[0].item()


def test_draft_token_seeds() -> None:
    logits = torch.zeros(50)
    tokens = [
        draft_token(logits, SamplingConfig(), 50, torch.Generator().manual_seed(s)).token for s in range(20)
    ]
    again = [
        draft_token(logits, SamplingConfig(), 50, torch.Generator().manual_seed(s)).token for s in range(20)
    ]
    assert tokens == again
    assert len(set(tokens)) > 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_with_a_cpu_generator_match_cpu() -> None:
    generator = torch.Generator().manual_seed(0)
    target_logits = torch.randn((5, 1000), generator=generator)
    draft_probs = warp_probs(torch.randn((4, 1000), generator=generator), SamplingConfig(top_k=50))
    candidates = torch.multinomial(draft_probs, 1, generator=generator).squeeze(-1)
    config = SamplingConfig(0.8, top_k=100, top_p=0.9)
    results = [
        score_candidates(
            target_logits.to(device),
            candidates.to(device),
            draft_probs.to(device),
            config,
            torch.Generator().manual_seed(7),
        )
        for device in ("cpu", "cuda")
    ]
    torch.testing.assert_close(results[1].candidate_target_probs.cpu(), results[0].candidate_target_probs)
    assert torch.equal(results[1].target_samples.cpu(), results[0].target_samples)
    assert results[0].recovered_tokens is not None and results[1].recovered_tokens is not None
    assert torch.equal(results[1].recovered_tokens.cpu(), results[0].recovered_tokens)


def test_tiny_positive_temperature_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^sampling\.temperature: "):
        SamplingConfig(temperature=1e-40)
    SamplingConfig(temperature=0.0)
    SamplingConfig(temperature=1e-3)
