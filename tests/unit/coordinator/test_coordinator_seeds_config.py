"""Seeds derived per round and purpose, and the coordinator's settings validation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from coordinator.config import CoordinatorSettings
from coordinator.seeds import SeedPurpose, generator_for, new_request_seed, round_seed


def test_round_seeds_are_deterministic_64_bit_and_distinct() -> None:
    seeds = {(r, purpose): round_seed(12345, r, purpose) for r in range(50) for purpose in SeedPurpose}
    assert seeds == {
        (r, purpose): round_seed(12345, r, purpose) for r in range(50) for purpose in SeedPurpose
    }
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= s < 1 << 64 for s in seeds.values())
    assert round_seed(12346, 0, SeedPurpose.DRAFT) != seeds[(0, SeedPurpose.DRAFT)]


def test_round_seed_rejects_out_of_range_inputs() -> None:
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        round_seed(1 << 64, 0, SeedPurpose.SCORE)
    with pytest.raises(ValueError, match="round index"):
        round_seed(1, -1, SeedPurpose.SCORE)


def test_generator_for_accepts_full_64_bit_seeds() -> None:
    a = torch.rand(3, generator=generator_for((1 << 64) - 1))
    b = torch.rand(3, generator=generator_for((1 << 64) - 1))
    assert torch.equal(a, b)
    assert 0 <= new_request_seed() < 1 << 64


def test_settings_defaults_and_bounds() -> None:
    settings = CoordinatorSettings(target_addresses=("127.0.0.1:1",))
    assert settings.drafter_address is None
    assert settings.default_lookahead_k == 5 and settings.max_lookahead_k == 16
    with pytest.raises(ValidationError, match="target_addresses"):
        CoordinatorSettings(target_addresses=())
    with pytest.raises(ValidationError, match="host:port"):
        CoordinatorSettings(target_addresses=("nohost",))
    with pytest.raises(ValidationError, match="distinct"):
        CoordinatorSettings(target_addresses=("a:1", "a:1"))
    with pytest.raises(ValidationError, match="exceeds"):
        CoordinatorSettings(target_addresses=("a:1",), default_lookahead_k=9, max_lookahead_k=8)
    with pytest.raises(ValidationError, match="sha256"):
        CoordinatorSettings(target_addresses=("a:1",), target_tokenizer_fingerprint="abc")
    with pytest.raises(ValidationError, match="no drafter_address"):
        CoordinatorSettings(target_addresses=("a:1",), drafter_tokenizer_fingerprint="a" * 64)
    with pytest.raises(ValidationError):
        settings.max_support = 3  # type: ignore[misc]


def test_settings_normalise_fingerprints() -> None:
    settings = CoordinatorSettings(target_addresses=("a:1",), target_tokenizer_fingerprint="AB" * 32)
    assert settings.target_tokenizer_fingerprint == "ab" * 32
