"""SetTokenMask and Draft with token_mask_id through the real gRPC stack, on a tiny random model."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from polyspec.v1 import common_pb2, model_pb2, model_pb2_grpc

from core.errors import ErrorReason
from core.restrict import restrict_logits
from core.sampling import DraftedToken, SamplingConfig, draft_token
from core.serving.server import GrpcServerSettings
from core.serving.status import error_reason
from services.model.server import ModelServer, start_model_server
from services.model.settings import ModelServiceSettings
from tests.integration.test_model_service_grpc import ctx, rpc_error, sampling
from tests.support.tiny_models import build_word_model, load_reference, reference_logits

CONTEXT = [3 + (17 * i) % 250 for i in range(16)]
VOCAB = 259  # logit columns of the tiny llama: 253 tokenizer entries + 6 padding rows


class Served:
    """A model server and a stub on a loopback channel."""

    def __init__(self, server: ModelServer, channel: grpc.aio.Channel) -> None:
        self.server = server
        self.channel = channel
        self.stub = model_pb2_grpc.ModelServiceStub(channel)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.server.metrics.registry.get_sample_value(name, labels)


StartServer = Callable[..., Any]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_word_model(tmp_path_factory.mktemp("token-masks") / "tiny-llama", "llama", seed=21)


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Any:
    return load_reference(model_dir)


@pytest.fixture
async def start(model_dir: Path) -> AsyncIterator[StartServer]:
    """Starts model servers on 127.0.0.1:0; stops them all at teardown."""
    started: list[Served] = []

    async def _start(**fields: Any) -> Served:
        settings = ModelServiceSettings(
            model_dir=model_dir,
            grpc=GrpcServerSettings(host="127.0.0.1", port=0, shutdown_grace_seconds=0.5),
            **fields,
        )
        server = await start_model_server(settings)
        served = Served(server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))
        started.append(served)
        return served

    yield _start
    for served in started:
        await served.channel.close(grace=None)
        await served.server.stop(grace=0)


def bitmap_of(mask: torch.Tensor) -> bytes:  # mask: [vocab] bool
    return np.packbits(mask.numpy(), bitorder="little").tobytes()


def random_mask(seed: int, share: float = 0.4) -> torch.Tensor:  # [VOCAB] bool
    return torch.rand(VOCAB, generator=torch.Generator().manual_seed(seed)) < share


def draft_request(
    sequence_id: str,
    tokens: list[int],
    mask_id: str,
    params: common_pb2.SamplingParams | None = None,
    **fields: Any,
) -> model_pb2.DraftRequest:
    return model_pb2.DraftRequest(
        context=ctx(sequence_id, tokens),
        sampling=params or sampling(),
        token_mask_id=mask_id,
        **{"max_draft_tokens": 6, **fields},
    )


def reference_drafts(
    model: Any, tokens: list[int], mask: torch.Tensor, config: SamplingConfig, *, max_support: int, seed: int
) -> list[DraftedToken]:
    """The draws of one Draft call, each from one uncached forward with the logits masked first."""
    generator = torch.Generator().manual_seed(seed)
    tokens = list(tokens)
    drafted: list[DraftedToken] = []
    for _ in range(6):
        restricted = restrict_logits(reference_logits(model, tokens, 1)[0], mask)
        drafted.append(draft_token(restricted, config, max_support, generator))
        tokens.append(drafted[-1].token)
    return drafted


def assert_within(response: model_pb2.DraftResponse, mask: torch.Tensor) -> None:
    """Every draft token and every token of every shipped distribution is allowed; each sums to 1."""
    assert all(mask[token] for token in response.draft_tokens)
    for shipped in response.draft_probs:
        assert len(shipped.token_ids) > 0
        assert all(mask[token] for token in shipped.token_ids)
        assert all(prob > 0 for prob in shipped.probs)
        assert math.fsum(shipped.probs) == pytest.approx(1.0, abs=1e-5)


# ---- SetTokenMask ----------------------------------------------------------------------------------


async def test_set_token_mask_reports_the_allowed_count_and_the_masks_gauge(start: StartServer) -> None:
    served = await start()
    assert (await served.stub.Info(model_pb2.InfoRequest())).vocab_size == VOCAB
    mask = random_mask(1)
    response = await served.stub.SetTokenMask(
        model_pb2.SetTokenMaskRequest(mask_id="pair-a", allowed_bitmap=bitmap_of(mask))
    )
    assert response.allowed_tokens == int(mask.sum()) > 0
    again = await served.stub.SetTokenMask(
        model_pb2.SetTokenMaskRequest(mask_id="pair-a", allowed_bitmap=bitmap_of(mask))
    )
    assert again.allowed_tokens == response.allowed_tokens
    assert served.metric("polyspec_model_token_masks") == 1.0
    # Little-endian bits: byte 0 = 0b1000_0001 allows ids 0 and 7; byte 2 bit 1 allows id 17.
    short = await served.stub.SetTokenMask(
        model_pb2.SetTokenMaskRequest(mask_id="pair-b", allowed_bitmap=bytes([0x81, 0, 0x02]))
    )
    assert short.allowed_tokens == 3
    assert torch.nonzero(served.server.engine.token_masks.get("pair-b")).flatten().tolist() == [0, 7, 17]
    assert served.metric("polyspec_model_token_masks") == 2.0
    assert served.metric("polyspec_model_request_seconds_count", {"method": "SetTokenMask"}) == 3.0


async def test_bad_set_token_mask_requests_are_invalid_arguments_naming_the_field(start: StartServer) -> None:
    served = await start()
    last_byte_bits = 0b0000_1000  # id 259 = vocab_size: one past the last logit column
    cases = [
        (model_pb2.SetTokenMaskRequest(mask_id="", allowed_bitmap=b"\x01"), "mask_id"),
        (model_pb2.SetTokenMaskRequest(mask_id="x" * 513, allowed_bitmap=b"\x01"), "mask_id"),
        (model_pb2.SetTokenMaskRequest(mask_id="long", allowed_bitmap=bytes(34)), "allowed_bitmap"),
        (
            model_pb2.SetTokenMaskRequest(mask_id="high", allowed_bitmap=bytes(32) + bytes([last_byte_bits])),
            "allowed_bitmap",
        ),
    ]
    for request, field in cases:
        error = await rpc_error(served.stub.SetTokenMask(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert (error.details() or "").startswith(f"{field}:"), (field, error.details())
    longest = await served.stub.SetTokenMask(
        model_pb2.SetTokenMaskRequest(mask_id="full", allowed_bitmap=b"\xff" * 32 + b"\x07")
    )
    assert longest.allowed_tokens == VOCAB
    draft = draft_request("v", CONTEXT, "y" * 513)
    error = await rpc_error(served.stub.Draft(draft))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("token_mask_id:")
    assert served.metric("polyspec_model_token_masks") == 1.0


# ---- Draft with a mask -----------------------------------------------------------------------------

CONFIGS = [
    pytest.param(SamplingConfig(0.8, 40, 1.0), 8, id="temperature-top_k-truncated"),
    pytest.param(SamplingConfig(1.0, 0, 0.9), 64, id="top_p"),
    pytest.param(SamplingConfig(1.3, 20, 0.95), 4, id="all-warpers-truncated"),
    pytest.param(SamplingConfig(0.0), 8, id="greedy"),
]


@pytest.mark.parametrize(("config", "max_support"), CONFIGS)
async def test_drafts_lie_in_the_mask_and_equal_the_masked_reference(
    start: StartServer, reference: Any, config: SamplingConfig, max_support: int
) -> None:
    served = await start()
    mask = random_mask(2)
    await served.stub.SetTokenMask(model_pb2.SetTokenMaskRequest(mask_id="m", allowed_bitmap=bitmap_of(mask)))
    params = sampling(config.temperature, config.top_k, config.top_p)
    response = await served.stub.Draft(
        draft_request("s", CONTEXT, "m", params, seed=9, max_support=max_support)
    )
    assert len(response.draft_tokens) == 6
    assert_within(response, mask)
    expected = reference_drafts(reference, CONTEXT, mask, config, max_support=max_support, seed=9)
    for drafted, shipped, reference_draft in zip(
        response.draft_tokens, response.draft_probs, expected, strict=True
    ):
        assert drafted == reference_draft.token
        assert list(shipped.token_ids) == reference_draft.support_ids.tolist()
        assert list(shipped.probs) == pytest.approx(reference_draft.support_probs.tolist(), rel=1e-4)
        assert len(shipped.token_ids) <= max_support
    if config.is_greedy:
        assert all(list(shipped.probs) == [1.0] for shipped in response.draft_probs)


async def test_the_mask_applies_before_top_k(start: StartServer, reference: Any) -> None:
    # Masking the unrestricted top-5 tokens away: were top-k applied first, nothing would be left.
    served = await start()
    first_logits = reference_logits(reference, CONTEXT, 1)[0]
    mask = torch.ones(VOCAB, dtype=torch.bool)
    mask[torch.topk(first_logits, 5).indices] = False
    await served.stub.SetTokenMask(model_pb2.SetTokenMaskRequest(mask_id="m", allowed_bitmap=bitmap_of(mask)))
    response = await served.stub.Draft(draft_request("s", CONTEXT, "m", sampling(1.0, 5), seed=3))
    assert len(response.draft_tokens) == 6
    assert_within(response, mask)
    assert len(response.draft_probs[0].token_ids) == 5


async def test_the_confidence_threshold_is_measured_on_the_masked_distribution(
    start: StartServer, reference: Any
) -> None:
    served = await start()
    mask = random_mask(4)
    await served.stub.SetTokenMask(model_pb2.SetTokenMaskRequest(mask_id="m", allowed_bitmap=bitmap_of(mask)))
    drafted = reference_drafts(reference, CONTEXT, mask, SamplingConfig(0.0), max_support=8, seed=0)
    masked = [d.confidence for d in drafted]
    unmasked_first = float(torch.softmax(reference_logits(reference, CONTEXT, 1)[0], -1)[drafted[0].token])
    threshold = masked[0] * 0.999
    assert unmasked_first < threshold  # measured without the mask, drafting would stop after one token
    expected = next((i + 1 for i, c in enumerate(masked) if c < threshold), len(masked))
    response = await served.stub.Draft(
        draft_request("s", CONTEXT, "m", sampling(0.0), confidence_threshold=threshold)
    )
    assert list(response.draft_tokens) == [d.token for d in drafted[:expected]]
    assert len(response.draft_tokens) >= 2


async def test_an_all_zero_mask_drafts_nothing_and_keeps_the_context_cached(start: StartServer) -> None:
    served = await start()
    registered = await served.stub.SetTokenMask(
        model_pb2.SetTokenMaskRequest(mask_id="none", allowed_bitmap=bytes(33))
    )
    assert registered.allowed_tokens == 0
    for params in (sampling(), sampling(0.0)):
        response = await served.stub.Draft(draft_request("z", CONTEXT, "none", params))
        assert list(response.draft_tokens) == []
        assert list(response.draft_probs) == []
    held = list(CONTEXT)
    following = await served.stub.Draft(
        model_pb2.DraftRequest(
            context=ctx("z", [5], held, prefix_len=len(held)), max_draft_tokens=2, sampling=sampling(0.0)
        )
    )
    assert following.stats.reused_tokens == len(held)
    assert len(following.draft_tokens) == 2


async def test_an_unknown_mask_is_failed_precondition_until_registered(start: StartServer) -> None:
    served = await start()
    request = draft_request("u", CONTEXT, "later", sampling(0.0))
    error = await rpc_error(served.stub.Draft(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "register it with SetTokenMask" in (error.details() or "")
    assert error_reason(error) is ErrorReason.UNKNOWN_TOKEN_MASK  # what the coordinator reads
    assert served.metric("polyspec_model_token_mask_misses_total") == 1.0
    assert served.metric("polyspec_model_context_misses_total") == 0.0
    mask = random_mask(5)
    await served.stub.SetTokenMask(
        model_pb2.SetTokenMaskRequest(mask_id="later", allowed_bitmap=bitmap_of(mask))
    )
    assert_within(await served.stub.Draft(request), mask)


async def test_registering_an_id_again_with_other_contents_replaces_the_mask(start: StartServer) -> None:
    served = await start()
    first = random_mask(6)
    second = ~first
    for mask in (first, second):
        registered = await served.stub.SetTokenMask(
            model_pb2.SetTokenMaskRequest(mask_id="pair", allowed_bitmap=bitmap_of(mask))
        )
        assert registered.allowed_tokens == int(mask.sum())
        response = await served.stub.Draft(draft_request("r", CONTEXT, "pair", seed=1))
        assert len(response.draft_tokens) == 6
        assert_within(response, mask)
    assert served.metric("polyspec_model_token_masks") == 1.0


async def test_a_mask_serves_many_sequences_and_outlives_their_release(start: StartServer) -> None:
    served = await start()
    mask = random_mask(7, share=0.2)
    await served.stub.SetTokenMask(model_pb2.SetTokenMaskRequest(mask_id="m", allowed_bitmap=bitmap_of(mask)))
    for index in range(3):
        tokens = [3 + (index * 31 + 5 * i) % 250 for i in range(10 + index)]
        assert_within(await served.stub.Draft(draft_request(f"seq-{index}", tokens, "m", seed=index)), mask)
    await served.stub.Release(model_pb2.ReleaseRequest(sequence_ids=["seq-0", "seq-1", "seq-2"]))
    assert served.server.engine.cache.session_count == 0
    assert_within(await served.stub.Draft(draft_request("seq-0", CONTEXT, "m", sampling(0.0))), mask)
    # Drafting without a mask on the same server is unrestricted.
    free = await served.stub.Draft(
        draft_request("free", CONTEXT, "", sampling(1.0), seed=2, max_draft_tokens=16)
    )
    assert any(not mask[token] for token in free.draft_tokens)


async def test_the_least_recently_used_mask_goes_beyond_the_capacity(start: StartServer) -> None:
    served = await start(max_token_masks=2)
    for mask_id in ("a", "b"):
        await served.stub.SetTokenMask(model_pb2.SetTokenMaskRequest(mask_id=mask_id, allowed_bitmap=b"\xf0"))
    await served.stub.Draft(draft_request("s", CONTEXT, "a", sampling(0.0)))  # "a" is now the more recent
    await served.stub.SetTokenMask(model_pb2.SetTokenMaskRequest(mask_id="c", allowed_bitmap=b"\xf0"))
    assert served.metric("polyspec_model_token_masks") == 2.0
    evicted = await rpc_error(served.stub.Draft(draft_request("s", CONTEXT, "b", sampling(0.0))))
    assert evicted.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(evicted) is ErrorReason.UNKNOWN_TOKEN_MASK
    for mask_id in ("a", "c"):
        response = await served.stub.Draft(draft_request("s", CONTEXT, mask_id, sampling(0.0)))
        assert all(4 <= token < 8 for token in response.draft_tokens)


async def test_set_token_mask_does_not_wait_in_the_model_queue(start: StartServer) -> None:
    served = await start(max_queue=1)
    release = threading.Event()
    blocker = asyncio.ensure_future(served.server.worker.run(release.wait))
    while served.server.worker.depth < 1:
        await asyncio.sleep(0)
    try:
        full = await rpc_error(served.stub.Draft(draft_request("q", CONTEXT, "", sampling(0.0))))
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        registered = await served.stub.SetTokenMask(
            model_pb2.SetTokenMaskRequest(mask_id="m", allowed_bitmap=b"\x0f")
        )
        assert registered.allowed_tokens == 4
    finally:
        release.set()
        await blocker
    response = await served.stub.Draft(draft_request("q", CONTEXT, "m", sampling(0.0)))
    assert all(token < 4 for token in response.draft_tokens)
