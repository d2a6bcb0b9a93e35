"""Requests for the round's pure functions without a coordinator: toy endpoints, pairs and frames."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from coordinator.loop.plan import RequestPlan
from coordinator.loop.snapshot import DrafterView, RequestFrame, RoundSnapshot
from coordinator.pair import ModelEndpoint, ModelPair, align_pair
from coordinator.request import (
    AlgorithmName,
    GenerationParams,
    LookaheadKind,
    LookaheadRequest,
    TextInput,
)
from core.sampling import SamplingConfig

ROOMY = 1 << 16  # a context window no toy request fills


def toy_endpoint(
    role: str,
    vocab_size: int,
    *,
    eos: Collection[int] = (),
    tokenizer: Any = None,
    max_context_tokens: int = ROOMY,
    max_draft_tokens: int = 64,
) -> ModelEndpoint:
    """A model service as the coordinator would describe it (``tokenizer``: only for alignment)."""
    return ModelEndpoint(
        role=role,
        address=f"toy-{role}",
        model_name=f"toy-{role}",
        model_type="toy",
        tokenizer=tokenizer,
        fingerprint=f"{role}-{id(tokenizer)}",
        eos_token_ids=frozenset(eos),
        vocab_size=vocab_size,
        max_context_tokens=max_context_tokens,
        max_draft_tokens=max_draft_tokens,
        fim=None,
        emulated_forward_seconds=0.0,
    )


def aligned_pair(
    target_tokenizer: Any,
    drafter_tokenizer: Any,
    *,
    target_eos: Collection[int] = (),
    drafter_eos: Collection[int] = (),
) -> ModelPair:
    """Two toy tokenizers aligned as the coordinator aligns its pair at start-up (``align_pair``)."""
    target = toy_endpoint(
        "target", target_tokenizer.get_vocab_size(), eos=target_eos, tokenizer=target_tokenizer
    )
    drafter = toy_endpoint(
        "drafter", drafter_tokenizer.get_vocab_size(), eos=drafter_eos, tokenizer=drafter_tokenizer
    )
    pair = align_pair(target, drafter)
    assert pair.cross_vocabulary, pair.alignment_error
    return pair


def toy_frame(
    algorithm: AlgorithmName,
    sampling: SamplingConfig,
    *,
    target: ModelEndpoint,
    drafter: ModelEndpoint | None,
    max_new_tokens: int,
    pair: ModelPair | None = None,
    seed: int = 0,
    ignore_eos: bool = False,
    target_prompt: tuple[int, ...] = (),
    drafter_prompt: tuple[int, ...] | None = (),
    max_support: int = 16,
    slrs_enumeration_budget: int = 1 << 16,
) -> RequestFrame:
    """A request the round can run: its parameters, a plan without lookahead, both models."""
    params = GenerationParams(
        input=TextInput("toy"),
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        seed=seed,
        algorithm=algorithm,
        lookahead=LookaheadRequest(LookaheadKind.STATIC, None, None),
        ignore_eos=ignore_eos,
        request_id="toy",
    )
    plan = RequestPlan(algorithm, None, seed, target_prompt, drafter_prompt, "")
    return RequestFrame(
        params=params,
        plan=plan,
        target=target,
        drafter=drafter,
        alignment=None if pair is None else pair.alignment,
        target_sequence_id="toy/target",
        drafter_sequence_id="toy/drafter",
        max_support=max_support,
        slrs_enumeration_budget=slrs_enumeration_budget,
    )


def with_seed(frame: RequestFrame, seed: int) -> RequestFrame:
    """The same request with another seed (built directly: populations make one per trial)."""
    old = frame.plan
    prompts = (old.target_prompt, old.drafter_prompt)
    plan = RequestPlan(
        old.algorithm, old.lookahead, seed, *prompts, old.fallback_reason, old.note, old.stop_classifier
    )
    return RequestFrame(
        frame.params,
        plan,
        frame.target,
        frame.drafter,
        frame.alignment,
        frame.target_sequence_id,
        frame.drafter_sequence_id,
        frame.max_support,
        frame.slrs_enumeration_budget,
    )


def first_snapshot(frame: RequestFrame) -> RoundSnapshot:
    """The request before its first round."""
    view = DrafterView() if frame.plan.cross_vocabulary else None
    return RoundSnapshot(frame, 0, (), view, frame.plan.drafter_prompt is not None)
