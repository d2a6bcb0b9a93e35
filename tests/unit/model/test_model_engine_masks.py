"""The engine's token masks without gRPC: unknown masks, and drafting that runs out of mask mass."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.checksum import prefix_checksum
from core.errors import UnknownTokenMaskError
from core.modelcalls import ContextRef, DraftCall
from core.sampling import SamplingConfig
from services.model.engine import ModelEngine
from services.model.settings import ModelServiceSettings
from tests.support.tiny_models import load_reference, reference_logits

CONTEXT = [3 + (13 * i) % 250 for i in range(24)]
GREEDY = SamplingConfig(0.0)


def ref(
    sequence_id: str, tokens: list[int], held: list[int] | None = None, prefix_len: int = 0
) -> ContextRef:
    checksum = prefix_checksum(held[:prefix_len]) if held is not None else 0
    return ContextRef(sequence_id, prefix_len, checksum, tuple(tokens))


def even_ids(vocab_size: int) -> tuple[torch.Tensor, bytes]:
    """A mask of the even token ids and its bitmap."""
    mask = torch.arange(vocab_size) % 2 == 0
    return mask, np.packbits(mask.numpy(), bitorder="little").tobytes()


def greedy_reference(model: Any, tokens: list[int], mask: torch.Tensor, count: int) -> list[int]:
    """Greedy draft tokens within ``mask``, each from one uncached forward."""
    tokens = list(tokens)
    drafted: list[int] = []
    for _ in range(count):
        logits = reference_logits(model, tokens, 1)[0].masked_fill(~mask, -math.inf)
        drafted.append(int(torch.argmax(logits)))
        tokens.append(drafted[-1])
    return drafted


def test_an_unknown_mask_fails_before_the_cache_is_touched(llama_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir))
    engine.draft(DraftCall(ref("kept", CONTEXT), 2, GREEDY, seed=0))
    held = engine.cache.held_tokens("kept")
    for sequence_id in ("kept", "new"):
        with pytest.raises(UnknownTokenMaskError):
            engine.draft(DraftCall(ref(sequence_id, CONTEXT), 2, GREEDY, seed=0, token_mask_id="nope"))
    assert engine.cache.held_tokens("kept") == held
    assert engine.cache.held_tokens("new") is None


def test_drafting_that_runs_out_of_mask_mass_keeps_an_exact_cache(llama_dir: Path) -> None:
    engine = ModelEngine.load(ModelServiceSettings(model_dir=llama_dir))
    reference = load_reference(llama_dir)
    mask, bitmap = even_ids(engine.info.vocab_size)
    assert engine.set_token_mask("even", bitmap).allowed_tokens == (engine.info.vocab_size + 1) // 2
    forwards = [0]

    def no_mass_in_the_second_forward(_module: Any, _inputs: Any, output: torch.Tensor) -> Any:
        forwards[0] += 1
        return torch.full_like(output, -math.inf) if forwards[0] == 2 else None

    handle = engine.model.get_output_embeddings().register_forward_hook(no_mass_in_the_second_forward)
    outcome = engine.draft(DraftCall(ref("s", CONTEXT), 4, GREEDY, seed=0, token_mask_id="even"))
    handle.remove()
    # The first draft token was fed to get the second position's logits, which had no mass.
    assert outcome.draft_tokens == tuple(greedy_reference(reference, CONTEXT, mask, 1))
    assert outcome.stats.forwards == 2
    held = [*CONTEXT, *outcome.draft_tokens]
    assert engine.cache.held_tokens("s") == held

    # Everything held is reused (the last draft token is in the KV cache) and the next drafts are exact.
    following = engine.draft(DraftCall(ref("s", [10], held, len(held)), 3, GREEDY, 0, token_mask_id="even"))
    assert following.stats.reused_tokens == len(held)
    assert following.stats.computed_tokens == 1 + 2
    assert list(following.draft_tokens) == greedy_reference(reference, [*held, 10], mask, 3)
    assert all(token % 2 == 0 for token in following.draft_tokens)
