"""The drafter's stop rule in the engine: a stop token or a token under the confidence threshold is kept
as the last draft token, and drafting stops there (``core.drafting``; dropping that token would be lossy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.modelcalls import ContextRef, DraftCall, DraftOutcome
from core.sampling import SamplingConfig, warp_probs
from services.model.engine import ModelEngine
from services.model.settings import ModelServiceSettings
from tests.support.tiny_models import load_reference, reference_logits

CONTEXT = [3 + (7 * i) % 250 for i in range(12)]
COUNT = 8
CONFIGS = [SamplingConfig(0.0), SamplingConfig(1.0, top_k=40)]


@pytest.fixture(scope="module")
def engine(llama_dir: Path) -> ModelEngine:
    return ModelEngine.load(ModelServiceSettings(model_dir=llama_dir))


def draft(engine: ModelEngine, sequence_id: str, config: SamplingConfig, **rule: object) -> DraftOutcome:
    call = DraftCall(ContextRef.whole(sequence_id, CONTEXT), COUNT, config, seed=11, **rule)  # type: ignore[arg-type]
    return engine.draft(call)


def confidences(llama_dir: Path, tokens: tuple[int, ...], config: SamplingConfig) -> list[float]:
    """Each draft token's probability under the untruncated warped distribution (temperature 1 if greedy)."""
    logits = reference_logits(load_reference(llama_dir), [*CONTEXT, *tokens[:-1]], len(tokens))
    warped = warp_probs(logits, SamplingConfig(1.0) if config.is_greedy else config)
    return [float(warped[i, t]) for i, t in enumerate(tokens)]


@pytest.mark.parametrize("config", CONFIGS, ids=["greedy", "sampled"])
def test_a_stop_token_is_kept_and_ends_the_draft(engine: ModelEngine, config: SamplingConfig) -> None:
    free = draft(engine, f"free-{config.temperature}", config)
    assert len(free.draft_tokens) == COUNT
    stop = free.draft_tokens[3]
    end = free.draft_tokens.index(stop) + 1
    stopped = draft(engine, f"stop-{config.temperature}", config, stop_token_ids=frozenset({stop}))
    assert stopped.draft_tokens == free.draft_tokens[:end]
    assert stopped.draft_probs == free.draft_probs[:end]
    assert stopped.stats.forwards == end  # one forward per draft token but the last, plus the context's
    held = engine.cache.held_tokens(f"stop-{config.temperature}")
    assert held is not None and held == [*CONTEXT, *stopped.draft_tokens]


@pytest.mark.parametrize("config", CONFIGS, ids=["greedy", "sampled"])
def test_a_low_confidence_token_is_kept_and_ends_the_draft(
    engine: ModelEngine, llama_dir: Path, config: SamplingConfig
) -> None:
    free = draft(engine, f"free-c-{config.temperature}", config)
    confidence = confidences(llama_dir, free.draft_tokens, config)
    cut = next(j for j in range(1, COUNT) if confidence[j] < min(confidence[:j]))
    threshold = (confidence[cut] + min(confidence[:cut])) / 2
    stopped = draft(engine, f"low-{config.temperature}", config, confidence_threshold=threshold)
    assert stopped.draft_tokens == free.draft_tokens[: cut + 1]  # the low-confidence token is the last
    assert stopped.stats.forwards == cut + 1
    following = engine.draft(
        DraftCall(
            ContextRef.whole(f"low-{config.temperature}", [*CONTEXT, *stopped.draft_tokens]), 1, config, 0
        )
    )
    assert following.stats.reused_tokens == len(CONTEXT) + cut  # the cache holds the kept token's prefix


def test_a_threshold_above_every_confidence_drafts_one_token(engine: ModelEngine, llama_dir: Path) -> None:
    """The first draft token is drawn from the proposal and kept even though it is under the threshold."""
    config = SamplingConfig(1.0, top_k=40)
    free = draft(engine, "all-low", config)
    confidence = confidences(llama_dir, free.draft_tokens, config)
    one = draft(engine, "all-low-cut", config, confidence_threshold=min(1.0, max(confidence) + 1e-6))
    assert one.draft_tokens == free.draft_tokens[:1] and one.draft_probs == free.draft_probs[:1]
    assert one.stats.forwards == 1
