"""Token masks without gRPC: bitmap layout, the bounded store, drafting within a mask."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import UnknownTokenMaskError
from core.sampling import SamplingConfig, draft_token
from services.model.masks import (
    MaskRegistration,
    TokenMaskStore,
    bitmap_bytes,
    draft_token_within,
    mask_from_bitmap,
)

CPU = torch.device("cpu")


def allowed_ids(mask: torch.Tensor) -> list[int]:
    ids: list[int] = torch.nonzero(mask).flatten().tolist()
    return ids


def test_bitmaps_are_little_endian_within_each_byte_and_short_ones_disallow_the_rest() -> None:
    assert bitmap_bytes(262) == 33
    assert bitmap_bytes(256) == 32
    assert allowed_ids(mask_from_bitmap(bytes([0b0000_0101, 0b1000_0000]), 20, CPU)) == [0, 2, 15]
    mask = mask_from_bitmap(b"\xff", 262, CPU)
    assert (mask.shape, mask.dtype) == ((262,), torch.bool)
    assert allowed_ids(mask) == list(range(8))
    assert allowed_ids(mask_from_bitmap(b"", 262, CPU)) == []
    # The last byte of a vocabulary that is not a multiple of 8: bits past it are ignored here.
    assert allowed_ids(mask_from_bitmap(b"\x00\xff", 10, CPU)) == [8, 9]
    with pytest.raises(ValueError, match="longer"):
        mask_from_bitmap(bytes(34), 262, CPU)


def test_registration_adds_keeps_identical_contents_and_replaces_other_contents() -> None:
    store = TokenMaskStore(capacity=4, vocab_size=40, device=CPU)
    first = store.register("m", bytes([0b11, 0, 0b1]))
    assert (first.allowed_tokens, first.registration) == (3, MaskRegistration.ADDED)
    held = store.get("m")
    # Same contents, spelled with trailing zero bytes: a no-op that keeps the stored tensor.
    same = store.register("m", bytes([0b11, 0, 0b1, 0, 0]))
    assert (same.allowed_tokens, same.registration) == (3, MaskRegistration.UNCHANGED)
    assert store.get("m") is held
    other = store.register("m", bytes([0b1]))
    assert (other.allowed_tokens, other.registration) == (1, MaskRegistration.REPLACED)
    assert allowed_ids(store.get("m")) == [0]
    assert allowed_ids(held) == [0, 1, 16]  # a mask already handed out is never changed in place
    assert len(store) == 1


def test_the_store_drops_the_least_recently_used_mask_beyond_its_capacity() -> None:
    store = TokenMaskStore(capacity=2, vocab_size=16, device=CPU)
    store.register("a", b"\x01")
    store.register("b", b"\x02")
    store.get("a")  # a use: "b" is now the least recently used
    registered = store.register("c", b"\x04")
    assert registered.evicted_ids == ("b",)
    assert len(store) == 2
    assert allowed_ids(store.get("a")) == [0]
    with pytest.raises(UnknownTokenMaskError, match="register it with SetTokenMask") as info:
        store.get("b")
    assert info.value.kind.value == "FAILED_PRECONDITION"
    assert "'b'" in info.value.message


def test_an_all_zero_mask_is_stored_and_drafts_nothing_without_drawing() -> None:
    store = TokenMaskStore(capacity=1, vocab_size=16, device=CPU)
    assert store.register("empty", bytes(2)).allowed_tokens == 0
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    logits = torch.randn(16, generator=torch.Generator().manual_seed(0))
    for config in (SamplingConfig(), SamplingConfig(0.0)):
        assert draft_token_within(logits, store.get("empty"), config, 4, generator) is None
    assert torch.equal(generator.get_state(), state)


def test_drafting_within_a_mask_samples_the_renormalised_distribution() -> None:
    logits = torch.randn(32, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(32, dtype=torch.bool)
    mask[[3, 7, 8, 20, 31]] = True
    config = SamplingConfig(temperature=0.8, top_k=3)
    drafted = draft_token_within(logits, mask, config, 8, torch.Generator().manual_seed(4))
    assert drafted is not None
    masked = logits.masked_fill(~mask, -math.inf)
    expected = draft_token(masked, config, 8, torch.Generator().manual_seed(4))
    assert drafted.token == expected.token
    assert torch.equal(drafted.support_ids, expected.support_ids)
    assert torch.equal(drafted.support_probs, expected.support_probs)
    # top-k applies after the mask: three allowed tokens, the three best of the allowed logits.
    best_allowed = sorted([3, 7, 8, 20, 31], key=lambda i: -float(logits[i]))[:3]
    assert sorted(drafted.support_ids.tolist()) == sorted(best_allowed)
    assert float(drafted.support_probs.sum()) == pytest.approx(1.0, abs=1e-6)


def test_greedy_within_a_mask_is_the_masked_argmax_with_renormalised_confidence() -> None:
    logits = torch.tensor([5.0, 1.0, 2.0, 0.0])
    mask = torch.tensor([False, True, True, False])
    drafted = draft_token_within(logits, mask, SamplingConfig(0.0), 4, torch.Generator())
    assert drafted is not None
    assert drafted.token == 2
    assert drafted.support_ids.tolist() == [2]
    assert drafted.support_probs.tolist() == [1.0]
    assert drafted.confidence == pytest.approx(math.exp(2) / (math.exp(1) + math.exp(2)))
    unmasked = draft_token_within(logits, None, SamplingConfig(0.0), 4, torch.Generator())
    assert unmasked is not None and unmasked.token == 0
