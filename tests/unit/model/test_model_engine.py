"""The model engine without gRPC: sliding-window crops, emulated latency, failures, context limits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from core.checksum import prefix_checksum
from core.errors import ContextMissError, InvalidArgumentError
from core.modelcalls import ContextRef, DraftCall, ScoreCall
from core.sampling import SamplingConfig, score_candidates, top2_logit_margins
from services.model.engine import EngineClocks, ModelEngine
from services.model.settings import ModelServiceSettings
from tests.support.tiny_models import MAX_POSITIONS, load_reference, reference_logits

CONTEXT = [3 + (11 * i) % 250 for i in range(30)]


def ref(
    sequence_id: str, tokens: list[int], held: list[int] | None = None, prefix_len: int = 0
) -> ContextRef:
    checksum = prefix_checksum(held[:prefix_len]) if held is not None else 0
    return ContextRef(sequence_id, prefix_len, checksum, tuple(tokens))


def score(engine: ModelEngine, context: ContextRef, candidates: list[int], seed: int) -> Any:
    return engine.score(ScoreCall(context, tuple(candidates), None, SamplingConfig(), seed))


def expected_samples(model: Any, tokens: list[int], candidates: list[int], seed: int) -> list[int]:
    logits = reference_logits(model, tokens + candidates, len(candidates) + 1)
    generator = torch.Generator().manual_seed(seed)
    result = score_candidates(logits, torch.tensor(candidates), None, SamplingConfig(), generator)
    samples: list[int] = result.target_samples.tolist()
    return samples


def test_sliding_window_model_crops_within_the_window_and_recomputes_beyond_it(gemma_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=gemma_dir))
    reference = load_reference(gemma_dir)
    first = score(engine, ref("s", CONTEXT), [5, 6, 7, 8], seed=1)
    assert first.target_samples == tuple(expected_samples(reference, CONTEXT, [5, 6, 7, 8], 1))
    held = [*CONTEXT, 5, 6, 7, 8]

    # Reject at the second candidate: a crop of 3 positions, still held by the sliding layers.
    committed = [*CONTEXT, 5, 40]
    second = score(engine, ref("s", [40], held, len(CONTEXT) + 1), [9, 10], seed=2)
    assert second.stats.reused_tokens == len(CONTEXT) + 1
    assert second.target_samples == tuple(expected_samples(reference, committed, [9, 10], 2))
    held = [*committed, 9, 10]

    # Going back 20 positions is beyond the window: the sequence is recomputed, still exactly.
    third = score(engine, ref("s", [41], held, 12), [11], seed=3)
    assert third.stats.reused_tokens == 0
    assert third.stats.computed_tokens == 14
    assert third.target_samples == tuple(expected_samples(reference, [*held[:12], 41], [11], 3))


def test_emulated_latency_pads_every_forward(llama_dir: Path) -> None:
    now = [0.0]
    slept: list[float] = []

    def timer() -> float:
        now[0] += 0.001  # each reading advances the clock by 1 ms
        return now[0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    settings = ModelServiceSettings(model_dir=llama_dir, emulated_forward_seconds=0.05)
    engine = ModelEngine.load(settings, clocks=EngineClocks(timer=timer, sleep=sleep))
    outcome = engine.draft(DraftCall(ref("d", CONTEXT), 3, SamplingConfig(0.0), seed=0))
    assert outcome.stats.emulated_latency
    assert outcome.stats.forwards == 3
    assert slept == pytest.approx([0.049] * 3)
    assert outcome.stats.compute_seconds == pytest.approx(3 * 0.051)
    assert engine.info.emulated_forward_seconds == 0.05
    assert outcome.stats.emulated_overruns == 0 and engine.forwards_served == 3


def test_a_forward_slower_than_its_emulated_latency_is_an_overrun(llama_dir: Path) -> None:
    now = [0.0]

    def timer() -> float:
        now[0] += 0.001  # each forward takes 1 ms of "real compute": over the 0.5 ms emulated
        return now[0]

    slept: list[float] = []
    settings = ModelServiceSettings(model_dir=llama_dir, emulated_forward_seconds=0.0005)
    engine = ModelEngine.load(settings, clocks=EngineClocks(timer=timer, sleep=slept.append))
    outcome = engine.draft(DraftCall(ref("o", CONTEXT), 3, SamplingConfig(0.0), seed=0))
    assert slept == [] and outcome.stats.emulated_overruns == 3
    assert (engine.forwards_served, engine.emulated_overruns) == (3, 3)
    plain = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir), clocks=EngineClocks(timer=timer))
    assert (
        plain.draft(DraftCall(ref("p", CONTEXT), 3, SamplingConfig(0.0), seed=0)).stats.emulated_overruns == 0
    )
    assert plain.emulated_overruns == 0  # no emulation: nothing to overrun


def test_a_failed_forward_drops_the_sequence(llama_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir))
    score(engine, ref("f", CONTEXT), [], seed=0)

    def fail(*_: Any) -> None:
        raise RuntimeError("injected forward failure")

    handle = engine.model.get_input_embeddings().register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="injected"):
        score(engine, ref("f", [1], CONTEXT, len(CONTEXT)), [], seed=0)
    handle.remove()
    assert engine.cache.held_tokens("f") is None
    assert engine.cache.total_bytes == 0
    with pytest.raises(ContextMissError):
        score(engine, ref("f", [1], CONTEXT, len(CONTEXT)), [], seed=0)


def test_drafting_stops_at_the_context_limit(llama_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir))
    near_full = [5] * (MAX_POSITIONS - 2)
    outcome = engine.draft(DraftCall(ref("n", near_full), 5, SamplingConfig(0.0), seed=0))
    assert len(outcome.draft_tokens) == 2
    with pytest.raises(InvalidArgumentError) as info:
        engine.draft(DraftCall(ref("m", [5] * MAX_POSITIONS), 1, SamplingConfig(0.0), seed=0))
    assert info.value.field == "context"


def test_info_of_a_sliding_window_model(gemma_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=gemma_dir, model_name="g"))
    info = engine.info
    assert (info.model_name, info.model_type, info.vocab_size) == ("g", "gemma3_text", 259)
    assert info.eos_token_ids == (2,)
    assert info.fim is None


def test_greedy_score_reports_each_positions_top2_logit_margin(llama_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir))
    reference = load_reference(llama_dir)
    candidates = [5, 6, 7]
    greedy = engine.score(ScoreCall(ref("g", CONTEXT), tuple(candidates), None, SamplingConfig(0.0), 1))
    logits = reference_logits(reference, CONTEXT + candidates, len(candidates) + 1)
    top = torch.topk(logits.float(), 2, dim=-1).values
    assert greedy.top2_logit_margins == pytest.approx((top[:, 0] - top[:, 1]).tolist(), rel=1e-3, abs=1e-4)
    assert all(m >= 0 for m in greedy.top2_logit_margins)

    sampled = score(engine, ref("s", CONTEXT), candidates, seed=1)
    assert sampled.top2_logit_margins == ()


def test_top2_logit_margins_of_rows() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.0, -1.0]])
    assert top2_logit_margins(logits).tolist() == [2.0, 0.0]
    assert top2_logit_margins(torch.zeros(2, 1)).tolist() == [math.inf, math.inf]
