"""Conversion between polyspec.v1 messages and the model service's domain types."""

from __future__ import annotations

import pytest
from polyspec.v1 import common_pb2, model_pb2

from core.errors import InvalidArgumentError
from core.modelcalls import EngineInfo, FimTokens, ForwardStats, ScoreOutcome
from core.sampling import SamplingConfig
from services.model import wire


def test_unset_temperature_and_top_p_mean_one() -> None:
    assert wire.sampling_config(common_pb2.SamplingParams()) == SamplingConfig(1.0, 0, 1.0)
    greedy = common_pb2.SamplingParams(temperature=0.0, top_k=5, top_p=0.5)
    assert wire.sampling_config(greedy) == SamplingConfig(0.0, 5, 0.5)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (common_pb2.SamplingParams(temperature=-1.0), "sampling.temperature"),
        (common_pb2.SamplingParams(temperature=1e-4), "sampling.temperature"),
        (common_pb2.SamplingParams(temperature=float("nan")), "sampling.temperature"),
        (common_pb2.SamplingParams(temperature=float("inf")), "sampling.temperature"),
        (common_pb2.SamplingParams(top_k=-3), "sampling.top_k"),
        (common_pb2.SamplingParams(top_p=0.0), "sampling.top_p"),
        (common_pb2.SamplingParams(top_p=1.5), "sampling.top_p"),
        (common_pb2.SamplingParams(top_p=float("nan")), "sampling.top_p"),
    ],
)
def test_bad_sampling_values_are_invalid_arguments_naming_the_field(
    params: common_pb2.SamplingParams, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        wire.sampling_config(params)
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: must ")


def test_a_draft_request_carries_its_token_mask_id() -> None:
    request = model_pb2.DraftRequest(
        context=model_pb2.TokenContext(sequence_id="s", tokens=[1]), max_draft_tokens=2
    )
    assert wire.draft_call(request).token_mask_id == ""
    request.token_mask_id = "pair-1"
    assert wire.draft_call(request).token_mask_id == "pair-1"


def test_empty_draft_probs_select_exact_match_mode() -> None:
    request = model_pb2.ScoreRequest(
        context=model_pb2.TokenContext(
            sequence_id="s", cached_prefix_len=3, cached_prefix_checksum=7, tokens=[1]
        ),
        candidate_tokens=[4, 5],
        seed=2**64 - 1,
    )
    call = wire.score_call(request)
    assert call.draft_probs is None
    assert call.candidate_tokens == (4, 5)
    assert (call.context.cached_prefix_len, call.context.cached_prefix_checksum) == (3, 7)
    assert call.seed == 2**64 - 1
    request.draft_probs.add(token_ids=[4, 6], probs=[0.75, 0.25])
    request.draft_probs.add(token_ids=[5], probs=[1.0])
    probs = wire.score_call(request).draft_probs
    assert probs is not None
    assert [(d.token_ids, d.probs) for d in probs] == [((4, 6), (0.75, 0.25)), ((5,), (1.0,))]


def test_outcomes_and_info_to_messages() -> None:
    stats = ForwardStats(computed_tokens=3, reused_tokens=20, forwards=1, compute_seconds=0.5)
    response = wire.score_response(ScoreOutcome((), (7, 8), (), stats))
    assert list(response.target_samples) == [7, 8]
    assert list(response.candidate_target_probs) == []
    assert (response.stats.computed_tokens, response.stats.reused_tokens) == (3, 20)
    info = EngineInfo(
        model_name="m",
        model_type="llama",
        vocab_size=10,
        max_context_tokens=64,
        eos_token_ids=(2,),
        tokenizer_fingerprint="ab" * 32,
        tokenizer_files={"tokenizer.json": b"{}"},
        fim=None,
        dtype="float32",
        device="cpu",
        emulated_forward_seconds=0.0,
        max_draft_tokens=16,
    )
    message = wire.info_response(info)
    assert not message.tokenizer.HasField("fim")
    assert dict(message.tokenizer.files) == {"tokenizer.json": b"{}"}
    with_fim = wire.info_response(EngineInfo(**{**info.__dict__, "fim": FimTokens("<p>", "<s>", "<m>")}))
    assert with_fim.tokenizer.fim.suffix == "<s>"
