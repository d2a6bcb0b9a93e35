"""Token masks without gRPC: bitmap layout and the bounded store (drafting within a mask: core.drafting)."""

from __future__ import annotations

import pytest
import torch

from core.errors import UnknownTokenMaskError
from services.model.masks import MaskRegistration, TokenMaskStore, bitmap_bytes, mask_from_bitmap

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
