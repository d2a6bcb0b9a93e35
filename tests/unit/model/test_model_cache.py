"""The KV cache manager on real transformers caches filled by hand (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import Cache, DynamicCache, Gemma3TextConfig

from core.errors import ResourceExhaustedError
from services.model.cache import EvictionReason, KvCacheManager, can_crop, common_prefix_len, kv_nbytes

LAYERS = 2
HEAD_DIM = 4
BYTES_PER_TOKEN = LAYERS * 2 * HEAD_DIM * 4  # keys + values, one head, float32


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(kv: Cache, count: int) -> None:
    """Appends ``count`` positions to every layer, as a forward over ``count`` tokens would."""
    for layer in range(LAYERS):
        states = torch.ones((1, 1, count, HEAD_DIM))
        kv.update(states, states, layer)


def make_manager(
    budget_tokens: int = 1000, clock: FakeClock | None = None
) -> tuple[KvCacheManager, list[tuple[str, EvictionReason]]]:
    evicted: list[tuple[str, EvictionReason]] = []
    manager = KvCacheManager(
        budget_bytes=budget_tokens * BYTES_PER_TOKEN,
        ttl_seconds=60,
        bytes_per_token=BYTES_PER_TOKEN,
        new_cache=DynamicCache,
        clock=clock or FakeClock(),
        on_evict=lambda sequence_id, reason: evicted.append((sequence_id, reason)),
    )
    return manager, evicted


def run_call(
    manager: KvCacheManager, sequence_id: str, tokens: list[int], max_reuse: int | None = None
) -> int:
    """Prepares, feeds what is missing and commits; returns how many tokens were fed."""
    reuse_limit = len(tokens) - 1 if max_reuse is None else max_reuse
    prepared = manager.prepare(sequence_id, tokens, max_reuse=reuse_limit, final_tokens=len(tokens))
    feed(prepared.session.kv, len(prepared.feed_tokens))
    manager.commit(prepared.session, tokens, kv_len=len(tokens))
    assert prepared.reused_tokens + len(prepared.feed_tokens) == len(tokens)
    assert prepared.session.kv.get_seq_length() == len(tokens)
    return len(prepared.feed_tokens)


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0


def test_reuses_the_longest_common_prefix_and_crops_the_rest() -> None:
    manager, _ = make_manager()
    assert run_call(manager, "s", list(range(10))) == 10
    assert run_call(manager, "s", [*range(10), 10, 11]) == 2
    # Rejection at position 6: crop back to 6 tokens, feed the rest.
    assert run_call(manager, "s", [*range(6), 50, 51]) == 2
    assert manager.held_tokens("s") == [*range(6), 50, 51]
    assert manager.total_bytes == 8 * BYTES_PER_TOKEN


def test_a_fully_cached_context_feeds_at_least_its_last_token() -> None:
    manager, _ = make_manager()
    run_call(manager, "s", list(range(10)))
    assert run_call(manager, "s", list(range(10))) == 1
    assert run_call(manager, "s", list(range(5))) == 1
    assert run_call(manager, "s", list(range(10)), max_reuse=3) == 7


def test_prepare_rejects_a_reuse_limit_that_leaves_nothing_to_feed() -> None:
    manager, _ = make_manager()
    with pytest.raises(ValueError, match="max_reuse"):
        manager.prepare("s", [1, 2], max_reuse=2, final_tokens=2)


def test_least_recently_used_sessions_are_evicted_for_room() -> None:
    manager, evicted = make_manager(budget_tokens=25)
    run_call(manager, "a", list(range(10)))
    run_call(manager, "b", list(range(10)))
    run_call(manager, "a", list(range(11)))  # touches a: b is now least recently used
    run_call(manager, "c", list(range(10)))
    assert evicted == [("b", EvictionReason.LRU)]
    assert manager.held_tokens("b") is None
    assert manager.session_count == 2
    assert manager.total_bytes == 21 * BYTES_PER_TOKEN <= manager.budget_bytes


def test_a_sequence_that_cannot_fit_is_resource_exhausted_and_dropped() -> None:
    manager, evicted = make_manager(budget_tokens=12)
    run_call(manager, "other", list(range(4)))
    run_call(manager, "s", list(range(8)))
    with pytest.raises(ResourceExhaustedError, match="budget"):
        manager.prepare("s", list(range(13)), max_reuse=12, final_tokens=13)
    assert manager.held_tokens("s") is None
    assert ("s", EvictionReason.OVER_BUDGET) in evicted
    assert manager.held_tokens("other") == list(range(4))
    assert manager.total_bytes == 4 * BYTES_PER_TOKEN


def test_idle_sessions_expire_after_the_ttl() -> None:
    clock = FakeClock()
    manager, evicted = make_manager(clock=clock)
    run_call(manager, "old", [1, 2, 3])
    clock.now = 30
    run_call(manager, "young", [1, 2, 3])
    clock.now = 61
    assert manager.expire_idle() == 1
    assert evicted == [("old", EvictionReason.TTL)]
    assert manager.held_tokens("young") == [1, 2, 3]
    assert manager.total_bytes == 3 * BYTES_PER_TOKEN


def test_release_counts_only_held_sequences() -> None:
    manager, evicted = make_manager()
    run_call(manager, "a", [1, 2])
    run_call(manager, "b", [1, 2])
    assert manager.release(["a", "a", "missing"]) == 1
    assert manager.session_count == 1
    assert manager.total_bytes == 2 * BYTES_PER_TOKEN
    assert evicted == []


def test_kv_nbytes_counts_keys_and_values() -> None:
    kv = DynamicCache()
    assert kv_nbytes(kv) == 0
    feed(kv, 3)
    assert kv_nbytes(kv) == 3 * BYTES_PER_TOKEN


def test_sliding_window_layers_can_crop_only_what_they_still_hold() -> None:
    config = Gemma3TextConfig(
        vocab_size=10,
        hidden_size=8,
        num_hidden_layers=LAYERS,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=HEAD_DIM,
        sliding_window=4,
    )
    kv: Any = DynamicCache(config=config)
    kv.activate_past_recording()
    feed(kv, 10)
    assert can_crop(kv, 3)  # everything fed since the last crop is still there
    kv.crop(-3)  # trims the layers back to the window
    assert kv.get_seq_length() == 7
    assert can_crop(kv, 0)
    assert not can_crop(kv, 1)
    feed(kv, 2)
    assert can_crop(kv, 2)
    assert not can_crop(kv, 3)
