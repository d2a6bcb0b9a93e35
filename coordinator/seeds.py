"""Seeds: one per request (the caller's or a fresh random one) and one per round and purpose derived from it.

Every random draw of a request comes from these seeds, and the draws of different rounds and purposes are
independent of each other. Draws are keyed by round, so the same request seed reproduces a sampled output
only when the rounds fall the same way: under a deterministic lookahead (static, confidence), not under
``auto``, whose round boundaries follow measured timings.
"""

from __future__ import annotations

import enum
import hashlib
import secrets

import torch

SEED_BITS = 64


class SeedPurpose(enum.Enum):
    """What a derived seed drives."""

    DRAFT = "draft"  # the drafter's draws in one Draft call
    SCORE = "score"  # the target's draws (target samples, recovered tokens) in one Score call
    ACCEPT = "accept"  # the coordinator's acceptance uniforms


def new_request_seed() -> int:
    """A fresh random 64-bit seed for a request that set none."""
    return secrets.randbits(SEED_BITS)


def round_seed(request_seed: int, round_index: int, purpose: SeedPurpose) -> int:
    """The 64-bit seed of one purpose in one round: blake2b of (request seed, round, purpose)."""
    if not 0 <= request_seed < 1 << SEED_BITS:
        raise ValueError(f"request seed must be an unsigned 64-bit integer, got {request_seed}")
    if round_index < 0:
        raise ValueError(f"round index must be >= 0, got {round_index}")
    material = b"%d/%d/%s" % (request_seed, round_index, purpose.value.encode())
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "little")


def generator_for(seed: int) -> torch.Generator:
    """A CPU generator seeded with a 64-bit seed."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
